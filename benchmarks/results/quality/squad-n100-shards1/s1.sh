#!/bin/bash
# One H200: the N = 100 SQuAD stream with shards of one document (stemmed routing), ingested
# by 6 processes sharing the card, then every question asked of the memory.
source .gpu/b/setup.sh
R=/root/res; mkdir -p $R/logs $R/s1; T0=$(date +%s)
cd benchmarks
C='{"sharding":{"documents_per_shard":1}}'
timeout 430 python3 -m torch.distributed.run --standalone --nproc-per-node 6 parallel_ingest.py \
  --data ../.gpu/b/squad-dev.jsonl --passages 100 --config "$C" --memory $R/m100 --out $R/s1/ingest-6.json > $R/logs/ingest.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/s1/ingest-6.json
W=$(( 590 - ($(date +%s) - T0) ))
timeout $W python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0 --n 100 --modes stream \
  --config "$C" --stream-memory $R/m100 --checkpoints 100 --out $R/s1/stream > $R/logs/stream.log 2>&1
echo "stream $(( $(date +%s) - T0 )) s"
grep "memory/stream" $R/s1/stream/quality.md | head -2
for f in $R/logs/*.log; do echo "== $f"; grep -E "Traceback|Error" $f | head -3 | cut -c1-300; tail -n 2 $f | cut -c1-200; done
cd /root/res && tar czf $OUT/s1.tgz s1 logs

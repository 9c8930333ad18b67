#!/bin/bash
# One GPU: N = 100 ingested by one process, fresh shards consolidated 32 at a time (the
# default on CUDA), then every question asked of that memory.
source .gpu/b/setup.sh
R=/root/res; rm -rf $R; mkdir -p $R/logs $R/p2; T0=$(date +%s)
cd benchmarks
C='{"sharding":{"documents_per_shard":1}}'
timeout 200 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages 100 --config "$C" --memory $R/m100 --out $R/p2/ingest-1.json > $R/logs/ingest.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/p2/ingest-1.json; grep "documents together" $R/logs/ingest.log | cut -c1-250
W=$(( 315 - ($(date +%s) - T0) ))
timeout $W python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0 --n 100 --modes stream \
  --config "$C" --stream-memory $R/m100 --checkpoints 100 --out $R/p2/stream > $R/logs/stream.log 2>&1
echo "stream $(( $(date +%s) - T0 )) s"
grep "memory/stream" $R/p2/stream/quality.md | head -2
for f in $R/logs/*.log; do echo "== $f"; grep -E "Traceback|Error" $f | head -3 | cut -c1-300; tail -n 2 $f | cut -c1-200; done
cd /root/res && tar czf $OUT/p2.tgz p2 logs

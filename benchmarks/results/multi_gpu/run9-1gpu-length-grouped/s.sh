#!/bin/bash
# One GPU: N = 100 ingested by one process, 32 shards at a time, with length-grouped batches;
# then every question asked of that memory.
source .gpu/b/setup.sh > /dev/null 2>&1
R=/root/res; rm -rf $R; mkdir -p $R/logs $R/p6; T0=$(date +%s)
cd benchmarks
C='{"sharding":{"documents_per_shard":1},"consolidation":{"length_grouped_batches":true}}'
timeout 300 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages 100 --config "$C" --memory $R/m100 --out $R/p6/ingest-1.json > $R/logs/ingest.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/p6/ingest-1.json; grep "documents together" $R/logs/ingest.log | sed 's/.*INFO:parametric_memory[.a-z_]*://'
tr '\r' '\n' < $R/logs/ingest.log | grep consolidating | tail -1; grep Error $R/logs/ingest.log | head -3 | cut -c1-300
W=$(( 570 - ($(date +%s) - T0) ))
timeout $W python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0 --n 100 --modes stream \
  --config "$C" --stream-memory $R/m100 --checkpoints 100 --out $R/p6/stream > $R/logs/stream.log 2>&1
echo "stream $(( $(date +%s) - T0 )) s"
grep "memory/stream" $R/p6/stream/quality.md | head -1
grep "documents together" $R/logs/ingest.log | sed 's/.*INFO:parametric_memory[.a-z_]*://' > $R/p6/transformations.log
cd /root/res && tar czf $OUT/p6.tgz p6 logs

#!/bin/bash
# One H200: the N = 10 SQuAD stream into a single adapter (documents_per_shard null, replay 8),
# the baseline row of issue 4, then every question asked.
source .gpu/b/setup.sh
R=/root/res; mkdir -p $R/logs $R/single; T0=$(date +%s)
cd benchmarks
W=$(( 250 - ($(date +%s) - T0) ))
timeout $W python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0 --n 10 --modes stream \
  --config '{"sharding":{"documents_per_shard":null}}' --stream-memory $R/m10 --checkpoints 10 --out $R/single/stream > $R/logs/single.log 2>&1
echo "single $(( $(date +%s) - T0 )) s"
grep "memory/stream" $R/single/stream/quality.md | head -1
grep -o '"seconds": [0-9.]*' $R/m10.progress.json | tr '\n' ' '
tail -n 2 $R/logs/single.log | cut -c1-200
cp $R/m10.progress.json $R/single/ 2>/dev/null
cd /root/res && tar czf $OUT/s3.tgz single logs

#!/bin/bash
source .gpu/b/setup.sh
timeout 90 python3 -m pytest -q -x -p no:cacheprovider tests/test_parallel_shards.py tests/test_teacher_targets.py -k cuda 2>&1 | tail -2
cd benchmarks
timeout 120 python3 ../.gpu/b/prof3.py ../.gpu/b/squad-dev.jsonl 2>&1 | grep -v Warning | cut -c1-200 | tee $OUT/prof3.txt | grep -v "^\s*$" | grep -v "^-" | tail -34 | cut -c1-72,150-200
R=/root/res; rm -rf $R; mkdir -p $R/logs $R/p3
for W in 32 128; do
  T0=$(date +%s)
  C="{\"sharding\":{\"documents_per_shard\":1,\"shards_in_parallel\":$W}}"
  timeout 150 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
    --data ../.gpu/b/squad-dev.jsonl --passages 100 --config "$C" --memory $R/m$W --out $R/p3/ingest-w$W.json > $R/logs/ingest-w$W.log 2>&1
  echo "width $W: ingest $(( $(date +%s) - T0 )) s"; grep -E '"seconds"|peak' $R/p3/ingest-w$W.json; grep "documents together" $R/logs/ingest-w$W.log | cut -c64-250
done
T0=$(date +%s)
timeout 200 python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0 --n 100 --modes stream \
  --config "$C" --stream-memory $R/m128 --checkpoints 100 --out $R/p3/stream > $R/logs/stream.log 2>&1
echo "stream $(( $(date +%s) - T0 )) s"; grep "memory/stream" $R/p3/stream/quality.md | head -1
for f in $R/logs/*.log; do grep -E "Traceback|Error" $f | head -3 | cut -c1-300; done
cd /root/res && tar czf $OUT/p3.tgz p3 logs

#!/bin/bash
# 4-GPU host. (1) CUDA tests. (2) 16 SQuAD passages (4 shards) by parallel_ingest.py: one
# process twice (the run-to-run noise) and two processes side by side on separate GPUs, then
# four. (3) The N=100 stream by 8 processes (2 per GPU). (4) Every memory asked its questions
# (quality.py stream mode), one per GPU. (5) The 16-passage memories compared shard by shard.
source .gpu/b/setup.sh
R=/root/res; mkdir -p $R/logs $R/scale $R/n100; T0=$(date +%s)
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_consolidate.py tests/test_fast_generation.py tests/test_distributed.py > $R/logs/pytest.log 2>&1
tail -n 3 $R/logs/pytest.log; echo "tests $(( $(date +%s) - T0 )) s"
cd benchmarks
P="python3 -m torch.distributed.run --standalone"
A="parallel_ingest.py --data ../.gpu/b/squad-dev.jsonl --passages 16"
CUDA_VISIBLE_DEVICES=0 timeout 200 $P --nproc-per-node 1 $A --memory $R/m1a --out $R/scale/ingest-1a.json > $R/logs/s1a.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout 200 $P --nproc-per-node 1 $A --memory $R/m1b --out $R/scale/ingest-1b.json > $R/logs/s1b.log 2>&1 &
CUDA_VISIBLE_DEVICES=2,3 timeout 200 $P --nproc-per-node 2 $A --memory $R/m2 --out $R/scale/ingest-2.json > $R/logs/s2.log 2>&1 &
wait
timeout 100 $P --nproc-per-node 4 $A --memory $R/m4 --out $R/scale/ingest-4.json > $R/logs/s4.log 2>&1
echo "scaling done $(( $(date +%s) - T0 )) s"
W=$(( 430 - ($(date +%s) - T0) ))
timeout $W $P --nproc-per-node 8 parallel_ingest.py --data ../.gpu/b/squad-dev.jsonl --passages 100 \
  --memory $R/m100 --out $R/n100/ingest-8.json > $R/logs/n100-ingest.log 2>&1
echo "n100 ingest done $(( $(date +%s) - T0 )) s"
W=$(( 575 - ($(date +%s) - T0) ))
Q="python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0 --modes stream"
CUDA_VISIBLE_DEVICES=0 timeout $W $Q --n 100 --stream-memory $R/m100 --checkpoints 100 --out $R/n100/stream > $R/logs/q100.log 2>&1 &
g=1; for m in 1a 1b 2 4; do
  CUDA_VISIBLE_DEVICES=$g timeout $W $Q --n 16 --stream-memory $R/m$m --checkpoints 16 --out $R/scale/q-$m > $R/logs/q-$m.log 2>&1 &
  g=$(( g % 3 + 1 ))
done
python3 compare_memories.py $R/m1a $R/m1b $R/m2 $R/m4 > $R/scale/compare.json 2> $R/logs/compare.log
wait
cat $R/scale/ingest-*.json $R/n100/ingest-8.json | grep -E "processes|seconds\""
python3 -c "
import json; rows = json.load(open('$R/scale/compare.json'))
for r in rows: print(r['other'], [(s['same_documents'], s['transfer_items_shared'], s['weight_gap']) for s in r['shards']])"
grep -h "memory/stream" $R/scale/q-*/quality.md $R/n100/stream/quality.md | cut -c1-120
for f in $R/logs/*.log; do echo "== $f"; grep -E "Traceback|Error" $f | head -3; tail -n 1 $f | cut -c1-160; done
cd /root/res && tar czf $OUT/all.tgz scale n100 logs

#!/bin/bash
# 4-GPU host. (1) 48 SQuAD passages (12 shards) by parallel_ingest.py with 1 process (GPU 0)
# and 2 processes (GPUs 1-2) side by side, while GPU 3 runs the missing N=100 memory/doc parts
# (quality.py --part 6..11/12); then 4 processes alone. (2) The 48-passage memories asked their
# questions and compared shard by shard.
source .gpu/b/setup.sh
R=/root/res; mkdir -p $R/logs $R/scale48 $R/q100; T0=$(date +%s)
cd benchmarks
P="python3 -m torch.distributed.run --standalone"
A="parallel_ingest.py --data ../.gpu/b/squad-dev.jsonl --passages 48"
Q="python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0"
CUDA_VISIBLE_DEVICES=0 timeout 380 $P --nproc-per-node 1 $A --memory $R/m1 --out $R/scale48/ingest-1.json > $R/logs/s1.log 2>&1 &
CUDA_VISIBLE_DEVICES=1,2 timeout 380 $P --nproc-per-node 2 $A --memory $R/m2 --out $R/scale48/ingest-2.json > $R/logs/s2.log 2>&1 &
for i in 6 7 8 9 10 11; do
  CUDA_VISIBLE_DEVICES=3 timeout 380 $Q --n 100 --modes doc --part $i/12 --out $R/q100/doc$i > $R/logs/q100doc$i.log 2>&1 &
done
wait
echo "phase A $(( $(date +%s) - T0 )) s"
W=$(( 520 - ($(date +%s) - T0) ))
timeout $W $P --nproc-per-node 4 $A --memory $R/m4 --out $R/scale48/ingest-4.json > $R/logs/s4.log 2>&1
echo "phase B $(( $(date +%s) - T0 )) s"
W=$(( 585 - ($(date +%s) - T0) ))
g=0; for m in 1 2 4; do
  CUDA_VISIBLE_DEVICES=$g timeout $W $Q --modes stream --n 48 --stream-memory $R/m$m --checkpoints 48 --out $R/scale48/q-$m > $R/logs/q-$m.log 2>&1 &
  g=$(( g + 1 ))
done
python3 compare_memories.py $R/m1 $R/m2 $R/m4 > $R/scale48/compare.json 2> $R/logs/compare.log
wait
grep -h -E "processes|\"seconds" $R/scale48/ingest-*.json
python3 -c "
import json; rows = json.load(open('$R/scale48/compare.json'))
for r in rows: print(r['other'], [(s['transfer_items_shared'], s['weight_gap']) for s in r['shards']])"
grep -h "memory/stream\|memory/doc" $R/scale48/q-*/quality.md $R/q100/doc*/quality.md | cut -c1-120
for f in $R/logs/*.log; do echo "== $f"; grep -E "Traceback|Error" $f | head -3; tail -n 1 $f | cut -c1-160; done
cd /root/res && tar czf $OUT/next.tgz scale48 q100 logs

#!/bin/bash
# 2 GPUs of one host, today's default (a shard per document): 48 SQuAD passages ingested by
# 1 process (GPU 0), then by 2 processes (GPUs 0-1), one after the other; the two memories
# compared shard by shard and asked their questions.
source .gpu/b/setup.sh
R=/root/res; mkdir -p $R/logs $R/scale48; T0=$(date +%s)
cd benchmarks
P="python3 -m torch.distributed.run --standalone"
A="parallel_ingest.py --data ../.gpu/b/squad-dev.jsonl --passages 48"
Q="python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0"
CUDA_VISIBLE_DEVICES=0 timeout 280 $P --nproc-per-node 1 $A --memory $R/m1 --out $R/scale48/ingest-1.json > $R/logs/s1.log 2>&1
echo "1 process $(( $(date +%s) - T0 )) s"
timeout 200 $P --nproc-per-node 2 $A --memory $R/m2 --out $R/scale48/ingest-2.json > $R/logs/s2.log 2>&1
echo "2 processes $(( $(date +%s) - T0 )) s"
W=$(( 585 - ($(date +%s) - T0) ))
g=0; for m in 1 2; do
  CUDA_VISIBLE_DEVICES=$g timeout $W $Q --modes stream --n 48 --stream-memory $R/m$m --checkpoints 48 --out $R/scale48/q-$m > $R/logs/q-$m.log 2>&1 &
  g=$(( g + 1 ))
done
python3 compare_memories.py $R/m1 $R/m2 > $R/scale48/compare.json 2> $R/logs/compare.log
wait
grep -h -E "processes|\"seconds|peak" $R/scale48/ingest-*.json
grep -h "memory/stream" $R/scale48/q-*/quality.md | cut -c1-100
python3 -c "
import json; rows = json.load(open('$R/scale48/compare.json'))
for r in rows: s = r['shards']; print(r['other'], len(s), 'shards; items shared', min(x['transfer_items_shared'] for x in s), '-', max(x['transfer_items_shared'] for x in s), '; weight gap', min(x['weight_gap'] for x in s), '-', max(x['weight_gap'] for x in s))"
for f in $R/logs/*.log; do echo "== $f"; grep -E "Traceback|Error" $f | head -3 | cut -c1-300; tail -n 1 $f | cut -c1-160; done
cd /root/res && tar czf $OUT/s2.tgz scale48 logs

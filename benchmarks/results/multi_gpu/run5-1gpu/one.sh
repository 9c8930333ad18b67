#!/bin/bash
# One GPU: CUDA tests with the shared graph pool; 16 passages by one process (time, peak GPU
# memory); then the missing N=100 memory/doc parts (quality.py --part 6..11/12) side by side.
source .gpu/b/setup.sh
R=/root/res; mkdir -p $R/logs $R/one $R/q100; T0=$(date +%s)
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_consolidate.py tests/test_fast_generation.py tests/test_distributed.py > $R/logs/pytest.log 2>&1
tail -n 2 $R/logs/pytest.log; echo "tests $(( $(date +%s) - T0 )) s"
cd benchmarks
timeout 200 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --data ../.gpu/b/squad-dev.jsonl \
  --passages 16 --memory $R/m1 --out $R/one/ingest-1.json > $R/logs/s1.log 2>&1
cat $R/one/ingest-1.json; echo "ingest $(( $(date +%s) - T0 )) s"
W=$(( 585 - ($(date +%s) - T0) ))
Q="python3 quality.py --data ../.gpu/b/squad-dev.jsonl --questions-per-doc 5 --seed 0"
for i in 6 7 8 9 10 11; do
  timeout $W $Q --n 100 --modes doc --part $i/12 --out $R/q100/doc$i > $R/logs/q100doc$i.log 2>&1 &
done
sleep 60; nvidia-smi --query-gpu=memory.used --format=csv
wait
grep -h "memory/doc" $R/q100/doc*/quality.md | cut -c1-120
for f in $R/logs/*.log; do echo "== $f"; grep -E "Traceback|Error" $f | head -2 | cut -c1-300; tail -n 1 $f | cut -c1-160; done
cd /root/res && tar czf $OUT/one.tgz one q100 logs

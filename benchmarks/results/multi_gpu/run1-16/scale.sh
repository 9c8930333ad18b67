#!/bin/bash
# Issue 5 on a 4-GPU host: CUDA tests, then quality.py's first 16 SQuAD passages (4 shards)
# ingested by benchmarks/parallel_ingest.py with 1, 2 and 4 processes (one GPU each).
source .gpu/b/setup.sh
R=/root/res; mkdir -p $R/logs $R/scale; T0=$(date +%s)
timeout 170 python3 -m pytest -q -x -p no:cacheprovider tests/test_consolidate.py tests/test_fast_generation.py tests/test_distributed.py > $R/logs/pytest.log 2>&1
tail -n 3 $R/logs/pytest.log; echo "tests $(( $(date +%s) - T0 )) s"
cd benchmarks
P="python3 -m torch.distributed.run --standalone"
A="parallel_ingest.py --data ../.gpu/b/squad-dev.jsonl --passages 16"
W=$(( 540 - ($(date +%s) - T0) ))
# 1 and 2 processes side by side on separate GPUs, then 4 alone.
CUDA_VISIBLE_DEVICES=3 timeout $W $P --nproc-per-node 1 $A --memory $R/m1 --out $R/scale/ingest-1.json > $R/logs/s1.log 2>&1 &
CUDA_VISIBLE_DEVICES=0,1 timeout $W $P --nproc-per-node 2 $A --memory $R/m2 --out $R/scale/ingest-2.json > $R/logs/s2.log 2>&1 &
wait
W=$(( 580 - ($(date +%s) - T0) ))
timeout $W $P --nproc-per-node 4 $A --memory $R/m4 --out $R/scale/ingest-4.json > $R/logs/s4.log 2>&1
cat $R/scale/*.json
python3 - <<'PY' > $R/scale/same-memory.txt 2>&1
# Same memory from 1, 2 and 4 processes? Shard of every document, and the largest weight gaps.
from safetensors.torch import load_file
from parametric_memory import store
memories = {n: store.read_manifest(__import__("pathlib").Path(f"/root/res/m{n}")) for n in (1, 2, 4)}
base = memories[1]
for n in (2, 4):
    m = memories[n]
    same = {d: r.shard for d, r in m.documents.items()} == {d: r.shard for d, r in base.documents.items()}
    worst = 0.0
    for shard in sorted({r.shard for r in base.documents.values()}):
        a = load_file(store.shard_weights(__import__("pathlib").Path("/root/res/m1"), base, shard))
        b = load_file(store.shard_weights(__import__("pathlib").Path(f"/root/res/m{n}"), m, shard))
        for k in a:
            gap = float((a[k].float() - b[k].float()).abs().max() / a[k].float().abs().max().clamp(min=1e-12))
            worst = max(worst, gap)
    print(f"{n} processes vs 1: same shard of every document: {same}; largest weight gap relative to the tensor's max: {worst:.3g}")
PY
cat $R/scale/same-memory.txt
for f in $R/logs/*.log; do echo "== $f"; grep -E "Traceback|Error" $f | head -3; tail -n 2 $f | cut -c1-200; done
cd /root/res && tar czf $OUT/scale.tgz scale logs

#!/bin/bash
# One GPU, transformers 5.24 + liger. TESTS=1: the CUDA tests of slot training first (stop
# if one fails). MODE=steps: steps.py with the code before (.gpu/b/old/src, a copy of
# 2c50de6's src), this tree, and this tree with Liger's RoPE. Otherwise: the first $1
# squad-dev passages ingested in one process (a shard per document, 128 at a time) into a
# fresh memory, with the code of $2 (new: this tree, old: .gpu/b/old/src).
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -c "import transformers; assert transformers.__version__ == '5.24.0'" 2>/dev/null || python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi -L
S=benchmarks/results/speed/2026-12-06-slot-linear
T0=$(date +%s)
if [ "$TESTS" = 1 ]; then
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_slot_linear.py tests/test_parallel_shards.py tests/test_adapter_files.py 2>&1 | tail -2 | tee $OUT/tests.txt
  echo "tests $(( $(date +%s) - T0 )) s"
  grep -q failed $OUT/tests.txt && exit 1
fi
if [ "$MODE" = steps ]; then
  for V in old new rope; do
    if [ $V = old ]; then P=$PWD/.gpu/b/old/src; R=64; else P=$PWD/src; R="64 128 256"; fi
    if [ $V = rope ]; then R=64; fi
    (cd benchmarks && ROPE=$([ $V = rope ] && echo 1 || echo 0) PYTHONPATH=$P:$PWD timeout 120 python3 ../$S/steps.py ../.gpu/b/squad-dev.jsonl $OUT/steps-$V.json $R > $OUT/steps-$V.log 2>&1)
    echo "$V: $(tail -1 $OUT/steps-$V.log | cut -c1-400)"
  done
else
  if [ "$2" = old ]; then P=$PWD/.gpu/b/old/src; else P=$PWD/src; fi
  R=/root/res; mkdir -p $R
  cd benchmarks
  PYTHONPATH=$P:$PWD timeout ${LIMIT:-540} python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
    --data ../.gpu/b/squad-dev.jsonl --passages $1 --config '{"sharding":{"documents_per_shard":1}}' --memory $R/m-$2 --out $R/ingest-$2-$1.json > $R/ingest-$2-$1.log 2>&1
  echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/ingest-$2-$1.json
  grep -E "documents together|wrote" $R/ingest-$2-$1.log | sed 's/^.*INFO:parametric_memory[.a-z_]*://' | cut -c1-200
  grep -E "Error" $R/ingest-$2-$1.log | head -3 | cut -c1-300
  cp $R/ingest-$2-$1.* $OUT/
fi
echo "all $(( $(date +%s) - T0 )) s"

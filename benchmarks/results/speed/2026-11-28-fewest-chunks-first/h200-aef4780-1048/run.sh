#!/bin/bash
# One GPU, transformers 5.24 + liger: the first $1 of the 1,048 squad-dev passages ingested by
# one process into /root/res20/m1048 (a later call on the same warm machine adds the rest).
# With TESTS=1, the CUDA tests of the code this stop and the last one changed run first.
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -c "import transformers; assert transformers.__version__ == '5.24.0'" 2>/dev/null || python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi -L
if [ "$TESTS" = 1 ]; then
  T0=$(date +%s)
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_answer_indexing.py tests/test_merged_adapter.py tests/test_adapter_files.py tests/test_fused_kernels.py tests/test_parallel_shards.py tests/test_fast_generation.py tests/test_consolidate.py tests/test_teacher_targets.py -k "cuda or fused or right or softcap or wait" 2>&1 | grep -E "passed|failed|FAILED|Error" | tail -8
  echo "tests $(( $(date +%s) - T0 )) s"
fi
R=/root/res20; mkdir -p $R/logs $R/json; T0=$(date +%s)
cd benchmarks
timeout 560 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages $1 --config '{"sharding":{"documents_per_shard":1}}' --memory $R/m1048 --out $R/json/ingest-to-$1.json > $R/logs/ingest-$1.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/json/ingest-to-$1.json
grep -E "documents together|wrote|committed" $R/logs/ingest-$1.log | sed 's/^.*INFO:parametric_memory[.a-z_]*://' | cut -c1-200
grep -E "Error" $R/logs/ingest-$1.log | head -3 | cut -c1-300
cp $R/json/* $R/logs/* $OUT/

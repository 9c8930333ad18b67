#!/bin/bash
# Session 17, last call: CUDA tests at this commit, where the syncs are, and 12 slot steps +
# teacher + NLL of 128 documents, code before this session (.gpu/old/src) against this commit.
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -c "import transformers; assert transformers.__version__ == '5.24.0'" 2>/dev/null || python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
T0=$(date +%s)
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_answer_positions.py tests/test_merged_adapter.py tests/test_adapter_files.py tests/test_fused_kernels.py tests/test_parallel_shards.py tests/test_fast_generation.py tests/test_consolidate.py tests/test_teacher_targets.py -k "cuda or fused or right or softcap or wait" 2>&1 | grep -E "passed|failed|FAILED|Error" | tail -8
echo "tests $(( $(date +%s) - T0 )) s"
timeout 40 python3 .gpu/b/syncs.py 2>&1 | grep -v Warning | tail -8
S=benchmarks/results/speed/2026-11-28-right-padding
for V in new old; do
  if [ $V = old ]; then P=$PWD/.gpu/old/src; else P=$PWD/src; fi
  (cd benchmarks && PYTHONPATH=$P:$PWD timeout 100 python3 ../$S/slot_steps.py ../.gpu/b/squad-dev.jsonl $OUT/steps-$V.json > $OUT/steps-$V.log 2>&1)
  echo "$V: $(tail -1 $OUT/steps-$V.log | cut -c1-300)"
done
echo "all $(( $(date +%s) - T0 )) s"

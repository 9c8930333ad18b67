#!/bin/bash
# One GPU, random weights: no model file needed. Carried as .gpu/s/run.sh beside the wheels
# (transformers 5.24, liger-kernel 0.8.5, pydantic & co., as .gpu/b of the slot-linear run).
# benchmarks/speed.py's elicitation section with the compiled step beside the graphed one and
# HF generate (same process, same card; $SHAPES, default smollm2-135m), then the CUDA tests of
# the decoder. MODE=1b instead: the Llama-1B-shape distillation step (speed.py's distill
# section at 32 and 128 rows, then profiled, eager and compiled: profile_1b_step.py), the
# compiled elicitation at batch 128 again, the CUDA tests of what changed.
python3 -m pip install -q --no-deps --no-index .gpu/s/*.whl 2>&1 | tail -1
nvidia-smi -L
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=16
S=benchmarks/results/speed/2026-12-06-compiled-decode
T0=$(date +%s)
if [ "$MODE" = 1b ]; then
  timeout 150 python3 benchmarks/speed.py --sections distill --shapes llama-1b --distill-batches 32,128 --out $OUT/distill 2>&1 | grep "^|"
  echo "distill $(( $(date +%s) - T0 )) s"
  timeout 100 python3 benchmarks/speed.py --sections elicit --shapes smollm2-135m --batches 128 --elicit-models plain --compiled --out $OUT/elicit-128 2>&1 | grep "^|"
  echo "elicit $(( $(date +%s) - T0 )) s"
  timeout 150 python3 $S/profile_1b_step.py 128 2>&1 | grep -v "^W1206\|^  File\|^    " | tee $OUT/profile-1b-128.txt | tail -34
  echo "profile $(( $(date +%s) - T0 )) s"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_student_lora.py tests/test_slot_linear.py tests/test_consolidate.py tests/test_fast_generation.py tests/test_fused_kernels.py -k "cuda or lora or slot or graphed or fused or compiled" 2>&1 | tail -3 | tee $OUT/tests-1b.txt
  echo "all $(( $(date +%s) - T0 )) s"
  exit
fi
timeout ${LIMIT:-330} python3 benchmarks/speed.py --sections elicit --shapes ${SHAPES:-smollm2-135m} --compiled --out $OUT/speed 2>&1 | grep -v Warning | tail -20
echo "speed $(( $(date +%s) - T0 )) s"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_fast_generation.py tests/test_fused_kernels.py 2>&1 | tail -3 | tee $OUT/tests.txt
echo "tests $(( $(date +%s) - T0 )) s"
echo "all $(( $(date +%s) - T0 )) s"

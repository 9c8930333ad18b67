#!/bin/bash
# One GPU, random weights: no model file needed. Carried as .gpu/s/run.sh beside the wheels
# (transformers 5.24, liger-kernel 0.8.5, pydantic & co., as .gpu/b of the slot-linear run).
# benchmarks/speed.py's elicitation section with the compiled step beside the graphed one and
# HF generate (same process, same card; $SHAPES, default smollm2-135m), then the CUDA tests of
# the decoder. MODE=1b instead: the Llama-1B-shape distillation step profiled, eager and
# compiled (profile_1b_step.py).
python3 -m pip install -q --no-deps --no-index .gpu/s/*.whl 2>&1 | tail -1
nvidia-smi -L
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=16
S=benchmarks/results/speed/2026-12-06-compiled-decode
T0=$(date +%s)
if [ "$MODE" = 1b ]; then
  timeout 500 python3 $S/profile_1b_step.py 128 2>&1 | grep -v Warn | tee $OUT/profile-1b-128.txt | tail -40
  exit
fi
timeout ${LIMIT:-330} python3 benchmarks/speed.py --sections elicit --shapes ${SHAPES:-smollm2-135m} --compiled --out $OUT/speed 2>&1 | grep -v Warning | tail -20
echo "speed $(( $(date +%s) - T0 )) s"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_fast_generation.py tests/test_fused_kernels.py 2>&1 | tail -3 | tee $OUT/tests.txt
echo "tests $(( $(date +%s) - T0 )) s"
echo "all $(( $(date +%s) - T0 )) s"

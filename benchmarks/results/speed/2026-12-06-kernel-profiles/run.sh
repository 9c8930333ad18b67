#!/bin/bash
# One GPU, random weights: no model file needed. Carried as .gpu/s/run.sh beside the wheels
# (transformers 5.24, liger-kernel 0.8.5, pydantic & co.; see ../2026-12-06-compiled-decode).
# The CUDA tests of what changed ($TESTS), profile_steps.py ($SECTIONS), then speed.py's
# official rows ($SPEED: "elicit,distill" by default, "none" skips them). Each part writes under $OUT as it finishes.
python3 -m pip install -q --no-deps --no-index .gpu/s/*.whl 2>&1 | tail -1
nvidia-smi -L
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
S=benchmarks/results/speed/2026-12-06-kernel-profiles
T0=$(date +%s)
timeout ${TEST_LIMIT:-150} python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_slot_linear.py tests/test_student_lora.py} 2>&1 | tail -3 | tee $OUT/tests.txt
echo "tests $(( $(date +%s) - T0 )) s"
timeout ${LIMIT:-300} python3 $S/profile_steps.py ${SECTIONS:-train,decode} 2>&1 | grep -v "Warning\|warn\|could not be imported" | tee $OUT/profile.txt | grep -v "^  "
echo "profile $(( $(date +%s) - T0 )) s"
SPEED=${SPEED:-elicit,distill}
if [[ $SPEED == *elicit* ]]; then
  timeout 150 python3 benchmarks/speed.py --sections elicit --shapes smollm2-135m --elicit-models plain --out $OUT/elicit 2>&1 | grep -v "Warning\|warn\|could not be imported" | tail -4
  echo "elicit $(( $(date +%s) - T0 )) s"
fi
if [[ $SPEED == *distill* ]]; then
  timeout 150 python3 benchmarks/speed.py --sections distill --shapes llama-1b --distill-batches 32,128 --out $OUT/distill 2>&1 | grep -v "Warning\|warn\|could not be imported" | tail -4
  echo "distill $(( $(date +%s) - T0 )) s"
fi
echo "all $(( $(date +%s) - T0 )) s"

#!/bin/bash
# One H100, transformers 5.24 + liger installed over the image (torch 2.11, peft 0.21), code at
# b412ce0 with the first version of compile_probe.py (the same steps; printing tidied since).
python3 -m pip install -q --no-deps .gpu/p/*.whl 2>&1 | tail -1
export PYTHONPATH=$PWD/src PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
cd .gpu/p
LIGER=1 MODE=eager PROFILE=1 timeout 120 python3 compile_probe.py smol 8 2>&1 | grep -v -i warn | tail -22
T=$(date +%s); PROFILE=1 MODE=compiled timeout 330 python3 compile_probe.py smol 8 2>&1 | grep -v -i warn | tail -22
echo "compiled cold $(( $(date +%s) - T )) s"
T=$(date +%s); MODE=compiled timeout 120 python3 compile_probe.py smol 8 2>&1 | grep -v -i warn | tail -3
echo "compiled warm $(( $(date +%s) - T )) s"

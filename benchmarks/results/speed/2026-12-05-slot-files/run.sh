#!/bin/bash
# One GPU, transformers 5.24 + liger. With TESTS=1: the adapter-file tests (CUDA included)
# and slot_files.py on the GPU first. Then the first $2 squad-dev passages ingested by $1
# processes sharing the one GPU (torchrun, a shard per document, $WIDTH (default 128) at a
# time each) into a
# fresh memory /root/res/m$1.
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -c "import transformers; assert transformers.__version__ == '5.24.0'" 2>/dev/null || python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi -L
R=/root/res; mkdir -p $R
if [ "$TESTS" = 1 ]; then
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_adapter_files.py 2>&1 | tail -1
  SCRATCH=/root timeout 200 python3 benchmarks/results/shard_writes/slot_files.py cuda 2>&1 | grep -E "shards on|  (save|write)" | tee $OUT/slot-files-cuda.txt
fi
T0=$(date +%s)
cd benchmarks
timeout ${LIMIT:-330} python3 -m torch.distributed.run --standalone --nproc-per-node $1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages $2 --config "{\"sharding\":{\"documents_per_shard\":1,\"shards_in_parallel\":${WIDTH:-null}}}" --memory $R/m$1 --out $R/ingest-p$1-$2.json > $R/ingest-p$1-$2.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/ingest-p$1-$2.json
grep -E "documents together|wrote|committed" $R/ingest-p$1-$2.log | sed 's/^.*INFO:parametric_memory[.a-z_]*://' | cut -c1-200
grep -E "Error" $R/ingest-p$1-$2.log | head -3 | cut -c1-300
cp $R/ingest-p$1-$2.* $OUT/

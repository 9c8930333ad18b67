#!/bin/bash
# transformers 5.24 + liger; CUDA tests; speed.py (135M elicit/query, 1B distill sweep); N=100 ingest.
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -m pip list 2>/dev/null | grep -iE "^(transformers|tokenizers|safetensors|huggingface.hub|peft) "
python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
python3 -c "import transformers, peft, transformers.models.llama.modeling_llama" 2>/dev/null || python3 -m pip install -q --no-deps /root/c/*.whl 2>&1 | tail -1
python3 -c "import transformers, peft; print('transformers', transformers.__version__, 'peft', peft.__version__)"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_fused_kernels.py tests/test_fast_generation.py tests/test_teacher_targets.py tests/test_parallel_shards.py -k "cuda or fused" 2>&1 | tail -3
timeout 200 python3 benchmarks/speed.py --shapes smollm2-135m --sections elicit,query --out $OUT/speed135 > $OUT/speed135.log 2>&1; tail -22 $OUT/speed135.log | grep "|"
timeout 150 python3 benchmarks/speed.py --shapes llama-1b --sections distill --distill-batches 32,128,256 --out $OUT/speed1b > $OUT/speed1b.log 2>&1; grep "|" $OUT/speed1b.log | tail -12
R=/root/res; rm -rf $R; mkdir -p $R; cd benchmarks; T0=$(date +%s)
timeout 150 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages 100 --config '{"sharding":{"documents_per_shard":1}}' --memory $R/m100 --out $OUT/ingest100.json > $OUT/ingest100.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; grep -E '"seconds"|peak' $OUT/ingest100.json; grep "documents together" $OUT/ingest100.log | cut -c60-250; grep Error $OUT/ingest100.log | head -3

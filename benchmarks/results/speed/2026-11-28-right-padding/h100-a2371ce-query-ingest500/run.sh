#!/bin/bash
# Session 17, call 3b: the query three ways (old code: merged with a host copy; new: merged with
# a device copy; new with the LoRA branch), slot steps with log_softmax(dtype=), then 500 passages.
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -c "import transformers; assert transformers.__version__ == '5.24.0'" 2>/dev/null || python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
T0=$(date +%s)
for V in old-host new-device new-branch; do
  P=$PWD/src; M=1
  [ $V = old-host ] && P=$PWD/.gpu/old/src
  [ $V = new-branch ] && M=0
  PYTHONPATH=$P:$PWD/benchmarks PARAMETRIC_MEMORY_MERGED_ANSWERS=$M timeout 100 python3 benchmarks/speed.py --shapes smollm2-135m --sections query --out $OUT/query-$V > $OUT/query-$V.log 2>&1
  echo "$V: $(grep '| adapter' $OUT/query-$V.log | tail -1)"
done
grep '| no adapter' $OUT/query-new-device.log | tail -1
echo "query $(( $(date +%s) - T0 )) s"
S=benchmarks/results/speed/2026-11-28-right-padding
(cd benchmarks && timeout 150 python3 ../$S/slot_steps.py ../.gpu/b/squad-dev.jsonl $OUT/steps-new2.json > $OUT/steps-new2.log 2>&1)
echo "new2: $(tail -1 $OUT/steps-new2.log | cut -c1-400)"
echo "steps $(( $(date +%s) - T0 )) s"
R=/root/res18; mkdir -p $R/logs $R/p; cd benchmarks
timeout $(( 590 - $(date +%s) + T0 )) python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages 500 --config '{"sharding":{"documents_per_shard":1}}' --memory $R/m1048 --out $R/p/ingest-to-500.json > $R/logs/ingest-500.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; grep seconds $R/p/ingest-to-500.json
cp $R/p/*.json $OUT/; grep "documents together" $R/logs/ingest-500.log > $OUT/transformations-to-500.log; grep -E "Error" $R/logs/ingest-500.log | head -3 | cut -c1-300

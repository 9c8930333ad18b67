#!/bin/bash
# Session 17, call 5: the same card, code before (.gpu/old/src, 0a2d30d) against this code: 12 slot
# steps of 128 documents, then 100 passages ingested end to end, alternating.
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -c "import transformers; assert transformers.__version__ == '5.24.0'" 2>/dev/null || python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
T0=$(date +%s); S=benchmarks/results/speed/2026-11-28-right-padding
for V in new old; do
  if [ $V = old ]; then P=$PWD/.gpu/old/src; else P=$PWD/src; fi
  (cd benchmarks && PYTHONPATH=$P:$PWD timeout 130 python3 ../$S/slot_steps.py ../.gpu/b/squad-dev.jsonl $OUT/steps-$V.json > $OUT/steps-$V.log 2>&1)
  echo "$V: $(tail -1 $OUT/steps-$V.log | cut -c1-300)"
done
echo "steps $(( $(date +%s) - T0 )) s"
C='{"sharding":{"documents_per_shard":1}}'
for V in old new; do
  if [ $V = old ]; then P=$PWD/.gpu/old/src; else P=$PWD/src; fi
  rm -rf /root/r100$V
  (cd benchmarks && PYTHONPATH=$P:$PWD timeout 110 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose --data ../.gpu/b/squad-dev.jsonl --passages 100 --config "$C" --memory /root/r100$V --out $OUT/ingest100-$V.json > $OUT/ingest100-$V.log 2>&1)
  echo "$V: $(grep '"seconds"' $OUT/ingest100-$V.json) $(grep 'documents together' $OUT/ingest100-$V.log | cut -c150-300)"
done
echo "all $(( $(date +%s) - T0 )) s"

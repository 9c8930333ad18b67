#!/bin/bash
source .gpu/b/setup.sh > /dev/null 2>&1
R=/root/res4; rm -rf $R; mkdir -p $R; cd benchmarks
for V in "64 default" "128 expandable_segments:True"; do set -- $V
  C="{\"sharding\":{\"documents_per_shard\":1,\"shards_in_parallel\":$1}}"
  if [ $2 = default ]; then unset PYTORCH_CUDA_ALLOC_CONF; else export PYTORCH_CUDA_ALLOC_CONF=$2; fi
  timeout 140 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py \
    --data ../.gpu/b/squad-dev.jsonl --passages 100 --config "$C" --memory $R/m$1 --out $R/w$1.json > $R/w$1.log 2>&1
  echo "width $1 alloc $2"; grep -E '"seconds"|peak' $R/w$1.json; grep -E "Error" $R/w$1.log | head -2
done
cp $R/*.json $OUT/

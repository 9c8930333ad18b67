#!/bin/bash
# One GPU, transformers 5.24 + liger: the first $1 of the 1,048 squad-dev passages ingested by
# one process into /root/res8/m1048, 128 fresh shards at a time (a later call adds the rest).
source .gpu/b/setup.sh > /dev/null 2>&1
python3 -c "import transformers; assert transformers.__version__ == '5.24.0'" 2>/dev/null || python3 -m pip install -q --no-deps .gpu/b/liger_kernel-*.whl /root/c/transformers-*.whl 2>&1 | tail -1
python3 -c "import transformers, liger_kernel; print('transformers', transformers.__version__)"
R=/root/res8; mkdir -p $R/logs $R/p8; T0=$(date +%s)
cd benchmarks
timeout 580 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages $1 --config '{"sharding":{"documents_per_shard":1}}' --memory $R/m1048 --out $R/p8/ingest-to-$1.json > $R/logs/ingest-$1.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/p8/ingest-to-$1.json; grep "documents together" $R/logs/ingest-$1.log | cut -c64-250 | head -30
tr '\r' '\n' < $R/logs/ingest-$1.log | grep consolidating | tail -1; grep -E "Error" $R/logs/ingest-$1.log | head -3 | cut -c1-300
cd /root/res8 && tar czf $OUT/p8.tgz p8 logs

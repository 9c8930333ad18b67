#!/bin/bash
# One GPU: the first $1 of the 1,048 squad-dev passages (quality.py's seed-0 order) ingested
# by one process into /root/res/m1048, fresh shards $2 at a time (a later call with 1048 adds the rest).
source .gpu/b/setup.sh > /dev/null 2>&1
R=/root/res; mkdir -p $R/logs $R/p7; T0=$(date +%s)
cd benchmarks
C="{\"sharding\":{\"documents_per_shard\":1,\"shards_in_parallel\":$2}}"
timeout 560 python3 -m torch.distributed.run --standalone --nproc-per-node 1 parallel_ingest.py --verbose \
  --data ../.gpu/b/squad-dev.jsonl --passages $1 --config "$C" --memory $R/m1048 --out $R/p7/ingest-to-$1.json > $R/logs/ingest-$1.log 2>&1
echo "ingest $(( $(date +%s) - T0 )) s"; cat $R/p7/ingest-to-$1.json; grep "documents together" $R/logs/ingest-$1.log | cut -c64-250 | head -30
tr '\r' '\n' < $R/logs/ingest-$1.log | grep consolidating | tail -1; grep -E "Error" $R/logs/ingest-$1.log | head -3 | cut -c1-300
cd /root/res && tar czf $OUT/p7.tgz p7 logs

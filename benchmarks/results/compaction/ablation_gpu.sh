#!/bin/bash
# Issue 27's ablation on one GPU after run_gpu.sh setup-a/setup-b: squad-dev N=100 (all 515
# questions), level 0 only, one variant of MemoryConfig per row, every variant a process of
# its own, all at once on the one GPU (a small model's steps are bound by the host, which has
# CPUs to spare; a group that runs out of GPU memory is retried in halves), so the rows share
# the machine alike and their ingest seconds compare only with each other:
#   bash benchmarks/results/compaction/ablation_gpu.sh default wh_questions items64 ...
# Each variant is ingested and answered (top 1) by run_gpu.sh under LABEL=abl-<variant>;
# the default row also answers with the passage in the prompt, BM25 top 3 and the question alone.
# DATA=$PWD/benchmarks/data/invented_facts.jsonl N=20 TAG=inv runs the same variants on the
# invented facts (labels inv-<variant>), beside a squad-dev run in the same call.
set -u
here=$(dirname "$0")
kinds='"entity","cloze","continuation","recitation","questions","summary"'
export PARAMETRIC_MEMORY_DEFAULT_GGUF=/root/m/model.gguf PARAMETRIC_MEMORY_CACHE=/root/pmcache
PYTHONPATH=$PWD/src python3 -c "from parametric_memory import MemoryConfig
from parametric_memory.engine.models import load_model
load_model(MemoryConfig())" 2>&1 | tail -1  # convert the model once, before the processes share it
for variant in "$@"; do
  case $variant in
    default) config='{}' ;;
    reverse|implications|structure|paraphrase|wh_questions)
      config="{\"elicitation\":{\"prompt_kinds\":[$kinds,\"$variant\"]}}" ;;
    no-recitation) config='{"elicitation":{"prompt_kinds":["entity","cloze","continuation","questions","summary"]}}' ;;
    no-entity) config='{"elicitation":{"prompt_kinds":["cloze","continuation","recitation","questions","summary"]}}' ;;
    items64) config='{"elicitation":{"items_per_chunk":64}}' ;;
    wh-items64) config="{\"elicitation\":{\"items_per_chunk\":64,\"prompt_kinds\":[$kinds,\"wh_questions\"]}}" ;;
    epochs16) config='{"consolidation":{"epochs":16}}' ;;
    top-k-256) config='{"consolidation":{"teacher_top_k":256}}' ;;
    *) echo "unknown variant $variant"; continue ;;
  esac
  # every variant trains WIDTH documents at a time, so that all fit the card together
  width="\"sharding\":{\"shards_in_parallel\":${WIDTH:-32}}"
  if [ "$config" = '{}' ]; then config="{$width}"; else config="{$width,${config#\{}"; fi
  phases=ingest,level0; [ "$variant" = default ] && phases=ingest,level0,prompts
  label=${TAG:-abl}-$variant
  N=${N:-100} Q=0 LABEL=$label CONFIG="$config" LIMIT=${LIMIT:-400} bash $here/run_gpu.sh run $phases \
    > /root/$label.out 2>&1 &
done
wait
for variant in "$@"; do echo "== ${TAG:-abl}-$variant"; tail -4 /root/${TAG:-abl}-$variant.out; done

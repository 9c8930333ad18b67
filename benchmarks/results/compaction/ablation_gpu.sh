#!/bin/bash
# Issue 27's ablation on one GPU after run_gpu.sh setup-a/setup-b: squad-dev N=100 (all 451
# questions), level 0 only, one variant of MemoryConfig per row, side by side on one machine.
#   bash benchmarks/results/compaction/ablation_gpu.sh default reverse implications ...
# Each variant is ingested and answered (top 1) by run_gpu.sh under LABEL=abl-<variant>;
# the default row also answers with the passage in the prompt, BM25 top 3 and the question alone.
set -u
here=$(dirname "$0")
kinds='"entity","cloze","continuation","recitation","questions","summary"'
for variant in "$@"; do
  case $variant in
    default) config='{}' ;;
    reverse|implications|structure|paraphrase|wh_questions)
      config="{\"elicitation\":{\"prompt_kinds\":[$kinds,\"$variant\"]}}" ;;
    no-recitation) config='{"elicitation":{"prompt_kinds":["entity","cloze","continuation","questions","summary"]}}' ;;
    items64) config='{"elicitation":{"items_per_chunk":64}}' ;;
    epochs16) config='{"consolidation":{"epochs":16}}' ;;
    top-k-256) config='{"consolidation":{"teacher_top_k":256}}' ;;
    *) echo "unknown variant $variant"; continue ;;
  esac
  phases=ingest,level0; [ "$variant" = default ] && phases=ingest,level0,prompts
  N=100 Q=0 LABEL=abl-$variant CONFIG="$config" LIMIT=${LIMIT:-200} bash $here/run_gpu.sh run $phases | tail -4
done

#!/bin/bash
# Issue 2's five numbers on this 2-core CPU: 20 invented documents, default model and config.
# Resumable: finished parts are skipped, the stream continues from its memory folder.
cd "$(dirname "$0")/.."
S=benchmarks/results/scratch/cpu20
mkdir -p $S
Q="nice -n 10 .venv/bin/python benchmarks/quality.py --data benchmarks/data/invented_facts.jsonl --n 20 --device cpu"
[ -f $S/prompt/quality.json ] || $Q --modes base,in-prompt,rag --out $S/prompt > $S/prompt.log 2>&1
for i in $(seq 0 19); do
  [ -f $S/doc$i/quality.json ] || /usr/bin/time -v $Q --modes doc --part $i/20 --out $S/doc$i > $S/doc$i.log 2>&1
done
/usr/bin/time -v $Q --modes stream --stream-memory $S/memory --out $S/stream > $S/stream.log 2>&1
$Q --merge $S/prompt $S/doc? $S/doc?? $S/stream --label cpu-invented-20 --out $S/merged > $S/merge.log 2>&1

#!/bin/bash
# Compaction on one GPU, real default model, squad-dev. The model file travels in halves
# (../../../../shared/GPU.md): call 1 carries .gpu/a (part00 + gguf, bm25s, PyStemmer wheels)
# and runs `bash benchmarks/results/compaction/run_gpu.sh setup-a`; call 2 carries .gpu/b
# (part01, liger-kernel wheel, squad-dev.jsonl) and runs `... setup-b`, then `... tests` (the
# CUDA equivalence tests), `... run PHASES`, `... answering` (benchmarks/answering.py on the
# level-0 memory) and `... coverage` on the warm machine. Results under /root/res, copied to $OUT.
# `bash benchmarks/results/compaction/make_gpu_folders.sh` builds .gpu/a, .gpu/b and .gpu/c here.
set -u
step=$1; shift
if [ "$step" = setup-a ]; then
  mkdir -p /root/m && cp .gpu/a/* /root/m/ && { cp .gpu/c/* /root/m/ 2>/dev/null || true; }
  python3 -m pip install -q --no-deps /root/m/*.whl 2>&1 | tail -1
  python3 --version; nvidia-smi -L
  python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)"
  exit 0
fi
if [ "$step" = setup-b ]; then
  cp .gpu/b/* /root/m/
  cat /root/m/part00 /root/m/part01 > /root/m/model.gguf
  python3 -m pip install -q --no-deps /root/m/liger_kernel-*.whl /root/m/pystemmer-*.whl 2>&1 | tail -1
  exit 0
fi
if [ "$step" = tests ]; then  # the CUDA equivalence tests (they skip on a CPU)
  export PYTHONPATH=$PWD/src
  timeout ${LIMIT:-240} python3 -m pytest -q -x -p no:cacheprovider tests/test_answer_indexing.py \
    tests/test_consolidate.py tests/test_fast_generation.py tests/test_fused_kernels.py \
    tests/test_merged_adapter.py tests/test_parallel_shards.py tests/test_house_plan.py \
    -k "cuda or CUDA or graph or fused or merged or slot or together" 2>&1 | tail -15
  # top-k composition answers on the CUDA backend (per-row adapters, model.generate)
  timeout ${LIMIT:-240} python3 -m pytest -q -x -p no:cacheprovider tests/test_composition.py tests/test_self_routing.py 2>&1 | tail -5
  exit 0
fi
if [ "$step" = coverage ]; then  # the level-0 memory of LABEL: what its transfer set taught
  R=/root/res/${LABEL:-n1048}
  RECORDS=$R/records-level0.json; [ -f $R/answering/records-top1.json ] && RECORDS=$R/answering/records-top1.json
  PYTHONPATH=$PWD/src:$PWD/benchmarks python3 benchmarks/coverage.py /root/mem/${LABEL:-n1048}/level0 \
    --questions /root/m/squad-dev.jsonl --records $RECORDS --out $R/coverage 2>&1 | tail -3
  cp $R/coverage/coverage.md $OUT/ 2>/dev/null; cat $R/coverage/coverage.md 2>/dev/null | head -40
  exit 0
fi
export PARAMETRIC_MEMORY_DEFAULT_GGUF=/root/m/model.gguf PARAMETRIC_MEMORY_CACHE=/root/pmcache
export PYTHONPATH=$PWD/src:$PWD/benchmarks OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
R=/root/res; mkdir -p $R
cd benchmarks
if [ "$step" = cross ]; then  # cross_document.py: questions that need two documents
  timeout -k 15 ${LIMIT:-240} python3 cross_document.py --memory /root/mem/cross --out $R/cross > $R/cross.log 2>&1
  echo "exit $?"; tail -14 $R/cross.log; cp $R/cross/cross_document.json $OUT/ 2>/dev/null
  exit 0
fi
if [ "$step" = articles ]; then  # long_documents.py: squad-dev's 24 articles as 24 documents
  PASSAGES=""; [ -f /root/mem/n1048/level0/manifest.json ] && PASSAGES="--passages /root/mem/n1048/level0"
  timeout -k 15 ${LIMIT:-540} python3 long_documents.py --data /root/m/squad-dev.jsonl --memory /root/mem/articles \
    $PASSAGES --config "${CONFIG:-{\}}" --out $R/articles > $R/articles.log 2>&1
  echo "exit $?"; grep -vE "it/s\]|Warning|warn" $R/articles.log | tail -8 | cut -c1-250
  cp $R/articles/long_documents.json $OUT/ 2>/dev/null
  exit 0
fi
if [ "$step" = scale ]; then  # scale.py: a 2M-token synthetic corpus, stopped at LIMIT seconds
  timeout -k 30 $(( ${LIMIT:-480} + 60 )) python3 scale.py --tokens ${TOKENS:-2000000} --documents 4 \
    --limit-seconds ${LIMIT:-480} --memory /root/mem/scale --out $R/scale > $R/scale.log 2>&1
  echo "exit $?"; cat $R/scale/scale.json 2>/dev/null; cp $R/scale/scale.json $OUT/ 2>/dev/null
  exit 0
fi
if [ "$step" = answering ]; then  # answering.py on the level-0 memory of LABEL (issue 26)
  A=$R/${LABEL:-n1048}/answering; mkdir -p $A
  timeout -k 15 ${LIMIT:-540} python3 answering.py --data /root/m/squad-dev.jsonl --n ${N:-1048} \
    --questions-per-doc ${Q:-1} --modes ${MODES:-top1,top2,top3,confidence,rag,in-prompt,base} --latency-questions ${LATENCY:-32} \
    --profile-route ${PROFILE:-0} --memory /root/mem/${LABEL:-n1048}/level0 --out $A >> $A.log 2>&1
  echo "exit $?"; grep -vE "it/s\]|Warning|warn" $A.log | tail -8 | cut -c1-250
  cp $A/answering.* $A/candidates.json $A/records-recall.json $A/route_profile.txt $A.log $OUT/ 2>/dev/null; cat $A/answering.md 2>/dev/null
  exit 0
fi
timeout -k 15 ${LIMIT:-540} python3 compaction.py --data ${DATA:-/root/m/squad-dev.jsonl} --n ${N:-1048} \
  --questions-per-doc ${Q:-1} --sizes ${SIZES:-32} --phases "$1" --config "${CONFIG:-{\}}" --compaction "${COMPACTION:-{\}}" \
  --variants "${VARIANTS:-{\"\": {\}\}}" --shards-per-question ${K:-1} \
  --memory /root/mem/${LABEL:-n1048} --out $R/${LABEL:-n1048} >> $R/${LABEL:-n1048}.log 2>&1
echo "exit $?"
grep -vE "it/s\]|Warning|warn" $R/${LABEL:-n1048}.log | tail -15 | cut -c1-250
L=${LABEL:-n1048}; cp $R/$L/compaction.json $OUT/$L-compaction.json 2>/dev/null; cp $R/$L.log $OUT/ 2>/dev/null
cat $R/${LABEL:-n1048}/compaction.md 2>/dev/null

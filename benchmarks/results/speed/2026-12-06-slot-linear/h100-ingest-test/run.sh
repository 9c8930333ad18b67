python3 -m pip install -q --no-index --find-links .gpu/t pydantic filelock tqdm PyStemmer bm25s; python3 -m pip install -q --no-deps .gpu/t/transformers-*.whl 2>&1 | tail -1
for V in new old; do
  if [ $V = old ]; then P=$PWD/.gpu/t/old/src; else P=$PWD/src; fi
  for T in tests .gpu/t/tests_bf16; do
    echo "$V $T:"; PYTHONPATH=$P:$PWD/$T timeout 100 python3 -m pytest -q -p no:cacheprovider $T/test_parallel_shards.py -k "ingested_together" 2>&1 | grep -E "^E .*(Greatest|Mismatched)|passed|failed" | head -6
  done
done

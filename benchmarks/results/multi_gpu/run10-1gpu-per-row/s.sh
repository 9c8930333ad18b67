#!/bin/bash
source .gpu/b/setup.sh
timeout 90 python3 -m pytest -q -x -p no:cacheprovider tests/test_parallel_shards.py tests/test_teacher_targets.py -k cuda 2>&1 | tail -3
cd benchmarks
timeout 150 python3 ../.gpu/b/prof3.py ../.gpu/b/squad-dev.jsonl 2>&1 | grep -v Warning | cut -c1-200 | tee $OUT/prof3.txt | grep -v "^\s*$" | tail -45
cd .. && timeout 330 bash .gpu/b/p2.sh

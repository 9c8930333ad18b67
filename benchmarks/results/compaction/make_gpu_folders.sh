#!/bin/bash
# Builds the ignored folders run_gpu.sh's set-up carries to the GPU machine (Python 3.12
# there, no registry): .gpu/a the model file's first half, .gpu/c the wheels its image lacks,
# .gpu/b the second half, liger-kernel and squad-dev. Run from the repository root after
# `make install`; versions are this venv's.
set -eu
gguf=$(find .venv -name "SmolLM2-135M-Instruct.Q4_1.gguf" | head -1)
rm -rf .gpu && mkdir -p .gpu/a .gpu/b .gpu/c
split -n 2 -d "$gguf" .gpu/part && mv .gpu/part00 .gpu/a/ && mv .gpu/part01 .gpu/b/
cp ../shared/data/squad-dev.jsonl .gpu/b/
version() { .venv/bin/pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
download() {  # folder, then names
  local folder=$1; shift
  for name in "$@"; do
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp $platforms -d "$folder" "$name==$(version "$name")" 2>&1 \
      | grep -v "^WARNING: Location" || true
  done
}
download .gpu/c gguf bm25s PyStemmer pydantic pydantic_core annotated-types typing-inspection typing_extensions
.venv/bin/pip download -q --no-deps --only-binary=:all: -d .gpu/b liger-kernel==0.8.5 2>&1 \
  | grep -v "^WARNING: Location" || true
du -sh .gpu/* && ls .gpu/c .gpu/b

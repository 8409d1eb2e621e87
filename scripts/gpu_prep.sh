#!/usr/bin/env bash
# Run on the CPU box before a device run: fills .gpu/ (git-ignored through
# .git/info/exclude; carry it) with what scripts/gpu_bench.sh needs on a GPU
# machine that has no network: llama-cpp-python's Python package and vendored
# llama.cpp without models/docs/tests (~12 MB), wheels for the engine's
# dependencies for that machine's Python, and the default model's tokenizer
# alone (the model itself is over the 64 MiB a device run can carry; the GPU
# script writes a random-weight model of realistic size around it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYV:-3.12}
SDIST=${SDIST:-$(ls -t ~/.cache/pip/**/llama_cpp_python-*.tar.gz /tmp/pip-unpack-*/llama_cpp_python-*.tar.gz 2>/dev/null | head -1 || true)}
[ -f "$SDIST" ] || { echo "set SDIST to llama_cpp_python-*.tar.gz" >&2; exit 2; }
ex=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$ex")"; grep -qx "/.gpu/" "$ex" 2>/dev/null || echo "/.gpu/" >> "$ex"
rm -rf .gpu && mkdir -p .gpu/whl
tmp=$(mktemp -d) && tar -xzf "$SDIST" -C "$tmp" && src=$(ls -d "$tmp"/llama_cpp_python-*)
tar -czf .gpu/src.tgz -C "$src" --exclude=vendor/llama.cpp/models --exclude=vendor/llama.cpp/docs \
    --exclude=vendor/llama.cpp/benches --exclude=vendor/llama.cpp/tests llama_cpp vendor/llama.cpp
rm -rf "$tmp"
plat=(--platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64)
for pkg in llguidance jsonschema referencing jsonschema-specifications rpds-py diskcache gguf orjson; do
    ver=$(.venv/bin/python -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
        --implementation cp "${plat[@]}" -d .gpu/whl "$pkg${ver:+==$ver}"
done
.venv/bin/python -c "
import sys; sys.path.insert(0, 'tests')
from pathlib import Path
from engine.config import bundled_model_path
from tiny_model import write_tokenizer_only
write_tokenizer_only(Path('.gpu/tokenizer.gguf'), bundled_model_path())"
du -sh .gpu

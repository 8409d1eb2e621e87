#!/usr/bin/env bash
# One short run on a GPU machine (issue 12): llamaq's engine against llama.cpp's
# own tools, on the same model, in the same run. NOT YET RUN on a GPU.
#
#   1. builds llama-cpp-python with CUDA from its sdist (~4.5 min on 16 cores) and
#      llama-batched-bench + llama-server from the same vendored llama.cpp;
#   2. loads the model through the Python binding with every layer offloaded, in
#      a subprocess with faulthandler and llama.cpp's log on (a segfault in
#      llama_model_load_from_file was seen there once: its log says where);
#   3. llamaq bench engine --n-gpu-layers -1 at B=1,16,64,128 (both samplers; greedy, then temperature 0.8);
#   4. llama-batched-bench at the same B (decode only, no sampling: the ceiling);
#   5. llama-server -np 64, 64 concurrent greedy /completion requests.
#
# Needs: nvcc + CUDA runtime, cmake, a C++ compiler, python3 with venv, and no
# network when these are provided locally:
#   SDIST      llama_cpp_python-*.tar.gz (default: the newest in shared/ or pip's cache)
#   WHEELHOUSE a folder of wheels for llamaq's other dependencies (pip --find-links)
#   MODEL      GGUF file (default: the bundled Gemma 3 270M, assembled if needed)
#   CUDA_ARCH  CMAKE_CUDA_ARCHITECTURES (default 90: H100/H200); a wrong list fails at load
# Results land in $OUT (default bench-results/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-results/gpu}
CUDA_ARCH=${CUDA_ARCH:-90}
JOBS=$(nproc)
LEVELS=1,16,64,128
PROMPT=64
GEN=32
mkdir -p "$OUT" build-gpu
log() { echo "== $(date +%T) $*" | tee -a "$OUT/steps.log"; }

SDIST=${SDIST:-$(ls -t shared/llama_cpp_python-*.tar.gz ~/.cache/pip/**/llama_cpp_python-*.tar.gz 2>/dev/null | head -1 || true)}
[ -n "$SDIST" ] && [ -f "$SDIST" ] || { echo "set SDIST to llama_cpp_python-*.tar.gz" >&2; exit 2; }

log "venv and llama-cpp-python with CUDA from $SDIST"
python3 -m venv .venv-gpu
PIP=(.venv-gpu/bin/pip install -q)
[ -n "${WHEELHOUSE:-}" ] && PIP+=(--no-index --find-links "$WHEELHOUSE")
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH -DGGML_NATIVE=off" \
CMAKE_BUILD_PARALLEL_LEVEL=$JOBS "${PIP[@]}" "$SDIST" 2>&1 | tail -5
"${PIP[@]}" --no-deps -e . && "${PIP[@]}" -e . 2>&1 | tail -2
PY=.venv-gpu/bin/python
MODEL=${MODEL:-$($PY -c 'from engine.config import bundled_model_path; print(bundled_model_path())')}

log "llama-batched-bench and llama-server from the same llama.cpp"
tar -xzf "$SDIST" -C build-gpu
SRC=$(ls -d build-gpu/llama_cpp_python-*/vendor/llama.cpp | head -1)
cmake -S "$SRC" -B build-gpu/cpp -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DGGML_NATIVE=off \
      -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log"
cmake --build build-gpu/cpp -j "$JOBS" --target llama-batched-bench llama-server >> "$OUT/cmake.log"
BIN=build-gpu/cpp/bin

log "load through the Python binding, all layers on the GPU"
$PY -X faulthandler - "$MODEL" > "$OUT/load.log" 2>&1 <<'EOF' || { log "load failed: $OUT/load.log"; tail -30 "$OUT/load.log"; }
import sys
from engine import Engine, EngineConfig
with Engine(EngineConfig(model_path=sys.argv[1], n_gpu_layers=-1, n_parallel=4, verbose=True)) as eng:
    print("loaded:", eng.generate("Hello", temperature=0, max_tokens=8).text)
EOF

log "llamaq bench engine"
$PY -m cli bench engine --model "$MODEL" --n-gpu-layers -1 --concurrency $LEVELS --requests 128 \
    --prompt-tokens $PROMPT --gen-tokens $GEN --sampler both --out "$OUT/engine.json" | tee "$OUT/engine.txt"
$PY -m cli bench engine --model "$MODEL" --n-gpu-layers -1 --concurrency $LEVELS --requests 128 --no-baselines \
    --prompt-tokens $PROMPT --gen-tokens $GEN --sampler both --temperature 0.8 --out "$OUT/engine-t08.json" | tee "$OUT/engine-t08.txt"

log "llama-batched-bench"
"$BIN/llama-batched-bench" -m "$MODEL" -ngl 99 -c 32768 -b 2048 -ub 512 -npp $PROMPT -ntg $GEN -npl $LEVELS \
    --output-format jsonl 2>/dev/null | tee "$OUT/batched-bench.jsonl"

log "llama-server -np 64"
"$BIN/llama-server" -m "$MODEL" -ngl 99 -np 64 -c $((64 * (PROMPT + GEN) * 2)) --port 8089 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
$PY - "$MODEL" > "$OUT/server.json" <<'EOF'
import json, sys, threading, time, urllib.request
from cli.bench.engine import make_prompts
from engine.model import Model
for _ in range(600):  # the model loads first
    try:
        urllib.request.urlopen("http://127.0.0.1:8089/health", timeout=1); break
    except Exception:
        time.sleep(0.5)
prompts = make_prompts(Model(sys.argv[1]), 128, 64)
def one(p):
    body = json.dumps({"prompt": p, "n_predict": 32, "temperature": 0, "ignore_eos": True, "cache_prompt": False})
    req = urllib.request.Request("http://127.0.0.1:8089/completion", body.encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=300))["tokens_predicted"]
counts, lock = [], threading.Lock()
def client(share):
    for p in share:
        n = one(p)
        with lock:
            counts.append(n)
t0 = time.perf_counter()
threads = [threading.Thread(target=client, args=(prompts[i::64],)) for i in range(64)]
[t.start() for t in threads]; [t.join() for t in threads]
wall = time.perf_counter() - t0
print(json.dumps({"mode": "llama-server -np 64", "concurrency": 64, "tokens": sum(counts), "wall_s": wall,
                  "tok_s": sum(counts) / wall}))
EOF
cat "$OUT/server.json"
log "done: $OUT"

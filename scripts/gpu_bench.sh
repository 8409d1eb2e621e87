#!/usr/bin/env bash
# One short run on a GPU machine (issue 12): llamaq's engine against llama.cpp's
# own tools, on the same model, in the same run. Prepare with scripts/gpu_prep.sh
# on the CPU box, then on the device (carry .gpu):  bash scripts/gpu_bench.sh
#
#   1. builds llama.cpp once with CUDA as shared libraries, plus llama-batched-bench
#      and llama-server (~4 min on 16 cores), and puts the shared libraries under the
#      sdist's llama_cpp package: the Python binding and the C++ tools use one build;
#   2. writes a random-weight f16 model of realistic size around the default model's
#      tokenizer (MODEL=file.gguf uses a real one instead);
#   3. llama-batched-bench at B=1,16,64,128 (decode only, no sampling: the ceiling);
#   4. llamaq bench engine --n-gpu-layers -1 at the same B, both samplers, greedy;
#   5. llama-server -np 64, 64 concurrent greedy /completion requests;
#   6. bench engine again at temperature 0.8.
# Each step has its own time limit and writes under $OUT as it goes; an engine bench
# that stalls dumps its Python threads' stacks into its log before the limit.
# Seen 2026-11-30 on an H200: the build took 4 min; the binding loaded the model
# with every layer on the GPU (no segfault with this build); batched-bench gave
# 752 / 7,767 / 15,633 tok/s at B=1/16/64; the engine bench had not finished
# after 200 s (it printed nothing then: rows are now printed as measured).
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
R=$PWD B=/tmp/llamaq-gpu OUT=${OUT:-$R/bench-results/gpu}
CUDA_ARCH=${CUDA_ARCH:-90} LEVELS=1,16,64,128
mkdir -p "$B" "$OUT"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/steps.log"; }
log start; nvidia-smi -L | tee -a "$OUT/steps.log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$B/site" .gpu/whl/*.whl || exit 3
tar -xzf .gpu/src.tgz -C "$B"
log build
cmake -S "$B/vendor/llama.cpp" -B "$B/build" -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
    -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 4; }
cmake --build "$B/build" -j "$(nproc)" --target llama llama-batched-bench llama-server >> "$OUT/cmake.log" 2>&1 \
    || { tail -40 "$OUT/cmake.log"; exit 5; }
mkdir -p "$B/llama_cpp/lib" && cp -a "$B"/build/bin/*.so* "$B/llama_cpp/lib/"
export PYTHONPATH=$R:$B:$B/site LD_LIBRARY_PATH=$B/llama_cpp/lib:${LD_LIBRARY_PATH:-}
M=${MODEL:-$B/model.gguf}
[ -n "${MODEL:-}" ] || python3 -c "
import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from tiny_model import write_tiny_model
write_tiny_model(Path('$M'), Path('.gpu/tokenizer.gguf'), n_embd=640, n_layer=18, n_head=5, n_head_kv=1, n_ff=2048, dtype='f16')" || exit 6
log "model $M ($(du -h "$M" | cut -f1))"

log llama-batched-bench
timeout 120 "$B/build/bin/llama-batched-bench" -m "$M" -ngl 99 -c 32768 -b 2048 -ub 512 -npp 64 -ntg 32 -npl $LEVELS \
    2>/dev/null | tee "$OUT/batched-bench.txt"
# A stalled run dumps every Python thread's stack (to the log) 15 s before its time limit.
BENCH="import faulthandler, os, sys; faulthandler.dump_traceback_later(int(os.environ.get('STACKS_AT', 1e6)), repeat=True)
from cli.bench.engine import command; command(sys.argv[1:])"
log "bench engine, one quick row first (4 CPU threads: if the full run stalls, this says whether threads are why)"
STACKS_AT=45 timeout 60 python3 -c "$BENCH" -m "$M" --n-gpu-layers -1 --threads 4 --concurrency 64 --requests 64 --gen-tokens 32 \
    --sampler fast --no-baselines --out "$OUT/engine-quick.json" 2>&1 | tee "$OUT/engine-quick.txt" | tail -4
log "bench engine, greedy"
STACKS_AT=225 timeout 240 python3 -c "$BENCH" -m "$M" --n-gpu-layers -1 --concurrency $LEVELS --requests 64 --gen-tokens 32 \
    --sampler both --out "$OUT/engine.json" 2>&1 | grep -v "^llama\|^load" | tee "$OUT/engine.txt"
log "llama-server -np 64"
"$B/build/bin/llama-server" -m "$M" -ngl 99 -np 64 -c 16384 --port 8089 > "$OUT/server.log" 2>&1 &
SERVER=$!
timeout 100 python3 - "$M" <<'PYEOF' | tee "$OUT/server.json"
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
PYEOF
kill $SERVER 2>/dev/null
log "bench engine, temperature 0.8"
STACKS_AT=105 timeout 120 python3 -c "$BENCH" -m "$M" --n-gpu-layers -1 --concurrency 16,64,128 --requests 64 --gen-tokens 32 \
    --sampler both --temperature 0.8 --no-baselines --out "$OUT/engine-t08.json" 2>&1 | tee "$OUT/engine-t08.txt" | tail -9
log done

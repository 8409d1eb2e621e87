"""`llamaq bench json`: structured output costs.

(a) mask: time to compute one token mask on the model's vocabulary, llguidance
    (what llamaq uses: Matcher.mask_logits, bitmask applied to the logits) against
    llama.cpp's grammar sampler on the GBNF from llama-cpp-python's
    JSON-schema converter, walking the tokens of known-valid documents;
(b) schemas: how many of the JSONSchemaBench schemas compile (and why not);
(c) decode: time per generated token with a schema against without, at 1 and
    16 concurrent requests, in the same run on the same engine."""

from __future__ import annotations

import ctypes
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import numpy as np

from cli.bench.engine import run_clients
from cli.bench.util import out_option, print_table, write_json
from engine import Constraint, Engine, EngineConfig, SamplingParams
from engine.errors import InvalidRequest
from engine.grammar import compile_constraint, make_tokenizer
from jobs.chat import chat_for

BENCH_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "jsonschemabench"
MASK_SCHEMAS = ("Glaiveai2K---calculate_area_0d060209", "Snowplow---sp_51_Normalized",
                "Github_easy---o5163", "JsonSchemaStore---nycrc")
DECODE_SCHEMA = {
    "type": "object",
    "properties": {
        "people": {"type": "array", "minItems": 6, "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                           "city": {"type": "string"}, "email": {"type": "string", "format": "email"}},
            "required": ["name", "age", "city", "email"], "additionalProperties": False}},
    },
    "required": ["people"], "additionalProperties": False,
}


@contextmanager
def _quiet_stderr():
    """llama.cpp prints grammar parse errors straight to fd 2."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def find_serialization(cc, doc: Any, budget: int = 20000) -> str | None:
    """Compact JSON text of doc that cc's grammar accepts, or None if no order of
    its object keys is accepted (llguidance fixes the order of listed properties).
    For tests and benchmarks: feed known documents through a matcher. Raises
    TimeoutError past `budget` grammar checks."""
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))  # continuations nest per key
    try:
        return _OrderSearch(cc, budget).find(doc)
    finally:
        sys.setrecursionlimit(limit)


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


class _OrderSearch:
    """Depth-first search for a key order of doc that the grammar accepts, on one
    llguidance matcher: each piece of text is consumed as its own token run (the
    grammar judges bytes, so any tokenisation of the same text is judged alike)
    and undone by rollback. Pruning: the grammar state after a set of keys does
    not depend on the order they were emitted in; a key that could come next but
    was passed over must still be able to come next afterwards; a value rejected
    as the next entry stays rejected. These hold for llguidance's object grammar
    (listed properties in schema order, then additional ones in any order)."""

    def __init__(self, cc, budget: int):
        self.m = cc.matcher()._m
        self.tok = cc.tokenizer
        self.budget = budget
        self.text: list[str] = []

    def find(self, doc) -> str | None:
        found = []

        def done():
            if self.m.is_accepting():
                found.append("".join(self.text))
                return True
            return False

        self._emit(doc, done)
        return found[0] if found else None

    def _push(self, s: str) -> int:
        self.budget -= 1
        if self.budget < 0:
            raise TimeoutError("key-order search budget exhausted")
        toks = self.tok.tokenize(s)
        n = self.m.try_consume_tokens(toks)
        if n != len(toks):
            if n:
                self.m.rollback(n)
            return 0
        self.text.append(s)
        return n

    def _pop(self, n: int) -> None:
        self.m.rollback(n)
        self.text.pop()

    def _then(self, s: str, k) -> bool:
        n = self._push(s)
        if not n:
            return False
        r = k()
        self._pop(n)
        return r

    def _emit(self, v, k) -> bool:
        if isinstance(v, dict):
            return self._then("{", lambda: self._obj(v, list(v), True, k, set(), (), set()))
        if isinstance(v, list):
            return self._then("[", lambda: self._arr(v, 0, k))
        return self._then(_dumps(v), k)

    def _arr(self, v, i, k) -> bool:
        if i == len(v):
            return self._then("]", k)
        if i == 0:
            return self._emit(v[0], lambda: self._arr(v, 1, k))
        return self._then(",", lambda: self._emit(v[i], lambda: self._arr(v, i + 1, k)))

    def _obj(self, v, rem, first, k, failed, passed, dead) -> bool:
        done = frozenset(v) - frozenset(rem)
        if done in failed:
            return False
        if not rem:
            ok = self._then("}", k)
        else:
            ok = self._entries(v, rem, first, k, failed, passed, dead)
        if not ok:
            failed.add(done)
        return ok

    def _entries(self, v, rem, first, k, failed, passed, dead) -> bool:
        sep = "" if first else ","
        ready = [key for key in rem if self._then(sep + _dumps(key) + ":", lambda: True)]
        if any(key not in ready for key in passed) or dead & set(rem):
            return False
        for key in ready:
            rest = [x for x in rem if x != key]
            others = tuple(x for x in ready if x != key)
            reached = []

            def after_value(rest=rest, others=others, reached=reached):
                reached.append(True)
                return self._obj(v, rest, False, k, failed, others, dead)

            if self._then(sep + _dumps(key) + ":", lambda key=key, a=after_value: self._emit(v[key], a)):
                return True
            if not reached:
                dead.add(key)
                return False
        return False


def _doc_tokens(cc, tok, case: dict) -> list[int] | None:
    """Tokens of the first valid instance, keys in the order the grammar wants."""
    for t in case["tests"]:
        if t["valid"]:
            text = find_serialization(cc, t["data"])
            if text is not None:
                return tok.tokenize(text)
    return None


def mask_times(model, bench_dir: Path) -> list[dict]:
    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    tok = make_tokenizer(model.ptr, model.eog_tokens)
    n = tok.n_vocab
    base = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    td = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
    cand = np.zeros(n, dtype=td)
    rows = []
    for name in MASK_SCHEMAS:
        case = json.loads((bench_dir / f"{name}.json").read_text())
        cc = compile_constraint(Constraint("json_schema", case["schema"]), tok)
        toks = _doc_tokens(cc, tok, case)
        if not toks:
            continue
        m, t_mask, t_acc = cc.matcher(), [], []
        for t in toks:
            logits = base.copy()
            t0 = time.perf_counter()
            m.mask_logits(logits)
            t_mask.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m.accepts(t)
            t_acc.append(time.perf_counter() - t0)
            m.consume(t)
        row = {"schema": name, "tokens": len(toks), "llg_mask_ms": 1e3 * float(np.mean(t_mask)),
               "llg_accepts_us": 1e6 * float(np.mean(t_acc)), "lcpp_mask_ms": None, "lcpp_tokens": 0}
        try:
            gbnf = json_schema_to_gbnf(json.dumps(case["schema"]))
            with _quiet_stderr():
                smpl = llama_cpp.llama_sampler_init_grammar(model.vocab, gbnf.encode(), b"root")
        except Exception:
            smpl = None
        if smpl:
            times = []
            for t in toks:
                cand["id"], cand["logit"], cand["p"] = np.arange(n), base, 0.0
                arr = llama_cpp.llama_token_data_array(
                    data=cand.ctypes.data_as(llama_cpp.llama_token_data_p), size=n, selected=-1, sorted=False)
                t0 = time.perf_counter()
                llama_cpp.llama_sampler_apply(smpl, ctypes.byref(arr))
                times.append(time.perf_counter() - t0)
                if not np.isfinite(cand["logit"][t]):
                    break  # its grammar differs from the document here (e.g. property order)
                llama_cpp.llama_sampler_accept(smpl, t)
            llama_cpp.llama_sampler_free(smpl)
            row["lcpp_mask_ms"], row["lcpp_tokens"] = 1e3 * float(np.mean(times)), len(times)
        rows.append(row)
    return rows


def schema_support(model, bench_dir: Path) -> dict:
    tok = make_tokenizer(model.ptr, model.eog_tokens)
    accepted, rejected, ms = [], {}, []
    for path in sorted(bench_dir.glob("*.json")):
        schema = json.loads(path.read_text())["schema"]
        t0 = time.perf_counter()
        try:
            compile_constraint(Constraint("json_schema", schema), tok)
            accepted.append(path.stem)
            ms.append(1e3 * (time.perf_counter() - t0))
        except InvalidRequest as e:
            rejected[path.stem] = str(e)
    return {"total": len(accepted) + len(rejected), "accepted": len(accepted), "rejected": rejected,
            "compile_ms_median": float(np.median(ms)) if ms else None}


def run_decode(eng: Engine, prompts: list[str], gen: int, concurrency: int, constraint) -> dict:
    params = SamplingParams(temperature=0.0, max_tokens=gen, ignore_eos=constraint is None, constraint=constraint)
    results, wall = run_clients(eng, prompts, concurrency, params)
    tokens = sum(r.usage.completion_tokens for r in results)
    return {"mode": "schema" if constraint else "plain", "concurrency": concurrency, "requests": len(results),
            "tokens": tokens, "wall_s": wall, "ms_per_token": 1e3 * wall / tokens, "tok_s": tokens / wall,
            "complete": sum(not r.incomplete for r in results) if constraint else None}


@click.command("json")
@click.option("--model", "-m", envvar="LLAMAQ_MODEL", help="GGUF file (default: bundled Gemma 3 270M).")
@click.option("--gen-tokens", default=48, show_default=True)
@click.option("--concurrency", "levels", default="1,16", show_default=True, help="Comma-separated levels.")
@click.option("--requests", "n_requests", default=16, show_default=True, help="Requests per level above 1 (at least the level); 4 at level 1.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("--n-gpu-layers", type=int, default=0, show_default=True)
@click.option("--bench-dir", type=click.Path(path_type=Path), default=BENCH_DIR, show_default=True,
              help="JSONSchemaBench subset folder.")
@click.option("--skip-decode", is_flag=True, help="Only the mask and schema-support parts.")
@out_option("json")
def command(model, gen_tokens, levels, n_requests, threads, n_gpu_layers, bench_dir, skip_decode, out):
    """Structured output: mask cost (llguidance vs llama.cpp grammar), schema support, decode cost."""
    levels = [int(x) for x in levels.split(",")]
    eng = Engine(EngineConfig(model_path=model, n_parallel=max(levels), n_threads=threads,
                              n_gpu_layers=n_gpu_layers, n_ctx=max(4096, max(levels) * (gen_tokens + 160))))
    try:
        click.echo(f"model {eng.model.path.name}, vocabulary {eng.model.n_vocab} tokens")
        t0 = time.perf_counter()
        make_tokenizer(eng.model.ptr, eng.model.eog_tokens)
        tokenizer_s = time.perf_counter() - t0
        masks = mask_times(eng.model, bench_dir)
        print_table(masks, [("schema", "schema", ""), ("tokens", "tokens", "d"),
                            ("llg_mask_ms", "llguidance mask ms", ".3f"), ("llg_accepts_us", "accepts() us", ".1f"),
                            ("lcpp_mask_ms", "llama.cpp grammar ms", ".1f"), ("lcpp_tokens", "llama.cpp tokens", "d")])
        support = schema_support(eng.model, bench_dir)
        click.echo(f"JSONSchemaBench: {support['accepted']} of {support['total']} schemas accepted "
                   f"(median compile {support['compile_ms_median']:.1f} ms)")
        for name, why in support["rejected"].items():
            click.echo(f"  rejected {name}: {why[:120]}")
        rows = []
        if not skip_decode:
            ask = "List six people as JSON: name, age, city and email of each. Person set {i}."
            chat = chat_for(eng)
            prompts = [chat.render([{"role": "user", "content": ask.format(i=i)}])
                       for i in range(max(n_requests, max(levels)))]
            c = Constraint("json_schema", DECODE_SCHEMA)
            eng.generate(prompts[0], temperature=0, max_tokens=4, constraint=c)  # warm-up, compiles
            for level in levels:
                share = prompts[: max(level, n_requests) if level > 1 else min(4, n_requests)]
                plain = run_decode(eng, share, gen_tokens, level, None)
                schema = run_decode(eng, share, gen_tokens, level, c)
                schema["vs_plain"] = schema["ms_per_token"] / plain["ms_per_token"]
                rows += [plain, schema]
            print_table(rows, [("mode", "mode", ""), ("concurrency", "conc", "d"), ("requests", "reqs", "d"),
                               ("tokens", "tokens", "d"), ("ms_per_token", "ms/token", ".2f"),
                               ("tok_s", "tok/s", ".1f"), ("vs_plain", "x plain", ".2f"),
                               ("complete", "complete", "d")])
    finally:
        eng.close()
    write_json(out, "json", {"model": str(eng.model.path), "gen_tokens": gen_tokens,
                             "tokenizer_build_s": tokenizer_s, "mask": masks, "schemas": support, "decode": rows})

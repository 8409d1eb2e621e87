"""Keep llama.cpp off its AMX kernels.

A llama-cpp-python built with -march=native on an Intel CPU with AMX compiles in
ggml's AMX weight buffers, and on such a CPU `ggml_backend_amx_mul_mat` segfaults
on the first decode of a K-quant model (seen with llama-cpp-python 0.3.36 and the
default model). The AMX buffers are one of llama.cpp's "extra buffer types";
turning those off (`use_extra_bufts = False`) avoids them. It is done only where
both the library and the CPU have AMX, for every model this process loads
(`Llama(...)` included), unless LLAMAQ_EXTRA_BUFTS=1 says otherwise.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

import llama_cpp
import llama_cpp.llama_cpp as _c

_AMX_SYMBOL = "_Z28ggml_backend_amx_buffer_typev"


def _cpu_has_amx() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _library_has_amx() -> bool:
    for lib in sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*.so*")):
        try:
            if hasattr(ctypes.CDLL(str(lib)), _AMX_SYMBOL):
                return True
        except OSError:
            continue
    return False


@cache
def extra_buffer_types_allowed() -> bool:
    forced = os.environ.get("LLAMAQ_EXTRA_BUFTS")
    if forced is not None:
        return forced not in ("0", "false", "no", "")
    return not (_cpu_has_amx() and _library_has_amx())


@cache
def apply() -> None:
    """Make llama_model_default_params() turn extra buffer types off where needed."""
    if extra_buffer_types_allowed():
        return
    default_params = _c.llama_model_default_params

    def params() -> _c.llama_model_params:
        p = default_params()
        p.use_extra_bufts = False
        return p

    _c.llama_model_default_params = params
    llama_cpp.llama_model_default_params = params

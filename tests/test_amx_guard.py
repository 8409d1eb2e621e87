"""llama.cpp's AMX kernels segfault on AMX CPUs: engine turns extra buffer types off there."""

import subprocess
import sys

PROBE = ("import engine, llama_cpp; "
         "print(engine.amx_guard.extra_buffer_types_allowed(), llama_cpp.llama_model_default_params().use_extra_bufts)")


def probe(env_value: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "LLAMAQ_EXTRA_BUFTS"}
    if env_value is not None:
        env["LLAMAQ_EXTRA_BUFTS"] = env_value
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def test_forced_off_reaches_every_model_load():
    assert probe("0") == "False False"


def test_forced_on_leaves_llama_defaults():
    assert probe("1") == "True True"


def test_default_matches_the_machine():
    from engine import amx_guard

    expected = not (amx_guard._cpu_has_amx() and amx_guard._library_has_amx())
    assert probe(None) == f"{expected} {expected}"

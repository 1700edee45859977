"""The command line's persistent compilation cache: where it goes, that a second process loads
from it, and that a cache the user already set for JAX is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax

from distill_jax.run import compile_cache

# What a fresh interpreter does with compile_cache.enable(DIR, MAX_BYTES) and then one small
# program per SCALE (comma-separated, one cache entry each): the directory in force, JAX's cap,
# the compilation cache hits (JAX's monitoring events), the cache writes that failed, and what
# the directory holds, as JSON.
PROBE = """
import json, pathlib, sys, warnings
import jax, jax.numpy as jnp, numpy as np
from distill_jax.run import compile_cache
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
try:
    used = compile_cache.enable(sys.argv[1], int(sys.argv[2]))
except compile_cache.CacheDirError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for scale in map(float, sys.argv[3].split(",")):
        jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * scale))(np.ones(7, np.float32)).block_until_ready()
programs = sorted(pathlib.Path(used).glob("*-cache")) if used else []
print(json.dumps({"used": used, "config": jax.config.jax_compilation_cache_dir,
                  "max_size": jax.config.jax_compilation_cache_max_size, "hits": len(hits),
                  "write_errors": sum("Error writing" in str(w.message) for w in caught),
                  "programs": len(programs), "bytes": sum(p.stat().st_size for p in programs)}))
"""
UNCAPPED = -1


def fresh_env() -> dict[str, str]:
    """This process's environment without any cache setting (conftest sets one)."""
    env = dict(os.environ)
    for name in ("JAX_COMPILATION_CACHE_DIR", compile_cache.ENV_VAR, compile_cache.MAX_SIZE_ENV_VAR):
        env.pop(name, None)
    return env


def probe(arg: str, max_bytes: int = compile_cache.DEFAULT_MAX_BYTES, scales: str = "3", prelude: str = "",
          **env: str) -> dict:
    """PROBE's JSON, with its stderr under "stderr"; ``prelude`` runs before PROBE."""
    done = subprocess.run([sys.executable, "-c", prelude + PROBE, arg, str(max_bytes), scales],
                          env={**fresh_env(), **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def test_default_dir_follows_the_variable_then_xdg_then_home():
    home_default = os.path.join(os.path.expanduser("~"), ".cache", "distill_jax", "xla")
    assert compile_cache.default_dir({}) == home_default
    assert compile_cache.default_dir({"XDG_CACHE_HOME": "/x"}) == "/x/distill_jax/xla"
    assert compile_cache.default_dir({"XDG_CACHE_HOME": "/x", compile_cache.ENV_VAR: "/y"}) == "/y"
    assert compile_cache.default_dir({compile_cache.ENV_VAR: "off"}) == compile_cache.OFF


def test_a_second_process_loads_the_program_the_first_compiled(tmp_path):
    cache = tmp_path / "nested" / "xla"
    first = probe(str(cache))
    assert first["used"] == first["config"] == str(cache) and first["hits"] == 0
    assert first["programs"] >= 1 and first["max_size"] == compile_cache.DEFAULT_MAX_BYTES
    assert probe(str(cache))["hits"] >= 1  # the second process loaded the program instead of compiling


def test_off_uses_no_cache_and_an_impossible_directory_is_named(tmp_path):
    off = probe("off")
    assert (off["used"], off["config"], off["hits"], off["max_size"]) == (None, None, 0, UNCAPPED)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert probe(str(blocker / "xla"))["error"] == (
        f"XLA cache directory {blocker / 'xla'}: cannot be created (Not a directory)")


def test_the_cap_evicts_the_least_recently_used_programs(tmp_path):
    cache = tmp_path / "xla"
    one = probe(str(cache / "one"), scales="1")
    cap = int(one["bytes"] * 2.5)  # room for 2 programs (their sizes differ by a few %)
    capped = probe(str(cache / "capped"), cap, scales="1,2,3,4,5,6")
    assert one["programs"] == 1 and capped["write_errors"] == 0
    assert capped["programs"] == 2 and capped["bytes"] <= cap
    assert probe(str(cache / "capped"), cap, scales="6")["hits"] == 1  # the latest one stayed
    assert probe(str(cache / "capped"), cap, scales="1")["hits"] == 0  # the oldest one went


def test_a_cache_filled_without_a_cap_keeps_working_once_capped(tmp_path):
    """A directory an older distill_jax filled (no last-use records) would otherwise make every write
    of the capped JAX fail; a size the user chose, here "no cap", is kept."""
    cache = str(tmp_path / "xla")
    uncapped = probe(cache, scales="1,2,3", **{compile_cache.MAX_SIZE_ENV_VAR: str(UNCAPPED)})
    assert uncapped["max_size"] == UNCAPPED and uncapped["programs"] == 3
    cap = uncapped["bytes"]
    capped = probe(cache, cap, scales="1,4,5,6")
    assert capped["max_size"] == cap and capped["write_errors"] == 0 and capped["hits"] == 1
    assert capped["bytes"] <= cap and capped["programs"] <= 3


def test_without_filelock_the_cache_works_uncapped_and_says_so(tmp_path):
    cache = str(tmp_path / "xla")
    found = probe(cache, prelude="import sys; sys.modules['filelock'] = None  # as if not installed\n")
    assert found["used"] == cache and found["max_size"] == UNCAPPED
    assert found["programs"] == 1 and found["write_errors"] == 0
    assert f"XLA cache directory {cache}: not capped, JAX's eviction needs the filelock package" in found["stderr"]


def test_a_cache_jax_already_has_is_kept(tmp_path):
    before = jax.config.jax_compilation_cache_dir  # the test session's (conftest)
    assert before
    assert compile_cache.enable(tmp_path / "other") == before
    assert jax.config.jax_compilation_cache_dir == before and not (tmp_path / "other").exists()


def test_the_command_line_refuses_a_cache_directory_it_cannot_create(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = subprocess.run([sys.executable, "-m", "distill_jax.train", "--preset", "smoke", "--out",
                           str(tmp_path / "run"), "--xla-cache", str(blocker / "xla")],
                          env=fresh_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"--xla-cache {blocker / 'xla'}: XLA cache directory {blocker / 'xla'}: cannot be created" in done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was created


def test_an_unusable_default_directory_only_costs_the_cache(tmp_path):
    """``$DISTILL_JAX_XLA_CACHE`` that cannot be created gives a note and the command goes on (here to
    its next check, a missing run directory), instead of failing on a performance setting."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    env = {**fresh_env(), compile_cache.ENV_VAR: str(blocker / "xla")}
    done = subprocess.run([sys.executable, "-m", "distill_jax.train", "--phase", "eval", "--from",
                           str(tmp_path / "no_run")], env=env, capture_output=True, text=True, timeout=300)
    assert f"note: XLA cache directory {blocker / 'xla'}: cannot be created" in done.stderr
    assert "compiling without a persistent cache" in done.stderr
    assert done.returncode == 2 and "no_run" in done.stderr.splitlines()[-1]

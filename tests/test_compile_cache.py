"""The command line's persistent compilation cache: where it goes, that a second process loads
from it, and that a cache the user already set for JAX is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax

from distill_jax import compile_cache

# What a fresh interpreter does with compile_cache.enable(ARG): the directory in force, and the
# compilation cache hits of one small program (JAX's monitoring events), as JSON.
PROBE = """
import json, sys
import jax, jax.numpy as jnp
from distill_jax import compile_cache
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
try:
    used = compile_cache.enable(sys.argv[1])
except compile_cache.CacheDirError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 3.0))(jnp.arange(7.0)).block_until_ready()
print(json.dumps({"used": used, "config": jax.config.jax_compilation_cache_dir, "hits": len(hits)}))
"""


def fresh_env() -> dict[str, str]:
    """This process's environment without any cache setting (conftest sets one)."""
    env = dict(os.environ)
    for name in ("JAX_COMPILATION_CACHE_DIR", compile_cache.ENV_VAR):
        env.pop(name, None)
    return env


def probe(arg: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, arg], env=fresh_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_default_dir_follows_the_variable_then_xdg_then_home():
    home_default = os.path.join(os.path.expanduser("~"), ".cache", "distill_jax", "xla")
    assert compile_cache.default_dir({}) == home_default
    assert compile_cache.default_dir({"XDG_CACHE_HOME": "/x"}) == "/x/distill_jax/xla"
    assert compile_cache.default_dir({"XDG_CACHE_HOME": "/x", compile_cache.ENV_VAR: "/y"}) == "/y"
    assert compile_cache.default_dir({compile_cache.ENV_VAR: "off"}) == compile_cache.OFF


def test_a_second_process_loads_the_program_the_first_compiled(tmp_path):
    cache = tmp_path / "nested" / "xla"
    first = probe(str(cache))
    assert first == {"used": str(cache), "config": str(cache), "hits": 0}
    assert any(cache.iterdir())  # the first process wrote its programs
    assert probe(str(cache))["hits"] >= 1  # and the second loaded them instead of compiling


def test_off_uses_no_cache_and_an_impossible_directory_is_named(tmp_path):
    assert probe("off") == {"used": None, "config": None, "hits": 0}
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert probe(str(blocker / "xla")) == {
        "error": f"XLA cache directory {blocker / 'xla'}: cannot be created (Not a directory)"}


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

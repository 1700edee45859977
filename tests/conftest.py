"""Test-session settings: the CPU backend unless JAX_PLATFORMS says otherwise, and a persistent
XLA compilation cache so identical programs (same shapes, different seeds) compile once per
session instead of once per call."""

import os
import pathlib
import re
import subprocess

# The suite is sized for the CPU and runs in two pytest-xdist workers (README): on a GPU machine
# each worker would otherwise claim most of the one GPU's memory. Set before jax is imported,
# because jax reads JAX_PLATFORMS at import; subprocesses the tests start inherit it. A user who
# wants the GPU sets JAX_PLATFORMS=cuda (and -n 0) explicitly.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).parents[1]


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("xla_cache")
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # The command lines the tests start as subprocesses share it, instead of the user's ~/.cache,
    # uncapped like this process's: a capped writer fails on entries an uncapped one adds meanwhile.
    os.environ["DISTILL_JAX_XLA_CACHE"] = str(cache_dir)
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = "-1"
    yield


@pytest.fixture
def gpu_session():
    """``experiments/gpu_session.sh STAGE ARGS`` as a lent GPU machine runs it, here on the CPU.

    Returns ``run(stage, args, out, runs, timeout=900, **env) -> CompletedProcess``: ``out`` and
    ``runs`` are the stage's ``$OUT`` and ``$RUNS`` folders, ``timeout`` the seconds the whole stage
    may take here, ``env`` extra variables (``STAGE_SECONDS``, say).
    """
    def run(stage: str, args: list[str], out: pathlib.Path, runs: pathlib.Path, timeout: float = 900, **env: str):
        return subprocess.run(["bash", str(ROOT / "experiments" / "gpu_session.sh"), stage, *args], cwd=ROOT,
                              env={**os.environ, "OUT": str(out), "RUNS": str(runs), **env},
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def update_part_timings():
    """``parse(log) -> {part: ms}`` from ``experiments/probes/update_parts.py``'s timing lines
    (``<part>   <ms> ms   (<rate> env-steps/s)``); its other lines (shapes, profile, differences) are skipped."""
    row = re.compile(r"^(?P<part>\S.*?) +(?P<ms>[\d.]+) ms +\([\d,]+ env-steps/s\)$", re.MULTILINE)

    def parse(log: str) -> dict[str, float]:
        return {m["part"]: float(m["ms"]) for m in row.finditer(log)}

    return parse

"""What every benchmark script records next to its numbers: hardware, versions, commit, memory."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from typing import Any

import jax

PACKAGES = ("jax", "jaxlib", "brax", "mujoco", "mujoco-mjx", "flax", "optax")


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def hardware() -> str:
    """The device the default backend runs on, e.g. ``NVIDIA H100 80GB HBM3 (GPU)`` or ``AMD EPYC ..., 2 cores (CPU)``."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"{jax.device_count()} x {dev.device_kind} ({dev.platform.upper()})"
    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores (CPU)"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "absent"
    return out


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=pathlib.Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def best_seconds(fn: Callable[..., Any], *args: Any, repeats: int = 5) -> float:
    """Fastest wall-clock seconds of ``repeats`` calls of ``fn(*args)``, each waited for with
    ``jax.block_until_ready``, after one untimed call that compiles and warms it up."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory_bytes() -> tuple[int, str]:
    """``(bytes, what)``: the device's peak allocation where the backend reports one (GPU/TPU),
    otherwise this process's peak resident set size (CPU). Both only grow during a run."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


def add_argument_xla_default(parser) -> None:
    parser.add_argument(
        "--xla-default", action="store_true",
        help="compile every program with XLA's default CPU options instead of distill_jax's "
             "(which turn off YNNPACK fusions; see distill_jax/xla_options.py)",
    )


def set_process_xla_options(xla_default: bool) -> str:
    """Makes every program of this process (ours, Brax's, raw physics) compile with the same XLA options.

    Unless ``xla_default``, appends distill_jax's CPU options to ``XLA_FLAGS``, so that a
    side-by-side comparison does not credit our trainer with a compiler setting that
    Brax's trainer and the raw-physics loop could have as well. Call it before the first
    computation (XLA reads the variable once). Returns the effective ``XLA_FLAGS``.
    """
    from distill_jax.xla_options import CPU_OPTIONS

    if not xla_default:
        flags = os.environ.get("XLA_FLAGS", "").split()
        flags += [f"--{name}={value}" for name, value in CPU_OPTIONS.items() if f"--{name}=" not in " ".join(flags)]
        os.environ["XLA_FLAGS"] = " ".join(flags)
    return os.environ.get("XLA_FLAGS", "")

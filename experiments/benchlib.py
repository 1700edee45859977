"""What every benchmark script records next to its numbers: hardware, versions, commit, memory."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
import resource
import subprocess

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


def peak_memory_bytes() -> tuple[int, str]:
    """``(bytes, what)``: the device's peak allocation where the backend reports one (GPU/TPU),
    otherwise this process's peak resident set size (CPU). Both only grow during a run."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"

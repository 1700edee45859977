"""What produced a run, and what it cost: recorded in the artifacts beside the results.

The design documents ask that simulator fidelity, PPO semantics, reward terms and the reset
distribution be versioned in the training artifact (the config, the schema and the env
fingerprint do that), "with the same discipline for throughput, wall-clock, GPU memory and cost".
This module collects the rest: the package versions and git commit, the devices and processes,
peak memory, compile seconds apart from run seconds, env-steps/s per phase, and device-hours
(with a cost when a price per device-hour is given).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import pathlib
import resource
import subprocess
import sys
from typing import Any, Iterator

PACKAGES = ("distill_jax", "jax", "jaxlib", "mujoco", "mujoco-mjx", "brax", "flax", "optax", "orbax-checkpoint",
            "numpy", "onnx", "onnxruntime")
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # seconds XLA spent compiling one program


def package_versions() -> dict[str, str | None]:
    """Installed version of each package that decides what a run computes (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(path: pathlib.Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (this package by default), or
    ``None`` outside a checkout or without git (an installed wheel has no commit)."""
    path = path or pathlib.Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def devices() -> dict[str, Any]:
    """The platform, device kind and count, and the process count (``jax.distributed``)."""
    import jax

    local = jax.local_devices()
    return {"platform": local[0].platform, "device_kind": local[0].device_kind, "devices": jax.device_count(),
            "local_devices": len(local), "processes": jax.process_count(), "python": sys.version.split()[0]}


def peak_memory() -> dict[str, int | None]:
    """Peak resident memory of this process (bytes) and, where the backend reports it, the peak
    device memory in use (bytes, summed over local devices; ``None`` on the CPU)."""
    import jax

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return {"peak_rss_bytes": int(rss), "peak_device_bytes": sum(peaks) if peaks else None}


class CompileClock:
    """Seconds XLA spends compiling, per stage, from JAX's own compile-duration events.

    Use ``with clock.stage("teacher"): ...``; programs loaded from the persistent cache are not
    compiled and do not count.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None

    def _listener(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == COMPILE_EVENT and self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + float(duration)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        import jax

        self._stage = name
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        try:
            yield
        finally:
            jax.monitoring.unregister_event_duration_listener(self._listener)
            self._stage = None


def phase_throughput(metrics_rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per training phase: env steps, seconds in compiled calls, and env-steps/s over the calls after
    the first (which pays for compilation), from ``metrics.jsonl`` rows."""
    out: dict[str, dict[str, float]] = {}
    for phase in dict.fromkeys(r.get("phase") for r in metrics_rows):
        rows = [r for r in metrics_rows if r.get("phase") == phase]
        calls = [r for r in rows if "seconds" in r]
        steady = calls[1:] or calls
        rates = [r["env_steps_per_second"] for r in steady if "env_steps_per_second" in r]
        out[str(phase)] = {"env_steps": float(rows[-1].get("env_steps", 0)) if rows else 0.0,
                           "call_seconds": float(sum(r["seconds"] for r in calls)),
                           "env_steps_per_second": float(sum(rates) / len(rates)) if rates else float("nan")}
    return out


def cost(wall_seconds: float, device_count: int, price_per_device_hour: float | None) -> dict[str, float | None]:
    """Device-hours of ``wall_seconds`` on ``device_count`` devices, and their price when one is given."""
    hours = wall_seconds * device_count / 3600.0
    return {"device_hours": hours, "price_per_device_hour": price_per_device_hour,
            "cost": None if price_per_device_hour is None else hours * price_per_device_hour}


def collect(*, wall_seconds: float | None = None, compile_seconds: dict[str, float] | None = None,
            metrics_rows: list[dict[str, Any]] | None = None, price_per_device_hour: float | None = None) -> dict:
    """The ``provenance`` section: versions, commit, devices, memory, compile and run time, cost."""
    where = devices()
    out: dict[str, Any] = {"packages": package_versions(), "git": git_commit(), "devices": where,
                           "memory": peak_memory()}
    if compile_seconds is not None:
        out["compile_seconds"] = dict(compile_seconds)
    if metrics_rows is not None:
        out["phases"] = phase_throughput(metrics_rows)
    if wall_seconds is not None:
        out["wall_seconds"] = wall_seconds
        out["cost"] = cost(wall_seconds, where["devices"], price_per_device_hour)
    return out

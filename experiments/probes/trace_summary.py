"""A ``jax.profiler`` trace of one call, summed per op: how many ops ran and how busy they kept the device.

``trace_ops(fn, *args)`` traces one call of an already compiled ``fn`` and
returns its wall seconds and the op events: on a GPU, the kernels and copies on
the device's stream lines; on the CPU, XLA's innermost thunk events on the host
threads (a ``while`` thunk contains its body's, which are the ones kept).
``print_summary`` prints the op count, the time the ops kept their lines busy
against the traced call's wall time (a busy share far below 1 on a GPU means the
call waits on launches and loop checks, not on arithmetic) and the ops that took
longest, by name and by name family (digits stripped, so ``loop_add_fusion_3``
and ``loop_add_fusion_7`` add up). Every line starts with ``profile``. Tracing
slows the call (on the CPU about 2x at 256 envs), so its wall time is the traced one.

Usage: a module, not a script: ``update_parts.py --profile`` and ``rollout_seed_axis.py --profile``
import it (the probes' folder is on ``sys.path`` when they run).
Cited by: experiments/gpu_runbook.md; tests/test_experiments.py tests its ``_innermost``
"""
from __future__ import annotations

import collections
import glob
import re
import tempfile
import time
from typing import Any, Callable, NamedTuple

import jax

# Host-side bookkeeping that the CPU client records around and beside the thunks it runs, and
# Python tracer events (``$file:line function``).
_NOT_OPS = ("ThreadpoolListener::", "end: ", "ThunkExecutor::", "$")


class OpEvent(NamedTuple):
    line: str  # the trace line: a device stream ("Stream #14(...)") or a host thread
    name: str  # the op's name, e.g. a fusion or kernel
    start: float  # seconds, trace clock
    seconds: float


def _innermost(events: list[OpEvent]) -> list[OpEvent]:
    """The events of one line that contain no other event of it (a ``while`` holds its body's ops)."""
    ordered = sorted(events, key=lambda e: (e.start, -e.seconds))
    return [e for e, after in zip(ordered, ordered[1:] + [None])
            if after is None or after.start >= e.start + e.seconds]


def trace_ops(fn: Callable[..., Any], *args: Any) -> tuple[float, list[OpEvent]]:
    """``(wall seconds, op events)`` of one traced call of ``fn(*args)`` (compile it first)."""
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            wall = time.perf_counter() - start
        data = jax.profiler.ProfileData.from_file(glob.glob(folder + "/**/*.xplane.pb", recursive=True)[0])
    lines = [line for plane in data.planes if plane.name.startswith("/device:")
             for line in plane.lines if line.name.startswith("Stream") and len(line.events)]
    if not lines:  # the CPU, or a GPU whose profiler recorded no kernels: the host threads' thunks
        # The main thread's line ("python", "python3") holds the Python tracer's events, not ops.
        lines = [line for plane in data.planes for line in plane.lines if not line.name.startswith("python")]
    events = []
    for line in lines:
        events += _innermost([OpEvent(line.name, ev.name, ev.start_ns * 1e-9, ev.duration_ns * 1e-9)
                              for ev in line.events if not ev.name.startswith(_NOT_OPS)])
    return wall, events


def _family(name: str) -> str:
    return re.sub(r"[._]?\d+", "", name)


def print_summary(label: str, wall: float, events: list[OpEvent], top: int = 12) -> None:
    busy = sum(e.seconds for e in events)
    # Without device lines (the CPU, or a GPU profiler that recorded no kernels) the ops are host threads'.
    kind = "device-stream" if any(e.line.startswith("Stream") for e in events) else "host-thread"
    print(f"profile {label}: {len(events)} ops on {len({e.line for e in events})} {kind} lines; ops busy "
          f"{busy * 1e3:.1f} ms-of-line-time in a {wall * 1e3:.1f} ms call (busy / wall {busy / wall:.2f})")
    for title, key in (("op", lambda e: e.name), ("family", lambda e: _family(e.name))):
        total, count = collections.Counter(), collections.Counter()
        for e in events:
            total[key(e)] += e.seconds
            count[key(e)] += 1
        for name, seconds in total.most_common(top):
            print(f"profile   {title:6s} {seconds * 1e3:9.2f} ms-busy {count[name]:7d} x  {name[:90]}")

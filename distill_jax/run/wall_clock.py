"""Where a command's wall clock goes, stage by stage: ``RUN/wall_clock.jsonl``.

A training phase's compiled calls time themselves (``seconds`` in ``metrics.jsonl``). What lies
around them (building the environment and the initial state, compiling, checkpoint writes, the
held-out panel, the leak audit, the export, the plots) used to show only in the command's total.
Each stage of ``python -m distill_jax.train`` appends one row when it ends, so a command that is
cut off keeps the rows of the stages it finished::

    {"invocation": "2026-11-30T18:02:11.503112", "stage": "teacher", "seconds": 151.2}

A sub-stage is named after its stage (``teacher/compiled_calls``, ``teacher/checkpoints``) and its
seconds are part of that stage's. A resumed or later command on the same run directory appends
its rows under its own ``invocation``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import pathlib
import time
from typing import Any, Callable, Iterator

WALL_CLOCK_FILE = "wall_clock.jsonl"


class WallClock:
    """Appends ``{"invocation", "stage", "seconds"}`` rows to ``path``; keeps this command's in ``rows``.

    Args:
      path: the JSONL file (created on the first row).
      clock: seconds, monotonic (injectable for tests).
      invocation: this command's label (default: the local time the clock is made, ISO 8601 to the
        microsecond).
    """

    def __init__(self, path: pathlib.Path | str, clock: Callable[[], float] = time.perf_counter,
                 invocation: str | None = None):
        self.path = pathlib.Path(path)
        self.invocation = invocation or datetime.datetime.now().isoformat(timespec="microseconds")
        self.rows: list[dict[str, Any]] = []
        self._held: list[dict[str, Any]] = []
        self._clock = clock

    def record(self, stage: str, seconds: float) -> None:
        """Appends one row now (timed elsewhere, e.g. summed over many checkpoint writes)."""
        self.rows.append({"invocation": self.invocation, "stage": stage, "seconds": float(seconds)})
        with self.path.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in self._held + self.rows[-1:])
        self._held = []

    def hold(self, stage: str, seconds: float) -> None:
        """Records a row with the next one: a command that fails before any stage ends (a
        refused resume, say) leaves the file as it found it."""
        self._held.append({"invocation": self.invocation, "stage": stage, "seconds": float(seconds)})
        self.rows.append(self._held[-1])

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Times the ``with`` block as stage ``name``. A block that raises is not recorded: it did not finish."""
        start = self._clock()
        yield
        self.record(name, self._clock() - start)

    def summary(self) -> str:
        """One line of this command's rows: ``teacher 151 s (compiled calls 137 s, checkpoints 3.1 s), eval 60 s``."""
        parts: list[str] = []
        for row in self.rows:
            if "/" in row["stage"]:
                continue
            subs = [f"{r['stage'].split('/', 1)[1].replace('_', ' ')} {_seconds(r['seconds'])}"
                    for r in self.rows if r["stage"].startswith(row["stage"] + "/")]
            parts.append(f"{row['stage']} {_seconds(row['seconds'])}" + (f" ({', '.join(subs)})" if subs else ""))
        return ", ".join(parts)


def _seconds(seconds: float) -> str:
    """``151 s`` above 10 s, ``3.1 s`` below: short stages keep a digit."""
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"

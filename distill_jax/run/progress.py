"""Live progress of a training phase: a status line, optional TensorBoard, a JSONL log.

Both callables take the rows that :func:`distill_jax.loop.run_phase` hands to
its ``log_fn``: ``{"update": int, "env_steps": int, metric: [K] per seed, ...}``;
the last row of each compiled call also carries ``seconds`` and
``env_steps_per_second`` (scalars).

Example::

    progress = Progress("teacher", total_updates=100, tensorboard_dir=run_dir / "tb")
    log = JsonlLog(run_dir / "metrics.jsonl", "teacher")
    run_phase(..., log_fn=lambda row: (log(row), progress(row)))
    progress.close()
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time
from typing import Any, Callable, TextIO

BAR_WIDTH = 20
NON_METRIC_KEYS = ("phase", "update", "env_steps")


def mean_over_seeds(value: Any) -> float | None:
    """Mean of a per-seed list ``[K]`` (or a scalar) over its finite entries.

    Returns NaN when every entry is non-finite and ``None`` when ``value`` is
    not numeric (strings, nested dicts), so callers can skip it.
    """
    values = value if isinstance(value, list) else [value]
    try:
        floats = [float(v) for v in values if not isinstance(v, (bool, str))]
    except (TypeError, ValueError):
        return None
    if not floats or len(floats) != len(values):
        return None
    finite = [v for v in floats if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def format_duration(seconds: float) -> str:
    """``m:ss`` (minutes may exceed 59); ``--:--`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def _si(x: float) -> str:
    """Compact number: 42931 -> '42.9k'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{suffix}"
    return f"{x:.0f}"


class Progress:
    """Status of one training phase, fed one metrics row at a time.

    On a TTY one line is rewritten in place with ``\\r``; otherwise one plain line
    is printed per timed row (the last row of each compiled call), so logs
    written to files or CI consoles stay short and free of control characters.

    Args:
      phase: phase name, e.g. ``"teacher"`` or ``"distill"``; the TensorBoard tag prefix.
      total_updates: iterations per seed the phase will run (N in "update i/N").
      stream: where the status goes (default: ``sys.stdout`` at construction).
      tty: force TTY (``True``) or plain (``False``) mode; default ``stream.isatty()``.
      tensorboard_dir: if given and ``tensorboardX`` is importable, every numeric
        metric (mean over seeds) is written under ``"{phase}/{name}"`` at
        ``step=env_steps``; without tensorboardX this is silently skipped.
      clock: wall clock in seconds (injectable for tests).
      compile_seconds: seconds spent compiling so far (e.g. a
        :class:`~distill_jax.run.console.Console`'s ``compile_seconds``): left out of the ETA and of
        the steps/s of the call that compiled, which otherwise count compilation as training.
    """

    def __init__(
        self,
        phase: str,
        total_updates: int,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        tensorboard_dir: pathlib.Path | None = None,
        clock: Callable[[], float] = time.perf_counter,
        compile_seconds: Callable[[], float] | None = None,
    ) -> None:
        self.phase = phase
        self.total_updates = max(int(total_updates), 1)
        # Resolved now, not at import: redirections of sys.stdout (notebooks, tests) are honoured.
        stream = sys.stdout if stream is None else stream
        self.stream = stream
        if tty is None:
            isatty = getattr(stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self._clock = clock
        self._start = clock()
        self._compiled = compile_seconds or (lambda: 0.0)
        self._compiled_at_start = self._compiled_at_row = self._compiled()
        self._first_update: int | None = None  # updates done before us (a resumed run)
        self._steps_per_second = math.nan
        self._last_len = 0
        self._wrote = False
        self._closed = False
        self.eta_seconds = math.nan  # remaining wall time, s, as of the last row
        self._writer = None
        if tensorboard_dir is not None:
            try:
                from tensorboardX import SummaryWriter  # optional extra: distill_jax[tensorboard]
            except ImportError:
                pass
            else:
                pathlib.Path(tensorboard_dir).mkdir(parents=True, exist_ok=True)
                self._writer = SummaryWriter(logdir=str(tensorboard_dir))

    def __call__(self, row: dict[str, Any]) -> None:
        """Takes one metrics row; redraws (TTY) or prints (plain, timed rows only)."""
        if self._closed:
            return
        update = int(row.get("update", 0))
        if self._first_update is None:
            self._first_update = update - 1
        compiled = self._compiled()
        if "env_steps_per_second" in row:
            self._steps_per_second = float(row["env_steps_per_second"])
            seconds = float(row.get("seconds", math.nan))
            training = seconds - (compiled - self._compiled_at_row)  # the call's own time, compilation left out
            if math.isfinite(seconds) and training < seconds:
                self._steps_per_second *= seconds / training if training > 0.01 * seconds else math.nan
            self._compiled_at_row = compiled
        done = update - self._first_update
        remaining = self.total_updates - update
        working = self._clock() - self._start - (compiled - self._compiled_at_start)
        # Rate measured over this run's updates only, so a resumed run's ETA is not
        # flattered by the updates it restored from a checkpoint, nor slowed by compilation.
        self.eta_seconds = max(working, 0.0) * max(remaining, 0) / done if done > 0 else math.nan
        if self._writer is not None:
            self._write_tensorboard(row)
        if self.tty:
            line = self.status_line(row, bar=True)
            pad = " " * max(self._last_len - len(line), 0)  # erase leftovers of a longer previous line
            self.stream.write("\r" + line + pad)
            self._last_len = len(line)
            self._wrote = True
            self.stream.flush()
        elif "seconds" in row:
            self.stream.write(self.status_line(row, bar=False) + "\n")
            self.stream.flush()

    def status_line(self, row: dict[str, Any], *, bar: bool) -> str:
        """One-line summary of ``row`` (no newline, no control characters)."""
        update = int(row.get("update", 0))
        parts = [f"[{self.phase}]"]
        if bar:
            filled = min(BAR_WIDTH, max(0, round(BAR_WIDTH * update / self.total_updates)))
            parts.append("[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]")
        parts.append(f"update {update}/{self.total_updates}")
        if "env_steps" in row:
            parts.append(f"{_si(float(row['env_steps']))} env steps")
        sps = self._steps_per_second
        parts.append(f"{_si(sps) if math.isfinite(sps) else '-'} steps/s")
        for key, label in (("episode_return", "return"), ("loss", "loss")):
            if key in row and (value := mean_over_seeds(row[key])) is not None:
                parts.append(f"{label} {value:.4g}")
        parts.append(f"ETA {format_duration(self.eta_seconds)}")
        return " | ".join(parts)

    def _write_tensorboard(self, row: dict[str, Any]) -> None:
        step = int(row.get("env_steps", row.get("update", 0)))
        for key, value in row.items():
            if key in NON_METRIC_KEYS:
                continue
            mean = mean_over_seeds(value)
            if mean is not None:
                self._writer.add_scalar(f"{self.phase}/{key}", mean, global_step=step)

    def close(self) -> None:
        """Ends the status line (TTY) and flushes TensorBoard; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.tty and self._wrote:
            self.stream.write("\n")
            self.stream.flush()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonlLog:
    """Appends every row as one JSON line ``{"phase": phase, **row}`` to ``path``.

    The file is opened in append mode for each row, so a killed run keeps every
    line written so far and a resumed run continues the same file.
    """

    def __init__(self, path: pathlib.Path, phase: str) -> None:
        self.path = pathlib.Path(path)
        self.phase = phase
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, row: dict[str, Any]) -> None:
        line = json.dumps({"phase": self.phase, **row})
        with self.path.open("a") as f:
            f.write(line + "\n")

"""What the command prints for a person between progress rows: steps, compilations, heartbeats.

A run on a laptop spends long stretches where nothing is trained and nothing would be printed:
importing JAX, tracing and compiling each program, scoring the held-out panel, exporting. A
:class:`Console` says what is happening at each of these points:

* :meth:`Console.step` prints ``[teacher] training: PPO on cartpole, ...`` and makes it the
  current activity;
* compilations are reported from JAX's own monitoring events (the start and end of each
  program's tracing, lowering and XLA compilation, and the persistent cache's hits):
  ``[teacher] compiling 'run' ...`` once a program has been at it for :data:`ANNOUNCE_AFTER`
  seconds, then ``compiled 'run' in 23.1 s``, or ``loaded 'run' from the XLA cache in 3.2 s``;
* a heartbeat thread prints ``[eval] still compiling 'run' (0:24)`` or ``[eval] still running
  the leak audit (0:08)`` whenever the output has been silent for :data:`HEARTBEAT_AFTER`
  seconds (longer while a training phase runs a compiled call measured that long:
  :meth:`Console.expect_quiet`).

The console is also a text stream (``write``/``flush``/``isatty``), so a
:class:`~distill_jax.run.progress.Progress` draws its status line through it and the heartbeat
knows when the output last moved.

Example::

    with Console(sys.stdout) as console:
        console.step("teacher", "initialising the networks")
        state = init()            # compilations reported as they happen
        console.line("done")
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any, Callable, TextIO

HEARTBEAT_AFTER = 8.0  # s of silent output before a heartbeat line
ANNOUNCE_AFTER = 2.0  # s a program must take to prepare before it is named
REPORT_AT_LEAST = 1.0  # s: shorter compilations and cache loads are not reported when they end
# JAX's monitoring events (jax._src.dispatch): each fires a scalar (start time) when the stage
# starts and a duration when it ends, with the function's name.
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
CACHE_SAVED_EVENT = "/jax/compilation_cache/compile_time_saved_sec"
_STAGES = (TRACE_EVENT, LOWER_EVENT, COMPILE_EVENT)  # together: what a person calls compiling


def clock_text(seconds: float) -> str:
    """``m:ss``."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def program_name(name: str) -> str:
    """``jit(run)`` -> ``'run'``, the Python function a compiled program was traced from, quoted
    with a space before it; ``""`` for a lambda, whose name says nothing."""
    name = name[4:-1] if name.startswith("jit(") and name.endswith(")") else name
    return f" '{name}'" if name.isidentifier() else ""


class Console:
    """The CLI's human-readable output, with compilation reports and a heartbeat.

    Args:
      stream: where lines go (default: ``sys.stdout`` at construction).
      enabled: ``False`` makes every method a no-op (``--quiet``).
      tty: whether ``stream`` is a terminal (default: ``stream.isatty()``).
      heartbeat_after: seconds of silence before a heartbeat line.
      clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True, tty: bool | None = None,
                 heartbeat_after: float = HEARTBEAT_AFTER, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.enabled = enabled
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self.tty = tty
        self.heartbeat_after = heartbeat_after
        self._clock = clock
        self._lock = threading.RLock()
        self._last_output = clock()
        self._open_line = False  # a TTY status line without its newline yet
        self._label, self._what, self._since = "", "", clock()
        self._quiet_ok = 0.0  # silence expected now (a training chunk of known length)
        self._busy: tuple[str, float] | None = None  # (program, since): tracing, lowering or compiling now
        self._program: tuple[str, float] | None = None  # the program being prepared, since its trace began
        self._announced = False
        self._last_end = -math.inf
        self._cache_hit = False
        self._saved = math.nan
        self.compile_seconds = 0.0  # tracing + lowering + compiling, all programs so far
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = False

    # ------------------------------------------------------------ output
    def write(self, text: str) -> int:
        """Stream interface for :class:`~distill_jax.run.progress.Progress`."""
        if not self.enabled or not text:
            return len(text)
        with self._lock:
            self.stream.write(text)
            self._open_line = not text.endswith("\n")
            self._last_output = self._clock()
        return len(text)

    def flush(self) -> None:
        if self.enabled:
            self.stream.flush()

    def isatty(self) -> bool:
        return self.tty

    def line(self, text: str) -> None:
        """Prints ``text`` as a line of its own (ending an open status line first)."""
        if not self.enabled:
            return
        with self._lock:
            self.write(("\n" if self._open_line else "") + text + "\n")
            self.flush()

    def step(self, label: str, what: str, detail: str = "") -> None:
        """Prints ``[label] what: detail`` and makes ``what`` the current activity, which a
        heartbeat names (``[label] still what (m:ss)``)."""
        with self._lock:
            self._label, self._what, self._since = label, what, self._clock()
            self._quiet_ok = 0.0
        self.line(f"[{label}] {what}{': ' + detail if detail else ''}")

    def expect_quiet(self, seconds: float) -> None:
        """Silence of up to ``seconds`` is expected now (a training chunk measured that long)."""
        with self._lock:
            self._quiet_ok = max(0.0, seconds)

    # ------------------------------------------------------------ heartbeat
    def start(self) -> Console:
        """Starts listening to JAX's compilation events and the heartbeat thread."""
        if not self.enabled or self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._beat, name="distill_jax-heartbeat", daemon=True)
        self._thread.start()
        self._listen(True)  # imports JAX: the heartbeat already runs
        return self

    def close(self) -> None:
        """Stops the heartbeat and the listeners; ends an open status line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._listen(False)
        if self.enabled and self._open_line:
            self.write("\n")
            self.flush()

    def __enter__(self) -> Console:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _beat(self) -> None:
        while not self._stop.wait(0.25):
            self.tick()

    def tick(self) -> None:
        """One heartbeat check (the thread calls it four times a second; tests call it directly)."""
        with self._lock:
            now = self._clock()
            compiling = self._busy is not None and now - self._busy[1] >= ANNOUNCE_AFTER
            if compiling and not self._announced:
                self._announced = True
                self.line(f"[{self._label or 'setup'}] compiling{self._busy[0]} ...")
                return
            if now - self._last_output < max(self.heartbeat_after, self._quiet_ok):
                return
            if compiling:
                doing, since = f"compiling{self._busy[0]}", self._busy[1]
            else:
                doing, since = self._what or "working", self._since
            self.line(f"[{self._label or 'setup'}] still {doing} ({clock_text(now - since)})")

    # ------------------------------------------------------------ JAX's compilation events
    def _listen(self, on: bool) -> None:
        if on == self._listening:
            return
        from jax import monitoring

        pairs = ((monitoring.register_scalar_listener, monitoring.unregister_scalar_listener, self._on_start),
                 (monitoring.register_event_duration_secs_listener, monitoring.unregister_event_duration_listener,
                  self._on_duration),
                 (monitoring.register_event_listener, monitoring.unregister_event_listener, self._on_event))
        for register, unregister, callback in pairs:
            (register if on else unregister)(callback)
        self._listening = on

    def _on_start(self, event: str, value: float, **kwargs: Any) -> None:
        if event not in _STAGES:
            return
        name = program_name(str(kwargs.get("fun_name", "?")))
        with self._lock:
            now = self._clock()
            # A program's stages follow each other at once; a lowering long after its tracing
            # (jax.eval_shape traced it earlier) starts a new count.
            follows = self._program is not None and self._program[0] == name and now - self._last_end < 1.0
            if event == TRACE_EVENT or not follows:
                self._program, self._announced = (name, now), False
                self._cache_hit, self._saved = False, math.nan
            self._busy = (name, self._program[1])

    def _on_event(self, event: str, **kwargs: Any) -> None:
        if event == CACHE_HIT_EVENT:
            with self._lock:
                self._cache_hit = True

    def _on_duration(self, event: str, seconds: float, **kwargs: Any) -> None:
        if event == CACHE_SAVED_EVENT:
            with self._lock:
                self._saved = seconds
            return
        if event not in _STAGES:
            return
        with self._lock:
            self.compile_seconds += seconds
            self._busy, self._last_end = None, self._clock()
            if event != COMPILE_EVENT or self._program is None:
                return
            name, since = self._program
            total = self._clock() - since
            label = self._label or "setup"
            if self._cache_hit and (self._announced or total >= REPORT_AT_LEAST or self._saved >= REPORT_AT_LEAST):
                saved = f", skipping ~{self._saved:.0f} s of XLA compilation" if math.isfinite(self._saved) else ""
                self.line(f"[{label}] loaded{name} from the XLA cache in {total:.1f} s{saved}")
            elif not self._cache_hit and (self._announced or total >= REPORT_AT_LEAST):
                self.line(f"[{label}] compiled{name} in {total:.1f} s")
            self._program = None


__all__ = ["ANNOUNCE_AFTER", "HEARTBEAT_AFTER", "Console", "clock_text", "program_name"]

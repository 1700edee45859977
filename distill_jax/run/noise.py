"""Third-party output that says nothing about the run: silenced at its source, filtered otherwise.

What every command printed before this module existed (mujoco-mjx 3.17, orbax-checkpoint 0.12,
brax 0.14), and how each is kept out of the default output:

* ``Failed to import warp: ...`` and ``Failed to import mujoco_warp: ...``: plain ``print`` calls
  in ``mujoco/mjx/warp/__init__.py``, run once on the first import of ``mujoco.mjx`` when the
  optional ``warp`` package is absent (it is: MJX's JAX backend does not need it).
  :func:`import_mjx_quietly` imports ``mujoco.mjx`` first, with ``sys.stdout`` captured; the module
  is then cached, so no later import prints. Any other captured line is passed on.
* ``WARNING:absl:...``: orbax logs through absl's Python logger on routine restores and resumes
  ("Metadata file does not exist", "Given directory is read only", "Removing existing directory
  since it is not finalized"). The ``absl`` logger is raised to ERROR while the command runs.
* Brax's ``UserWarning`` that its pipelines "are not actively being maintained" (every Brax task's
  model load): filtered by its message.
* Reports that other libraries' threads write to ``sys.stderr``, e.g. TensorStore's "Event loop is
  closed" tracebacks after a failed checkpoint read, which can arrive after the failure itself
  was reported: :func:`silenced` passes on only what the main thread writes (the command's own
  lines; its progress and heartbeats go to stdout).
* XLA's C++ log lines while it compiles a program, written straight to file descriptor 2: the
  ``Very slow compile? If you want to file a bug ...`` banner once a compilation passes two minutes
  (the terrain quadruped's evaluation on 2 CPU cores), a box of asterisks around it. The console's
  heartbeat already says ``still compiling 'run' (2:05)``. :class:`QuietCompiles` raises the C++
  log threshold to FATAL from the start of each XLA compilation to its end (JAX's monitoring
  events) and puts it back after; what XLA logs while programs *run* (e.g. a collective that
  waits on another process) stays visible.

``--verbose`` turns all of this off. Nothing is changed at import time: the filters hold inside
the ``with`` block only.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

# JAX's monitoring event of XLA compiling one program: a scalar at its start, a duration at its end.
from distill_jax.run.console import COMPILE_EVENT

# Lines that the first import of mujoco.mjx prints when the optional warp package is absent.
WARP_LINE_PREFIXES = ("Failed to import warp:", "Failed to import mujoco_warp:")
# Python warnings filtered by message (a regular expression matched at the start of the message).
WARNING_MESSAGES = (r"Brax System, piplines and environments are not actively being",)
QUIET_LOGGERS = ("absl",)
CPP_FATAL = 3  # absl's severities: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL


def import_mjx_quietly() -> None:
    """Imports ``mujoco.mjx`` (if installed and not yet imported) without its warp lines."""
    if "mujoco.mjx" in sys.modules:
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        try:
            importlib.import_module("mujoco.mjx")
        except ImportError:  # no MuJoCo: the tasks that need it say so when they are built
            pass
    kept = [line for line in captured.getvalue().splitlines() if not line.startswith(WARP_LINE_PREFIXES)]
    if kept:
        print("\n".join(kept))


class MainThreadStderr:
    """``sys.stderr`` as the main thread sees it; what other threads write is dropped."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(text) if threading.current_thread() is threading.main_thread() else len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _cpp_log_threshold_setter() -> Any:
    """jaxlib's setter of the C++ (absl) log threshold, or ``None`` where this jaxlib has none."""
    try:
        from jax._src.lib import utils  # private: used only here, and only if present
    except ImportError:
        return None
    return getattr(utils, "absl_set_min_log_level", None)


def _threshold_from_environment() -> int:
    """The C++ log threshold a process starts with: ``TF_CPP_MIN_LOG_LEVEL`` (0, all, if unset)."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    return int(value) if value.isdigit() else 0


class QuietCompiles:
    """While XLA compiles a program, its C++ log lines below FATAL are dropped.

    Listens to JAX's start and end events of each XLA compilation; compilations may overlap (a
    depth count), and the threshold returns to ``TF_CPP_MIN_LOG_LEVEL``'s value when the last one
    ends and on :meth:`close`. A no-op where jaxlib has no threshold setter.
    """

    def __init__(self) -> None:
        self._set = _cpp_log_threshold_setter()
        self._normal = _threshold_from_environment()
        self._depth = 0
        self._lock = threading.Lock()
        self._listening = False

    def open(self) -> QuietCompiles:
        if self._set is not None and not self._listening:
            from jax import monitoring

            monitoring.register_scalar_listener(self._on_start)
            monitoring.register_event_duration_secs_listener(self._on_end)
            self._listening = True
        return self

    def close(self) -> None:
        if not self._listening:
            return
        from jax import monitoring

        monitoring.unregister_scalar_listener(self._on_start)
        monitoring.unregister_event_duration_listener(self._on_end)
        self._listening = False
        with self._lock:
            self._depth = 0
            self._set(self._normal)

    def _on_start(self, event: str, value: float, **kwargs: Any) -> None:
        if event == COMPILE_EVENT:
            with self._lock:
                self._depth += 1
                self._set(max(CPP_FATAL, self._normal))

    def _on_end(self, event: str, seconds: float, **kwargs: Any) -> None:
        if event == COMPILE_EVENT:
            with self._lock:
                self._depth = max(self._depth - 1, 0)
                if self._depth == 0:
                    self._set(self._normal)


@contextlib.contextmanager
def silenced(verbose: bool = False) -> Iterator[None]:
    """Inside the block: no absl warnings, no Brax deprecation warning, nothing other threads write
    to stderr, no XLA C++ log lines while a program compiles. Cheap: call :func:`import_mjx_quietly`
    too, once JAX may be imported.

    With ``verbose`` the block changes nothing. Logger levels, warning filters, ``sys.stderr`` and
    the C++ log threshold are restored on exit.
    """
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    stderr = sys.stderr
    with warnings.catch_warnings():
        for message in WARNING_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        sys.stderr = MainThreadStderr(stderr)
        compiles = QuietCompiles().open()
        try:
            yield
        finally:
            compiles.close()
            sys.stderr = stderr
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


__all__ = ["QUIET_LOGGERS", "WARNING_MESSAGES", "WARP_LINE_PREFIXES", "MainThreadStderr", "QuietCompiles",
           "import_mjx_quietly", "silenced"]

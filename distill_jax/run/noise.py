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

``--verbose`` turns all of this off. Nothing is changed at import time: the filters hold inside
the ``with`` block only.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

# Lines that the first import of mujoco.mjx prints when the optional warp package is absent.
WARP_LINE_PREFIXES = ("Failed to import warp:", "Failed to import mujoco_warp:")
# Python warnings filtered by message (a regular expression matched at the start of the message).
WARNING_MESSAGES = (r"Brax System, piplines and environments are not actively being",)
QUIET_LOGGERS = ("absl",)


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


@contextlib.contextmanager
def silenced(verbose: bool = False) -> Iterator[None]:
    """Inside the block: no absl warnings, no Brax deprecation warning, nothing other threads write
    to stderr. Cheap: call :func:`import_mjx_quietly` too, once JAX may be imported.

    With ``verbose`` the block changes nothing. Logger levels, warning filters and ``sys.stderr``
    are restored on exit.
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
        try:
            yield
        finally:
            sys.stderr = stderr
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


__all__ = ["QUIET_LOGGERS", "WARNING_MESSAGES", "WARP_LINE_PREFIXES", "MainThreadStderr", "import_mjx_quietly",
           "silenced"]

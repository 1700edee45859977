"""Third-party output that says nothing about the run: silenced at its source, filtered otherwise.

What every command printed before this module existed (mujoco-mjx 3.17, orbax-checkpoint 0.12,
brax 0.14), and how each is kept out of the default output:

* ``Failed to import warp: ...`` and ``Failed to import mujoco_warp: ...``: plain ``print`` calls
  in ``mujoco/mjx/warp/__init__.py``, run once on the first import of ``mujoco.mjx`` when the
  optional ``warp`` package is absent (it is: MJX's JAX backend does not need it).
  :func:`silenced` imports ``mujoco.mjx`` first, with ``sys.stdout`` captured; the module is then
  cached, so no later import prints. Any other captured line is passed on.
* ``WARNING:absl:...``: orbax logs through absl's Python logger on routine restores and resumes
  ("Metadata file does not exist", "Given directory is read only", "Removing existing directory
  since it is not finalized"). The ``absl`` logger is raised to ERROR while the command runs.
* Brax's ``UserWarning`` that its pipelines "are not actively being maintained" (every Brax task's
  model load): filtered by its message.

``--verbose`` turns all of this off. Nothing is changed at import time: the filters hold inside
the ``with`` block only.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator

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


@contextlib.contextmanager
def silenced(verbose: bool = False) -> Iterator[None]:
    """Inside the block: no warp lines, no absl warnings, no Brax deprecation warning.

    With ``verbose`` the block changes nothing. Logger levels and warning filters are restored
    on exit.
    """
    if verbose:
        yield
        return
    import_mjx_quietly()
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for message in WARNING_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


__all__ = ["QUIET_LOGGERS", "WARNING_MESSAGES", "WARP_LINE_PREFIXES", "import_mjx_quietly", "silenced"]

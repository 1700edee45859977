"""The command line's persistent XLA compilation cache.

Every ``python -m distill_jax.train`` compiles the same few programs: the teacher
update, the distillation update, the evaluation rollouts. A resume, a
re-evaluation or a second run of the same config compiles them again unless JAX
keeps them on disk. JAX's persistent cache keys each program by its HLO, the
jaxlib version, the device kind and the compiler options, so a cached program is
the one XLA would have compiled. Measured on 2 CPU cores, the smoke preset took
91-96 s with no cache and 38-41 s with a warm one; filling an empty cache cost 10-13 s
more than no cache, once per config and machine, of which 1-3 s per teacher call was
reproducible (``experiments/results/compile_cache_cpu.md``).

The CLI turns the cache on by default, in the user's cache directory. A cache the
user already set for JAX (``JAX_COMPILATION_CACHE_DIR``, or ``jax.config`` in a
notebook or a test session) is left as it is. The directory holds only compiled
programs, a few MB per config, and can be deleted at any time; JAX does not evict
entries on its own.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping

ENV_VAR = "DISTILL_JAX_XLA_CACHE"
OFF = "off"


class CacheDirError(ValueError):
    """The cache directory cannot be created or written; the message names it."""


def default_dir(environ: Mapping[str, str] | None = None) -> str:
    """``$DISTILL_JAX_XLA_CACHE``, else ``$XDG_CACHE_HOME/distill_jax/xla``, else ``~/.cache/distill_jax/xla``.

    ``DISTILL_JAX_XLA_CACHE=off`` turns the default off.
    """
    environ = os.environ if environ is None else environ
    if environ.get(ENV_VAR):
        return environ[ENV_VAR]
    base = environ.get("XDG_CACHE_HOME") or str(pathlib.Path("~/.cache").expanduser())
    return str(pathlib.Path(base) / "distill_jax" / "xla")


def enable(directory: str | os.PathLike[str]) -> str | None:
    """Points JAX's persistent compilation cache at ``directory`` unless JAX already has one.

    Call it before the first compilation: JAX opens its cache once per process.

    Args:
      directory: where compiled programs go (created if missing), or ``"off"``.

    Returns:
      The cache directory in force: the one JAX already had, else ``directory``;
      ``None`` when no cache is used.

    Raises:
      CacheDirError: ``directory`` cannot be created or written.
    """
    import jax  # here, not at module level: ``python -m distill_jax.train --help`` stays cheap

    current = jax.config.jax_compilation_cache_dir
    if current:
        return str(current)
    if str(directory) == OFF:
        return None
    path = pathlib.Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheDirError(f"XLA cache directory {path}: cannot be created ({e.strerror or e})") from e
    if not os.access(path, os.W_OK | os.X_OK):  # JAX would only warn on every write
        raise CacheDirError(f"XLA cache directory {path}: not writable")
    jax.config.update("jax_compilation_cache_dir", str(path))
    return str(path)


__all__ = ["ENV_VAR", "OFF", "CacheDirError", "default_dir", "enable"]

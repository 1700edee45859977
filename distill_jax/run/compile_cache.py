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
programs (2.5 MB for the smoke preset on CPU) and can be deleted at any time. Left
alone, JAX never evicts an entry, so every config and every jaxlib upgrade would add
to it for good; the CLI's directory is therefore capped at ``DEFAULT_MAX_BYTES``, the
least recently used programs going first (JAX's own LRU eviction, which needs the
``filelock`` package). ``JAX_COMPILATION_CACHE_MAX_SIZE`` (bytes, ``-1``: no cap)
overrides the cap.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import warnings
from collections.abc import Mapping

ENV_VAR = "DISTILL_JAX_XLA_CACHE"
OFF = "off"
# ~400 smoke-preset configs on CPU; the programs in use stay, since eviction is least-recent first.
DEFAULT_MAX_BYTES = 1 << 30
MAX_SIZE_ENV_VAR = "JAX_COMPILATION_CACHE_MAX_SIZE"  # JAX's own setting, in bytes
# JAX's LRU layout: program KEY is stored in KEY-cache, its last use in KEY-atime (time.time_ns(),
# 8 bytes little-endian). An entry without its -atime file makes every later write fail.
_PROGRAM_SUFFIX, _LAST_USE_SUFFIX = "-cache", "-atime"


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


def enable(directory: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
    """Points JAX's persistent compilation cache at ``directory`` unless JAX already has one.

    Call it before the first compilation: JAX opens its cache once per process.

    Args:
      directory: where compiled programs go (created if missing), or ``"off"``.
      max_bytes: the directory's cap, least recently used programs evicted first; ``-1``: no cap.
        A size the user gave JAX (``JAX_COMPILATION_CACHE_MAX_SIZE``) wins.

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
    _cap(path, max_bytes)
    return str(path)


def _cap(path: pathlib.Path, max_bytes: int) -> None:
    """Turns on JAX's LRU eviction for ``path`` at ``max_bytes`` unless the user chose a size."""
    import jax

    user_chose = MAX_SIZE_ENV_VAR in os.environ or jax.config.jax_compilation_cache_max_size != -1
    size = jax.config.jax_compilation_cache_max_size if user_chose else max_bytes
    if size == -1:
        return
    if not user_chose:
        if importlib.util.find_spec("filelock") is None:  # JAX refuses a cap without it
            warnings.warn(f"XLA cache directory {path}: not capped, JAX's eviction needs the filelock package",
                          stacklevel=3)
            return
        jax.config.update("jax_compilation_cache_max_size", size)
    _stamp_unused_since_written(path)


def _stamp_unused_since_written(path: pathlib.Path) -> None:
    """Gives each program written without a cap (an older distill_jax, or a cap of -1) the last-use
    record JAX's eviction reads: its file's modification time, so it is evicted before fresher ones."""
    for program in path.glob(f"*{_PROGRAM_SUFFIX}"):
        last_use = program.with_name(program.name.removesuffix(_PROGRAM_SUFFIX) + _LAST_USE_SUFFIX)
        try:
            if not last_use.exists():
                last_use.write_bytes(program.stat().st_mtime_ns.to_bytes(8, "little"))
        except FileNotFoundError:  # another capped process evicted it meanwhile; a stray record is ignored
            pass


__all__ = ["DEFAULT_MAX_BYTES", "ENV_VAR", "MAX_SIZE_ENV_VAR", "OFF", "CacheDirError", "default_dir", "enable"]

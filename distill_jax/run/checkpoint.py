"""Orbax checkpoints of a training phase, with the run's identity stored beside the arrays.

A checkpoint step directory holds two items:

* ``state`` — the whole phase state pytree (params, optimiser state, normaliser
  statistics, env state, RNG key, step counters), restored into the structure
  of a template so NamedTuples and flax dataclasses come back typed;
* ``meta`` — JSON: format version, phase, config, observation schema, env
  fingerprint and counters.

Restoring checks ``meta`` against what the caller is about to run *before* any
array is read: another format version, schema or env fingerprint fails with a
:class:`CheckpointMismatchError` that names the difference. So does a stored
state whose arrays differ from the template's (a missing or extra leaf, or
another shape or dtype), named leaf by leaf from orbax's tree metadata. A corrupt or
partial directory fails with a :class:`CheckpointError` naming the path; the
directory is never modified by a failed restore.

Each save also lists its arrays' files with their sizes (``files.json`` in the step directory), and
restoring compares them first: a file deleted or truncated since is named by
:class:`CheckpointDamagedError` (with the previous intact checkpoint, if any) before orbax reads
anything. Left to orbax, such damage surfaced as an error embedding a TensorStore repr, followed
by up to thousands of "Exception ignored ... Event loop is closed" lines from its aborted reads.

Saves are asynchronous in a single process: :meth:`Checkpointer.save` copies the state to host
memory (the training loop donates its device buffers to the next compiled call, which a background
write must not read) and returns while orbax writes the files; the next save, or ``close``, waits for
them and writes the file list. A process killed mid-write leaves that step incomplete, and restoring
takes the previous one. With several processes saves stay synchronous (every process writes its own
shards of global arrays, which a host copy would not keep).
"""

from __future__ import annotations

import asyncio
import gc
import json
import pathlib
import re
import sys
import threading
import time
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from distill_jax import multihost

# Bumped when what a stored array means changes while its name, shape and dtype stay the same
# (restore compares those itself, leaf by leaf). 2: the phase states dropped their env_steps counter.
FORMAT_VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, partial or corrupt; the message names the path."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to another run identity (format, phase, schema or env)."""


class CheckpointDamagedError(CheckpointError):
    """A complete checkpoint whose files changed after it was written (deleted, truncated, unreadable).

    Attributes:
      step_dir: the damaged checkpoint.
      previous: the newest earlier checkpoint of the same phase whose files are intact, or ``None``.
    """

    def __init__(self, step_dir: pathlib.Path, problem: str, previous: pathlib.Path | None = None):
        self.step_dir, self.previous = step_dir, previous
        aside = step_dir.parent.parent / f"{step_dir.parent.name}-{step_dir.name}.damaged"
        fallback = (f"; the previous checkpoint {previous} is intact, to continue from it: mv {step_dir} {aside}"
                    if previous is not None else "; no earlier intact checkpoint of this phase is left")
        super().__init__(f"{step_dir}: damaged checkpoint, {problem}{fallback}")


FILES_MANIFEST = "files.json"  # {relative path: size in bytes} of a step directory, written after each save


def _ocp():
    import orbax.checkpoint as ocp  # local: orbax is slow to import

    return ocp


def make_meta(phase: str, *, config: Mapping[str, Any], schema: Any, env_fingerprint: Mapping[str, Any]) -> dict:
    """The identity a checkpoint is stored with and checked against on restore.

    Args:
      phase: ``"teacher"`` or ``"distill"``.
      config: JSON-able run config (``config.to_dict(run_config)``).
      schema: the :class:`~distill_jax.schema.ObservationSchema` in force.
      env_fingerprint: ``env.fingerprint()``.
    """
    return {
        "format_version": FORMAT_VERSION,
        "phase": phase,
        "config": json.loads(json.dumps(config, default=str)),
        "schema": json.loads(schema.to_json()),
        "env_fingerprint": json.loads(json.dumps(env_fingerprint, default=str)),
    }


def json_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Human-readable paths where two JSON values differ (``a``: stored, ``b``: now)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in a:
                out.append(f"{where}: absent in checkpoint, {b[key]!r} now")
            elif key not in b:
                out.append(f"{where}: {a[key]!r} in checkpoint, absent now")
            else:
                out.extend(json_diff(a[key], b[key], where))
        return out
    return [] if a == b else [f"{path or 'value'}: {a!r} in checkpoint, {b!r} now"]


def check_meta(stored: Mapping[str, Any], expected: Mapping[str, Any], directory: pathlib.Path) -> None:
    """Raises :class:`CheckpointMismatchError` naming what differs between ``stored`` and ``expected``."""
    from distill_jax.schema import ObservationSchema

    version = stored.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"{directory}: checkpoint format version {version!r}; this distill_jax reads version {FORMAT_VERSION}"
        )
    if stored.get("phase") != expected["phase"]:
        raise CheckpointMismatchError(
            f"{directory}: holds a {stored.get('phase')!r} checkpoint, expected {expected['phase']!r}"
        )
    if stored.get("schema") != expected["schema"]:
        diff = ObservationSchema.from_dict(stored["schema"]).diff(ObservationSchema.from_dict(expected["schema"]))
        raise CheckpointMismatchError(
            f"{directory}: observation schema differs from the one in force: {diff or 'mask rule/thresholds'}; "
            f"details: {'; '.join(json_diff(stored['schema'], expected['schema'])[:5])}"
        )
    if stored.get("env_fingerprint") != expected["env_fingerprint"]:
        diffs = json_diff(stored.get("env_fingerprint"), expected["env_fingerprint"])
        raise CheckpointMismatchError(f"{directory}: env fingerprint differs: {'; '.join(diffs[:5])}")


def complete_steps(directory: pathlib.Path) -> list[int]:
    """Steps with a finished checkpoint under ``directory`` (ascending); partial saves are ignored."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        int(p.name) for p in directory.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "commit_success.txt").exists()
    )


def _storable(tree: Any) -> Any:
    """Orbax refuses zero-size arrays (e.g. MJX ``act`` of an actuator without state):
    they are stored as one-element placeholders and rebuilt from the template on restore. With
    several processes every leaf is made global (:func:`distill_jax.multihost.to_global`), so
    that orbax writes each array once, each process the shards it holds."""
    return multihost.to_global(jax.tree.map(lambda x: jax.numpy.zeros((1,), x.dtype) if x.size == 0 else x, tree))


def _storable_spec(abstract: Any) -> Any:
    def spec(s: Any) -> Any:
        if s.size:
            return s
        sharding = getattr(s, "sharding", None)
        if isinstance(sharding, NamedSharding):  # a (1,) placeholder cannot keep an env-axis partition
            sharding = NamedSharding(sharding.mesh, PartitionSpec())
        return jax.ShapeDtypeStruct((1,), s.dtype, sharding=sharding)

    return jax.tree.map(spec, abstract)


class Checkpointer:
    """Periodic, keep-N checkpoints of one phase under ``directory``; at most one save in flight.

    Args:
      directory: e.g. ``run_dir / "checkpoints" / "teacher"``.
      meta: :func:`make_meta` of the run being trained.
      keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: pathlib.Path | str, meta: Mapping[str, Any], *, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep={keep!r}: must be a positive integer")
        ocp = _ocp()
        self.directory = pathlib.Path(directory).resolve()
        self.meta = dict(meta)
        # One process: the write overlaps the next compiled call (30 synchronous writes were 17 s of a
        # 198 s cartpole_hidden run; in the background 0.7-1.4 s per phase). Several: synchronous, see
        # the module docstring.
        self.in_background = jax.process_count() == 1
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=self.in_background,
                                               create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        self._writing: int | None = None  # the step whose files are being written

    def save(self, step: int, state: Any, counters: Mapping[str, int] | None = None) -> None:
        """Writes ``state`` as checkpoint ``step`` (update count), with ``meta`` and ``counters``;
        in a single process returns once ``state`` is copied, the files still being written."""
        ocp = _ocp()
        self.wait()
        meta = {**self.meta, "step": int(step), "counters": dict(counters or {})}
        tree = _storable(state)
        if self.in_background:
            tree = jax.tree.map(np.array, tree)  # a host copy: the caller may donate the device buffers next
        self._manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                               meta=ocp.args.JsonSave(meta)))
        self._writing = int(step)
        if not self.in_background:
            self.wait()

    def wait(self) -> None:
        """Waits for the save in flight, if any, and lists its files (:func:`write_file_list`)."""
        if self._writing is None:
            return
        self._manager.wait_until_finished()
        if jax.process_index() == 0:  # with several processes, each wrote its shards; one lists them
            write_file_list(self.directory / str(self._writing))
        self._writing = None

    def close(self) -> None:
        """Finishes the save in flight, then releases orbax's manager."""
        try:
            self.wait()
        finally:
            self._manager.close()


def _file_sizes(step_dir: pathlib.Path) -> dict[str, int]:
    return {str(p.relative_to(step_dir)): p.stat().st_size for p in sorted((step_dir / "state").rglob("*"))
            if p.is_file()}


def write_file_list(step_dir: pathlib.Path) -> None:
    """Records every file of a finished checkpoint's arrays (its ``state/`` item) with its size
    (``files.json``), for :func:`verify`. The ``meta`` item is JSON, checked when it is read."""
    (step_dir / FILES_MANIFEST).write_text(json.dumps(_file_sizes(step_dir), indent=0, sort_keys=True))


def damage(step_dir: pathlib.Path) -> str | None:
    """What changed in ``step_dir`` since it was written (``None``: intact, or saved without a file list).

    Compares the files with ``files.json``: the first file deleted, shortened or grown is named.
    """
    listed = step_dir / FILES_MANIFEST
    if not listed.is_file():
        return None
    try:
        sizes = json.loads(listed.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"its file list {FILES_MANIFEST} is unreadable ({e})"
    for name, size in sizes.items():
        path = step_dir / name
        if not path.is_file():
            top = pathlib.PurePath(name).parts[0]
            if top != name and not (step_dir / top).exists():
                return f"{top}/ is missing ({sum(n.startswith(top + '/') for n in sizes)} files)"
            return f"{name} is missing"
        now = path.stat().st_size
        if now != size:
            return f"{name} is {'truncated' if now < size else 'longer than written'} ({now:,} of {size:,} bytes)"
    return None


def verify(directory: pathlib.Path | str, step: int | None = None) -> pathlib.Path:
    """The step directory of checkpoint ``step`` (default: newest complete), after checking its files.

    Raises:
      CheckpointDamagedError: a file deleted or resized since the save, naming it and the newest
        earlier checkpoint that is intact.
      CheckpointError: no such complete checkpoint.
    """
    directory = pathlib.Path(directory).resolve()
    step = _pick_step(directory, step)
    problem = damage(directory / str(step))
    if problem is None:
        return directory / str(step)
    earlier = [s for s in complete_steps(directory) if s < step and damage(directory / str(s)) is None]
    raise CheckpointDamagedError(directory / str(step), problem, directory / str(earlier[-1]) if earlier else None)


def read_meta(directory: pathlib.Path | str, step: int | None = None) -> dict[str, Any]:
    """The ``meta`` of checkpoint ``step`` (default: newest complete) without reading arrays."""
    directory = pathlib.Path(directory).resolve()
    step = _pick_step(directory, step)
    path = directory / str(step) / "meta" / "metadata"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{directory / str(step)}: unreadable checkpoint metadata ({e})") from e


def _pick_step(directory: pathlib.Path, step: int | None) -> int:
    steps = complete_steps(directory)
    if not steps:
        partial = [p.name for p in directory.iterdir()] if directory.is_dir() else []
        what = f"only partial/foreign entries {sorted(partial)}" if partial else "nothing"
        raise CheckpointError(f"{directory}: no complete checkpoint (found {what})")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise CheckpointError(f"{directory}: no complete checkpoint for step {step}; complete steps {steps}")
    return step


def restore(
    directory: pathlib.Path | str,
    template: Any,
    expected_meta: Mapping[str, Any],
    *,
    step: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint ``step`` (default: newest complete) into the structure of ``template``.

    Args:
      directory: the phase's checkpoint directory.
      template: a state pytree (or ``jax.eval_shape`` of one) with the expected
        structure, shapes and dtypes.
      expected_meta: :func:`make_meta` of the run being resumed; checked first.

    Returns:
      ``(state, meta)``.

    Raises:
      CheckpointMismatchError: another format version, phase, schema or env, or
        stored arrays whose names, shapes or dtypes differ from ``template``'s.
      CheckpointError: missing, partial or corrupt directory.
    """
    ocp = _ocp()
    directory = pathlib.Path(directory).resolve()
    step = int(verify(directory, step).name)
    meta = read_meta(directory, step)
    check_meta(meta, expected_meta, directory / str(step))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    if jax.process_count() > 1:  # every process reads every array whole, then keeps it host-local
        abstract = multihost.replicated_specs(abstract)
    else:  # whole on this device, whatever devices wrote it (another count, another process layout)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda s: s if getattr(s, "sharding", None) is not None else
                                jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)
    _check_stored_arrays(directory / str(step), _storable_spec(abstract))
    manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False, read_only=True), item_names=("state", "meta")
    )
    try:
        restored, failure = _restore_quietly(
            manager, step, ocp.args.Composite(state=ocp.args.StandardRestore(_storable_spec(abstract))))
    finally:
        manager.close()
    if failure is not None:
        raise CheckpointError(f"{directory / str(step)}: damaged checkpoint, {failure}")
    # With several processes every process restored every array whole; gather keeps its own copy.
    state = jax.tree.map(lambda x, s: jax.numpy.zeros(s.shape, s.dtype) if s.size == 0 else x,
                         multihost.gather(restored.state), abstract)
    return state, meta


def read_failure(error: BaseException, limit: int = 300) -> str:
    """One line for a failed orbax read: the array and TensorStore's reason, without the repr of
    the TensorStore spec that orbax's own message embeds (``See full TensorStore details: <...>``)."""
    root, seen = error, {id(error)}
    while (cause := root.__cause__ or root.__context__) is not None and id(cause) not in seen:
        root = cause
        seen.add(id(root))
    text = " ".join(str(root).split()).split(" See full TensorStore details")[0]
    array = re.search(r'Error reading "([^"/]+)/[^"]*"(?: in OCDBT database at local file "[^"]*")?: (.*)', text)
    if array:
        return f"array {array.group(1)} is unreadable ({array.group(2)[:limit]})"
    return f"{type(root).__name__}: {text[:limit]}"


def _restore_quietly(manager: Any, step: int, args: Any) -> tuple[Any, str | None]:
    """``(restored, None)``, or ``(None, what failed)`` with the aftermath of the failure kept off the console.

    When one array cannot be read, orbax's ``asyncio`` loop closes while TensorStore is still
    completing the other reads: each then reports "Event loop is closed" from a TensorStore thread,
    and each abandoned coroutine an "Exception ignored" line when it is collected (measured: 1,024
    such lines from one process restoring damaged copies of a smoke run's teacher). Those reports
    name nothing that the returned failure does not; they are dropped while the reads drain and the
    coroutines are collected.
    """
    main = threading.main_thread()
    stderr, hook = sys.stderr, sys.unraisablehook
    dropped = [time.monotonic()]

    class MainThreadOnly:  # TensorStore's threads write their reports through sys.stderr
        def write(self, text: str) -> int:
            if threading.current_thread() is main:
                return stderr.write(text)
            dropped[0] = time.monotonic()
            return len(text)

        def __getattr__(self, name: str) -> Any:
            return getattr(stderr, name)

    def unraisable(report: Any) -> None:
        if not (asyncio.iscoroutine(report.object) or isinstance(report.exc_value, RuntimeError)):
            hook(report)

    sys.stderr, sys.unraisablehook = MainThreadOnly(), unraisable
    try:
        try:
            return manager.restore(step, args=args), None
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            failure = read_failure(e)
        # The other reads finish after the failure, on a loaded machine a second or more later: wait
        # for half a second without a report (at most 5 s). Reports later still are left to the
        # caller (the command line drops other threads' stderr throughout, distill_jax.run.noise).
        dropped[0] = failed = time.monotonic()
        while time.monotonic() < failed + 5.0 and time.monotonic() - dropped[0] < 0.5:
            time.sleep(0.05)
        gc.collect()  # the abandoned coroutines, while their reports are still dropped
        return None, failure
    finally:
        sys.stderr, sys.unraisablehook = stderr, hook


def _check_stored_arrays(step_dir: pathlib.Path, abstract: Any) -> None:
    """Compares the stored state's arrays (orbax's tree metadata: names, shapes, dtypes) with
    ``abstract`` before anything is read, so a state written by another version of distill_jax, or
    with another network or batch size, is refused by leaf name rather than as a corrupt file."""
    ocp = _ocp()
    if not (step_dir / "state").is_dir():  # orbax's own error for this is an AttributeError on None
        raise CheckpointError(f"{step_dir}: partial checkpoint, its state/ item (the arrays) is missing")
    try:
        with ocp.StandardCheckpointer() as reader:
            tree = reader.metadata(step_dir / "state").item_metadata.tree
        stored = {m.name: (tuple(m.shape), m.dtype) for m in jax.tree.leaves(tree)}
    except Exception as e:  # a missing or damaged state item: orbax raises many types
        raise CheckpointError(
            f"{step_dir}: damaged checkpoint, the list of stored arrays (state/_METADATA) is unreadable "
            f"({read_failure(e)})"
        ) from e
    leaves = jax.tree_util.tree_leaves_with_path(abstract)
    # keystr(simple, ".") spells a key path as orbax names the stored array: "params.actor.kernel", "tup.0".
    wanted = {jax.tree_util.keystr(path, simple=True, separator="."): (tuple(s.shape), s.dtype) for path, s in leaves}
    missing, extra = sorted(set(wanted) - set(stored)), sorted(set(stored) - set(wanted))
    if missing or extra:
        raise CheckpointMismatchError(
            f"{step_dir}: the stored state has other arrays than this distill_jax's state "
            f"(missing {_few(missing)}; extra {_few(extra)}): it was written by another version; "
            "restore it with that version or start a new run"
        )
    for name, (shape, dtype) in wanted.items():
        if stored[name] != (shape, dtype):
            got_shape, got_dtype = stored[name]
            raise CheckpointMismatchError(
                f"{step_dir}: {name} stored as {got_dtype}{list(got_shape)}, expected {dtype}{list(shape)} "
                "(another network, batch or seed count?)"
            )


def _few(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")

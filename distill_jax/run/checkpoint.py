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

Saves are synchronous: the training loop donates its state buffers to the next
compiled call, so an asynchronous save could read freed memory.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import jax

# Bumped when what a stored array means changes while its name, shape and dtype stay the same
# (restore compares those itself, leaf by leaf). 2: the phase states dropped their env_steps counter.
FORMAT_VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, partial or corrupt; the message names the path."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to another run identity (format, phase, schema or env)."""


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
    they are stored as one-element placeholders and rebuilt from the template on restore."""
    return jax.tree.map(lambda x: jax.numpy.zeros((1,), x.dtype) if x.size == 0 else x, tree)


def _storable_spec(abstract: Any) -> Any:
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct((1,), s.dtype, sharding=getattr(s, "sharding", None)) if s.size == 0 else s,
        abstract,
    )


class Checkpointer:
    """Periodic, keep-N checkpoints of one phase under ``directory``.

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
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def save(self, step: int, state: Any, counters: Mapping[str, int] | None = None) -> None:
        """Writes ``state`` as checkpoint ``step`` (update count), with ``meta`` and ``counters``."""
        ocp = _ocp()
        meta = {**self.meta, "step": int(step), "counters": dict(counters or {})}
        self._manager.save(
            int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(_storable(state)), meta=ocp.args.JsonSave(meta))
        )
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


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
    step = _pick_step(directory, step)
    meta = read_meta(directory, step)
    check_meta(meta, expected_meta, directory / str(step))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    _check_stored_arrays(directory / str(step), _storable_spec(abstract))
    manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False, read_only=True), item_names=("state", "meta")
    )
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_storable_spec(abstract)))
        )
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise CheckpointError(
            f"{directory / str(step)}: corrupt or incompatible checkpoint ({type(e).__name__}: {str(e)[:300]})"
        ) from e
    finally:
        manager.close()
    state = jax.tree.map(lambda x, s: jax.numpy.zeros(s.shape, s.dtype) if s.size == 0 else x, restored.state, abstract)
    return state, meta


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
            f"{step_dir}: unreadable state metadata ({type(e).__name__}: {str(e)[:300]})"
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

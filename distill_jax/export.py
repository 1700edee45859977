"""The deployable student as a self-contained artifact: StableHLO + arrays + schema.

:func:`export_student` serialises the student's *deterministic* inference
function with ``jax.export`` (batch size symbolic) and writes, in one
directory:

* ``student.stablehlo`` — the serialised program ``(variables, carry, obs,
  first) -> (carry, action)``; normalisation is inside it;
* ``variables.npz`` — the parameters and normaliser statistics it takes,
  keyed by pytree path (plain arrays, loaded with ``allow_pickle=False``);
* ``schema.json`` — the student's observation schema (what it may read);
* ``manifest.json`` — format version, input specs, action size, memory size.

:class:`DeployedStudent` loads that directory without pickle and without the
training code, admits an observation dict only through the schema's student
guard (a privileged field is rejected by name), checks shapes, dtypes and
finiteness, and returns the same actions as the in-process student.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import normalization
from distill_jax.schema import ObservationSchema, SchemaError

EXPORT_FORMAT_VERSION = 1
PROGRAM_FILE, VARIABLES_FILE, SCHEMA_FILE, MANIFEST_FILE = (
    "student.stablehlo", "variables.npz", "schema.json", "manifest.json"
)


class ExportError(RuntimeError):
    """An export directory is missing files or was written by another format version."""


def _flatten(tree: Any) -> tuple[dict[str, np.ndarray], Any]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}, treedef


def inference_fn(student: Any, treedef: Any, names: list[str]):
    """``(flat_variables, carry, obs, first) -> (carry, action)`` with ``action = tanh(loc)``.

    ``names`` lists the paths in ``treedef``'s leaf order. ``flat_variables`` maps pytree paths to arrays (``{"params", "obs_stats"}``
    flattened) so the exported signature holds only dicts, arrays and ``None``.
    """

    def infer(flat_variables, carry, obs, first):
        variables = jax.tree_util.tree_unflatten(treedef, [flat_variables[n] for n in names])
        obs = student.schema.guard_student(obs)
        if variables["obs_stats"] is not None:
            obs = normalization.normalize(variables["obs_stats"], obs)
        carry, dist = student.step(variables["params"], carry, obs, first)
        return carry, jnp.tanh(dist.loc)

    return infer


def export_student(directory: pathlib.Path | str, student: Any, params: Any, obs_stats: Any) -> pathlib.Path:
    """Writes the deployable student (one seed's ``params``/``obs_stats``) to ``directory``.

    Returns:
      ``directory``.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat, treedef = _flatten({"params": params, "obs_stats": obs_stats})
    names = list(flat)  # pytree flatten order, which unflatten expects
    specs = student.schema.field_specs
    (batch,) = jax.export.symbolic_shape("batch")
    obs_spec = {
        name: jax.ShapeDtypeStruct((batch, *specs[name].shape), jnp.dtype(specs[name].dtype))
        for name in student.schema.student_obs
    }
    carry = student.initial_carry(1)
    carry_spec = jax.tree.map(lambda c: jax.ShapeDtypeStruct((batch, *c.shape[1:]), c.dtype), carry)
    var_spec = {n: jax.ShapeDtypeStruct(flat[n].shape, flat[n].dtype) for n in names}
    exported = jax.export.export(jax.jit(inference_fn(student, treedef, names)))(
        var_spec, carry_spec, obs_spec, jax.ShapeDtypeStruct((batch,), jnp.float32)
    )
    (directory / PROGRAM_FILE).write_bytes(exported.serialize())
    np.savez(directory / VARIABLES_FILE, **flat)
    (directory / SCHEMA_FILE).write_text(student.schema.to_json())
    manifest = {
        "format_version": EXPORT_FORMAT_VERSION,
        "kind": student.kind,
        "inputs": {n: {"shape": list(specs[n].shape), "dtype": specs[n].dtype} for n in student.schema.student_obs},
        "carry_size": None if carry is None else int(np.prod(carry.shape[1:])),
        "action_size": int(exported.out_avals[-1].shape[-1]),  # flat outputs: carry leaves, then action
        "action_range": [-1.0, 1.0],
        "variables": names,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return directory


class DeployedStudent:
    """The exported student, loaded without pickle or training code.

    Use ``actions = student(obs)`` for a feed-forward student, or
    ``carry, actions = student.step(carry, obs, first)`` with
    ``carry = student.initial_carry(batch)`` for a recurrent one. ``obs`` maps
    each deployable field to an array ``[batch, *shape]`` (or ``[*shape]`` for
    one observation).
    """

    def __init__(self, directory: pathlib.Path | str):
        self.directory = pathlib.Path(directory)
        missing = [f for f in (PROGRAM_FILE, VARIABLES_FILE, SCHEMA_FILE, MANIFEST_FILE)
                   if not (self.directory / f).is_file()]
        if missing:
            raise ExportError(f"{self.directory}: not an exported student, missing {missing}")
        self.manifest = json.loads((self.directory / MANIFEST_FILE).read_text())
        version = self.manifest.get("format_version")
        if version != EXPORT_FORMAT_VERSION:
            raise ExportError(f"{self.directory}: export format {version!r}, this loader reads {EXPORT_FORMAT_VERSION}")
        self.schema = ObservationSchema.from_json((self.directory / SCHEMA_FILE).read_text())
        with np.load(self.directory / VARIABLES_FILE, allow_pickle=False) as data:
            self.variables = {name: jnp.asarray(data[name]) for name in self.manifest["variables"]}
        self._exported = jax.export.deserialize(bytearray((self.directory / PROGRAM_FILE).read_bytes()))
        self.action_size = int(self.manifest["action_size"])
        self.recurrent = self.manifest["carry_size"] is not None

    def initial_carry(self, batch: int) -> jax.Array | None:
        """Zero memory ``[batch, carry_size]`` (``None`` for a feed-forward student)."""
        return None if not self.recurrent else jnp.zeros((batch, self.manifest["carry_size"]), jnp.float32)

    def check_obs(self, obs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        """Validates ``obs``; returns it batched and whether a batch axis was added.

        Raises:
          PrivilegedFieldError / UnknownFieldError / MissingFieldError: by field name.
          SchemaError: wrong shape, dtype, or non-finite values, naming the field.
        """
        if not isinstance(obs, Mapping):
            raise SchemaError(f"observation must be a dict of named fields, got {type(obs).__name__}")
        obs = self.schema.guard_student(obs)
        arrays, batch_shapes = {}, set()
        for name, spec in self.manifest["inputs"].items():
            value = obs[name]
            # A list or tuple of Python numbers is taken as the field's dtype (NumPy would read float64).
            value = np.asarray(value, spec["dtype"]) if isinstance(value, (list, tuple)) else np.asarray(value)
            shape, rank = tuple(spec["shape"]), len(spec["shape"])
            if value.dtype != np.dtype(spec["dtype"]):
                raise SchemaError(f"field {name!r} has dtype {value.dtype}; expected {spec['dtype']}")
            if value.shape[value.ndim - rank:] != shape or value.ndim not in (rank, rank + 1):
                raise SchemaError(
                    f"field {name!r} has shape {value.shape}; expected {shape} or (batch, {', '.join(map(str, shape))})"
                )
            if not np.isfinite(value).all():
                raise SchemaError(f"field {name!r} contains NaN or Inf")
            arrays[name] = value
            batch_shapes.add(value.shape[: value.ndim - rank])
        if len(batch_shapes) > 1:
            raise SchemaError(f"fields disagree on the batch shape: {sorted(batch_shapes)}")
        unbatched = batch_shapes == {()}
        if unbatched:
            arrays = {n: v[None] for n, v in arrays.items()}
        return arrays, unbatched

    def step(self, carry: Any, obs: Mapping[str, Any], first: Any = None) -> tuple[Any, jax.Array]:
        """One control step: ``(carry, actions [batch, action_size])``.

        ``first`` (``[batch]``, 1.0 where an episode starts) resets a recurrent
        student's memory; default all ones when ``carry`` is ``None``.
        """
        arrays, unbatched = self.check_obs(obs)
        batch = next(iter(arrays.values())).shape[0]
        if self.recurrent and carry is None:
            carry = self.initial_carry(batch)
            first = np.ones((batch,), np.float32) if first is None else first
        first = np.zeros((batch,), np.float32) if first is None else np.asarray(first, np.float32).reshape(batch)
        carry, actions = self._exported.call(self.variables, carry, arrays, first)
        return carry, (actions[0] if unbatched else actions)

    def __call__(self, obs: Mapping[str, Any]) -> jax.Array:
        """Deterministic actions in [-1, 1] for a feed-forward student.

        Raises:
          TypeError: the student is recurrent; without its carry every call would start from
            empty memory (use :meth:`step`).
        """
        if self.recurrent:
            self.check_obs(obs)  # a privileged or malformed field is named first
            raise TypeError(
                f"this student is recurrent ({self.manifest['kind']}, memory of {self.manifest['carry_size']} numbers): "
                "student(obs) would start from empty memory at every call; keep its memory with "
                "carry = student.initial_carry(batch), then carry, actions = student.step(carry, obs, first)")
        return self.step(None, obs)[1]


def load_student(directory: pathlib.Path | str) -> DeployedStudent:
    """Loads an exported student (see :class:`DeployedStudent`)."""
    return DeployedStudent(directory)

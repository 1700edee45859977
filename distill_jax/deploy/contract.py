"""The deployment contract: what ``export/student.onnx`` reads, returns and assumes.

A deployer who holds only the ``.onnx`` file must be able to build the observations the
student was trained on. Everything needed travels inside the model, as ONNX
``metadata_props`` (string key -> string value; here each value is JSON), one key per
:class:`DeployContract` field, prefixed ``distill_jax.``:

=======================  ====================================================================
key                      content
=======================  ====================================================================
``format_version``       :data:`CONTRACT_VERSION`
``env``                  ``name``, ``version``, ``model_hash`` (MJCF sha256[:16]), ``episode_length``
``kind``                 ``"mlp"`` or ``"gru"``
``inputs``               the student fields in ONNX input order: ``name``, ``shape`` (no batch
                         axis), ``dtype``, ``meaning`` (units, frame)
``privileged_fields``    fields the student must never read (teacher-only, critic-only)
``action``               ``output`` name, ``size``, ``range``, how it is computed
                         (``tanh(mean)``), ``to_ctrl`` (the rule mapping it to MuJoCo ``ctrl``),
                         ``joint_names`` (actuated joints in action order) and, for
                         position-servoed robots, ``default_pose`` and ``action_scale``
``carry``                ``null`` for a feed-forward student; else the recurrent state's
                         ``input``/``output`` names, ``shape`` and how to initialise it
``history``              ``null``, or the ``history`` field's layout: ``length`` rows, oldest
                         first, each the listed fields (flattened, ``size`` numbers each) then
                         the action that led to that step; how rows are filled at reset
``noise``                per-field Gaussian sensor noise std the student was trained with
``latency``              ``null``, or the actuation delay range in control steps
``control``              ``period_s`` (= ``physics_timestep_s`` x ``n_substeps``)
``normalizer``           whether the observation normaliser is inside the graph (``folded``)
                         and its ``clip`` / ``eps``
=======================  ====================================================================

This module imports neither JAX nor ONNX: ONNX Runtime hands the properties over as a plain
dict (``session.get_modelmeta().custom_metadata_map``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

CONTRACT_VERSION = 1
ONNX_FILE = "student.onnx"
ACTION_OUTPUT = "action"
CARRY_INPUT, CARRY_OUTPUT = "carry", "carry_out"
PROP_PREFIX = "distill_jax."


class ContractError(ValueError):
    """An ONNX model lacks the deployment contract, or holds one of another format version."""


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples -> lists), so a contract equals its round trip."""
    return json.loads(json.dumps(value))


@dataclasses.dataclass(frozen=True)
class DeployContract:
    """The exported student's interface (see the module docstring for each field)."""

    env: dict[str, Any]
    kind: str
    inputs: tuple[dict[str, Any], ...]
    privileged_fields: tuple[str, ...]
    action: dict[str, Any]
    carry: dict[str, Any] | None
    history: dict[str, Any] | None
    noise: dict[str, Any]
    latency: dict[str, Any] | None
    control: dict[str, Any]
    normalizer: dict[str, Any]
    format_version: int = CONTRACT_VERSION

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("inputs", "privileged_fields"):
                value = tuple(_plain(list(value)))
            elif isinstance(value, Mapping):
                value = _plain(dict(value))
            object.__setattr__(self, field.name, value)
        if self.kind not in ("mlp", "gru"):
            raise ContractError(f"contract kind must be 'mlp' or 'gru', got {self.kind!r}")
        if (self.carry is None) != (self.kind == "mlp"):
            raise ContractError(f"a {self.kind} student {'needs' if self.kind == 'gru' else 'has no'} carry")
        clash = {CARRY_INPUT, CARRY_OUTPUT, ACTION_OUTPUT} & set(self.input_names)
        if clash:
            raise ContractError(f"observation field(s) {sorted(clash)} collide with the graph's reserved names")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The student fields, in the order the graph declares them."""
        return tuple(spec["name"] for spec in self.inputs)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{field: per-step shape}`` (no batch axis)."""
        return {spec["name"]: tuple(spec["shape"]) for spec in self.inputs}

    @property
    def recurrent(self) -> bool:
        return self.carry is not None

    def to_metadata_props(self) -> dict[str, str]:
        """``{"distill_jax.<field>": json}`` for ``onnx.helper.set_model_props``."""
        return {PROP_PREFIX + f.name: json.dumps(getattr(self, f.name), sort_keys=True)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_metadata_props(cls, props: Mapping[str, str]) -> "DeployContract":
        """The contract stored by :meth:`to_metadata_props`.

        Raises:
          ContractError: a key is missing (the model was not exported by distill_jax) or the
            format version differs from :data:`CONTRACT_VERSION`.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [PROP_PREFIX + n for n in names if PROP_PREFIX + n not in props]
        if missing:
            raise ContractError(f"the ONNX model carries no distill_jax deployment contract (missing {missing})")
        values = {n: json.loads(props[PROP_PREFIX + n]) for n in names}
        if values["format_version"] != CONTRACT_VERSION:
            raise ContractError(f"deployment contract format {values['format_version']!r}; "
                                f"this reader understands {CONTRACT_VERSION}")
        return cls(**values)

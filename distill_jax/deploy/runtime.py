"""The exported ONNX student behind a guard: :class:`OnnxStudent` (NumPy + ONNX Runtime, no JAX).

Usage::

    student = OnnxStudent("RUN/export/student.onnx")
    carry = student.initial_carry(1)               # None for a feed-forward student
    carry, action = student.step(carry, obs)       # obs: {field: [*shape] or [batch, *shape]}

At an episode's first step pass ``student.initial_carry(batch)`` (zeros) again. The graph
itself refuses a call without ``carry`` (it is a required input); :meth:`OnnxStudent.step`
refuses it first, with a sentence saying what to pass.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from distill_jax.deploy.contract import ACTION_OUTPUT, CARRY_INPUT, CARRY_OUTPUT, DeployContract


class DeployInputError(ValueError):
    """An observation or carry the exported student cannot take (named in the message)."""


def import_onnxruntime():
    """The ``onnxruntime`` module, or an ImportError saying which extra installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("onnxruntime is not installed; pip install 'distill_jax[deploy]' "
                          "(or onnxruntime) to run the exported student") from None
    return onnxruntime


def open_session(path: pathlib.Path | str, threads: int = 1):
    """An ONNX Runtime CPU session on ``path`` using ``threads`` threads (1: one core, no thread pool)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxStudent:
    """``export/student.onnx`` with its :class:`DeployContract` and input checks.

    Attributes:
      contract: the deployment contract read from the model's metadata.
      session: the ONNX Runtime session (single-threaded by default).
    """

    def __init__(self, path: pathlib.Path | str, threads: int = 1):
        self.path = pathlib.Path(path)
        self.session = open_session(self.path, threads)
        self.contract = DeployContract.from_metadata_props(self.session.get_modelmeta().custom_metadata_map)
        self.action_size = int(self.contract.action["size"])

    @property
    def recurrent(self) -> bool:
        return self.contract.recurrent

    def initial_carry(self, batch: int) -> np.ndarray | None:
        """Zero memory ``[batch, *carry_shape]`` (the state at an episode start); ``None`` without memory."""
        if not self.recurrent:
            return None
        return np.zeros((batch, *self.contract.carry["shape"]), np.float32)

    def check_obs(self, obs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        """``obs`` as float32 ``[batch, *shape]`` arrays, and whether a batch axis was added.

        Raises:
          DeployInputError: a privileged, unknown or missing field, a wrong shape, a
            non-finite value (each named), or fields that disagree on the batch size.
        """
        if not isinstance(obs, Mapping):
            raise DeployInputError(f"observation must be a dict of named fields, got {type(obs).__name__}")
        names = self.contract.input_names
        privileged = [n for n in obs if n in self.contract.privileged_fields]
        if privileged:
            raise DeployInputError(f"privileged field(s) {privileged} passed to the deployed student; "
                                   f"it reads only {list(names)}")
        unknown = [n for n in obs if n not in names]
        missing = [n for n in names if n not in obs]
        if unknown or missing:
            raise DeployInputError(f"the deployed student reads exactly {list(names)}; "
                                   f"unknown {unknown}, missing {missing}")
        arrays, batches = {}, set()
        for name, shape in self.contract.input_shapes.items():
            value = np.asarray(obs[name], np.float32)
            if value.shape[value.ndim - len(shape):] != shape or value.ndim not in (len(shape), len(shape) + 1):
                raise DeployInputError(f"field {name!r} has shape {value.shape}; expected {shape} or (batch, *{shape})")
            if not np.isfinite(value).all():
                raise DeployInputError(f"field {name!r} contains NaN or Inf")
            arrays[name] = value
            batches.add(value.shape[0] if value.ndim > len(shape) else None)
        if len(batches) > 1:
            raise DeployInputError(f"fields disagree on the batch size: {sorted(batches, key=str)}")
        unbatched = batches == {None}
        if unbatched:
            arrays = {n: v[None] for n, v in arrays.items()}
        return arrays, unbatched

    def step(self, carry: np.ndarray | None, obs: Mapping[str, Any]) -> tuple[np.ndarray | None, np.ndarray]:
        """One control step: ``(carry, action)`` with ``action`` ``[batch, A]`` (``[A]`` for one observation).

        Raises:
          DeployInputError: see :meth:`check_obs`; a recurrent student given no (or a
            wrongly shaped) ``carry``, or a feed-forward one given a carry.
        """
        arrays, unbatched = self.check_obs(obs)
        batch = next(iter(arrays.values())).shape[0]
        if self.recurrent:
            expected = (batch, *self.contract.carry["shape"])
            if carry is None:
                raise DeployInputError(
                    f"this recurrent ({self.contract.kind}) student needs its carry {list(expected)}: pass "
                    f"initial_carry({batch}) (zeros) at an episode start and the returned carry afterwards")
            carry = np.asarray(carry, np.float32)
            if carry.shape != expected:
                raise DeployInputError(f"carry has shape {carry.shape}; expected {expected}")
            arrays[CARRY_INPUT] = carry
        elif carry is not None:
            raise DeployInputError("this feed-forward student keeps no carry; pass None")
        wanted = [ACTION_OUTPUT] + ([CARRY_OUTPUT] if self.recurrent else [])
        results = self.session.run(wanted, arrays)
        action = results[0][0] if unbatched else results[0]
        return (results[1] if self.recurrent else None), action

    def actions_over(self, obs_seq: Mapping[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        """Actions ``[T, B, A]`` over a time-major batch ``{field: [T, B, *shape]}``, stepping the carry and
        zeroing it where ``first`` ``[T, B]`` is 1 (as the in-process student resets its memory)."""
        first = np.asarray(first, np.float32)
        carry, actions = self.initial_carry(first.shape[1]), []
        for t in range(first.shape[0]):
            if carry is not None:
                carry = carry * (1.0 - first[t])[:, None]
            carry, action = self.step(carry, {name: value[t] for name, value in obs_seq.items()})
            actions.append(action)
        return np.stack(actions)

    def __call__(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Actions of a feed-forward student (a recurrent one must go through :meth:`step`)."""
        return self.step(None, obs)[1]

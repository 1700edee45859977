"""The student's observations rebuilt from the deployment contract alone (no JAX, no env code).

Training wraps a task as ``task -> randomisation -> [latency] -> sensor noise -> history``
(:mod:`distill_jax.envs.wrappers`). On a robot, or in another simulator, the task's own
fields come from sensors; what the wrappers added is re-created here from the contract's
``noise``, ``latency`` and ``history`` entries:

* :class:`ActionDelay` — the command of ``d`` control steps ago reaches the actuators, ``d``
  uniform in ``[min_delay, max_delay]`` per episode (zeros before the first command);
* :class:`ObservationBuilder` — Gaussian noise on the listed fields (also at the reset), then
  the ``history`` field: rows oldest first, each the (noisy) listed fields flattened and the
  commanded action clipped to [-1, 1]; at an episode start filled as the contract's ``fill``
  says. Its output holds exactly the contract's input fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from distill_jax.deploy.contract import DeployContract


class ActionDelay:
    """Actuation latency as the contract's ``latency`` entry declares (identity when it is ``None``)."""

    def __init__(self, latency: Mapping[str, Any] | None, action_size: int):
        self.min_delay = int(latency["min_delay"]) if latency else 0
        self.max_delay = int(latency["max_delay"]) if latency else 0
        self.action_size = action_size
        self.delay = 0
        self.buffer = np.zeros((self.max_delay, action_size))

    def reset(self, rng: np.random.Generator) -> None:
        """Draws this episode's delay and clears the command buffer."""
        self.delay = int(rng.integers(self.min_delay, self.max_delay + 1)) if self.max_delay else 0
        self.buffer = np.zeros((self.max_delay, self.action_size))

    def __call__(self, command: np.ndarray) -> np.ndarray:
        """The action applied now, given this step's ``command`` ``[A]``."""
        if not self.max_delay:
            return np.asarray(command, np.float64)
        rows = np.concatenate([self.buffer, np.reshape(command, (1, -1))])  # row k: command of max_delay - k steps ago
        self.buffer = rows[1:]
        return rows[self.max_delay - self.delay]


class ObservationBuilder:
    """Turns a task's noise-free fields into the student's inputs, per the contract.

    ``reset(task_obs)`` at an episode start, then ``step(task_obs, command)`` after each
    step, where ``command`` is the action the student sent (before any latency). Both return
    ``{field: float32 [*shape]}`` for exactly ``contract.input_names``.
    """

    def __init__(self, contract: DeployContract, rng: np.random.Generator):
        self.contract = contract
        self.rng = rng
        self.noise = {name: float(std) for name, std in contract.noise["std"].items()}
        self.history = contract.history
        self.rows: np.ndarray | None = None

    def _noisy(self, task_obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {name: np.asarray(value, np.float64) for name, value in task_obs.items()}
        for name, std in self.noise.items():
            out[name] = out[name] + std * self.rng.standard_normal(out[name].shape)
        return out

    def _row(self, obs: Mapping[str, np.ndarray], action: np.ndarray) -> np.ndarray:
        parts = []
        for entry in self.history["row"]:
            value = np.clip(action, -1.0, 1.0) if entry["name"] == "action" else obs[entry["name"]]
            parts.append(np.reshape(value, -1))
        return np.concatenate(parts)

    def _inputs(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.history is not None:
            obs[self.history["field"]] = self.rows
        shapes = self.contract.input_shapes
        return {name: np.asarray(obs[name], np.float32).reshape(shapes[name]) for name in self.contract.input_names}

    def reset(self, task_obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = self._noisy(task_obs)
        if self.history is not None:
            row = self._row(obs, np.zeros(self.contract.action["size"]))
            length = int(self.history["length"])
            if self.history["fill"] == "first":
                self.rows = np.tile(row, (length, 1))
            else:
                self.rows = np.zeros((length, row.size))
                self.rows[-1] = row
        return self._inputs(obs)

    def step(self, task_obs: Mapping[str, np.ndarray], command: np.ndarray) -> dict[str, np.ndarray]:
        obs = self._noisy(task_obs)
        if self.history is not None:
            self.rows = np.concatenate([self.rows[1:], self._row(obs, np.asarray(command, np.float64))[None]])
        return self._inputs(obs)

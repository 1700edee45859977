"""What every adapter from another library's MJX env to the distill_jax env contract shares.

A *foreign* env (a Brax ``Env``, a MuJoCo Playground ``MjxEnv``) offers
``reset(key) -> S``, ``step(S, action) -> S`` and ``action_size``, where ``S``
carries ``obs``, ``reward``, ``done`` and ``metrics``, and its physics reads
an ``mjx.Model`` from one attribute while it is being traced.
:class:`ForeignEnvAdapter` turns that into a single-instance :class:`Env`:

* ``S`` becomes ``EnvState.physics``; ``observe(S)`` names the observation fields;
* ``done`` -> ``terminated`` (foreign envs here carry no time limit: use
  :class:`~distill_jax.envs.wrappers.TimeLimit`); ``truncated`` is always 0;
* foreign metrics pass through, plus ``metrics["fall"] = done`` and
  ``metrics["success"] = 1 - done`` (read at an episode's last step: the
  episode survived);
* actions are clipped to [-1, 1] before the foreign ``step``;
* ``reset_with_model`` / ``step_with_model`` simulate any model of the nominal
  one's structure by swapping it into the foreign env for the duration of the
  trace (how Brax's own randomisation wrapper works), so
  :class:`~distill_jax.envs.wrappers.DomainRandomization` can wrap an adapter.

A subclass says only what differs: where the model lives (:meth:`model_slot`),
the host model (:attr:`mj_model`), the observation fields (:meth:`observe`,
:attr:`schema`) and its fingerprint entries (:meth:`fingerprint_extra`).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from distill_jax.envs.base import Env, EnvState


def model_hash(mj_model: mujoco.MjModel) -> str:
    """Hash of the compiled MuJoCo model (its binary MJB serialisation)."""
    buf = np.zeros(mujoco.mj_sizeModel(mj_model), np.uint8)
    mujoco.mj_saveModel(mj_model, None, buf)
    return hashlib.sha256(buf.tobytes()).hexdigest()[:16]


class ForeignEnvAdapter(Env):
    """A foreign env as a single-instance distill_jax env (see the module docstring).

    Args:
      foreign: the foreign env (``reset``, ``step``, ``action_size``).
      name: the env's name in fingerprints (e.g. ``"brax_ant"``); its reward
        term is recorded as ``f"{name}_reward"``.
      version: the simulator's version string.
    """

    def __init__(self, foreign: Any, name: str, version: str):
        self.foreign = foreign
        self.name = name
        self.version = version
        owner, attr = self.model_slot()
        # Kept apart from the slot, which holds another model while a randomised step is traced.
        self._nominal_model = getattr(owner, attr)

    # ------------------------------------------------------- what differs
    @abc.abstractmethod
    def model_slot(self) -> tuple[Any, str]:
        """``(env, attribute)``: the foreign env object whose ``reset``/``step`` are
        called, and the attribute it reads its ``mjx.Model`` from while traced."""

    @property
    @abc.abstractmethod
    def mj_model(self) -> mujoco.MjModel:
        """The host-side compiled model (for domain-randomisation targets and the hash)."""

    @abc.abstractmethod
    def observe(self, foreign_state: Any) -> dict[str, jax.Array]:
        """The named observation fields of a foreign state (float32, no batch axis)."""

    @abc.abstractmethod
    def fingerprint_extra(self) -> dict[str, Any]:
        """Fingerprint entries of this kind of adapter (at least ``reset_distribution``)."""

    # ------------------------------------------------------------ shared
    @property
    def mjx_model(self):
        """The nominal device model (a Brax ``System`` is an ``mjx.Model`` subclass)."""
        return self._nominal_model

    @property
    def action_size(self) -> int:
        return int(self.foreign.action_size)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "reward_terms": {f"{self.name}_reward": 1.0},
            "randomization": [],
            "model_hash": model_hash(self.mj_model),
            **self.fingerprint_extra(),
        }

    @contextlib.contextmanager
    def _using(self, model) -> Iterator[Any]:
        owner, attr = self.model_slot()
        old = getattr(owner, attr)
        setattr(owner, attr, model)
        try:
            yield owner
        finally:
            setattr(owner, attr, old)

    def _to_env_state(self, foreign_state: Any, rng: jax.Array, first: float) -> EnvState:
        done = jnp.asarray(foreign_state.done, jnp.float32)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in foreign_state.metrics.items()}
        metrics["fall"] = done
        metrics["success"] = 1.0 - done
        return EnvState(
            physics=foreign_state,
            obs=self.observe(foreign_state),
            reward=jnp.asarray(foreign_state.reward, jnp.float32),
            terminated=done,
            truncated=jnp.zeros((), jnp.float32),
            first=jnp.asarray(first, jnp.float32),
            rng=rng,
            info={},
            metrics=metrics,
        )

    def reset_with_model(self, key: jax.Array, model) -> EnvState:
        """Like ``reset`` but simulating ``model`` (same structure as :attr:`mjx_model`)."""
        rng, k_env = jax.random.split(key)
        with self._using(model) as env:
            foreign_state = env.reset(k_env)
        return self._to_env_state(foreign_state, rng, 1.0)

    def step_with_model(self, state: EnvState, action: jax.Array, model) -> EnvState:
        """Like ``step`` but simulating ``model``."""
        with self._using(model) as env:
            foreign_state = env.step(state.physics, jnp.clip(action, -1.0, 1.0))
        return self._to_env_state(foreign_state, state.rng, 0.0).replace(params=state.params, info=state.info)

    def reset(self, key: jax.Array) -> EnvState:
        return self.reset_with_model(key, self.mjx_model)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        return self.step_with_model(state, action, self.mjx_model)

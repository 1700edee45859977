"""Adapter from a MuJoCo Playground environment to the distill_jax env contract.

``PlaygroundEnvAdapter("Go1JoystickRoughTerrain")`` loads the env from
``mujoco_playground.registry``; that package is optional (the ``playground``
extra, ``pip install playground``) and imported only then.
``PlaygroundEnvAdapter(env)`` adapts an env object you built yourself and needs
no Playground install: anything with Playground's ``MjxEnv`` surface will do
(``reset(rng)``, ``step(state, action)``, ``action_size``, ``mj_model``, and the
nominal ``mjx.Model`` in ``_mjx_model``, where its physics reads it while
traced; the returned state carries ``obs``, ``reward``, ``done`` and ``metrics``).

Observations: a dict observation keeps its keys, with ``"state"`` renamed to
``"proprio"`` (deployable) and ``"privileged_state"`` to ``"privileged"``
(teacher-only); other keys are teacher-only. An array observation becomes
``{"proprio": obs}``. The mapping of ``done``, metrics and actions, and domain
randomisation by swapping ``_mjx_model`` during tracing, are
:mod:`distill_jax.envs.adapter_base`'s.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import mujoco

from distill_jax.envs.adapter_base import ForeignEnvAdapter
from distill_jax.envs.base import with_inferred_specs
from distill_jax.schema import ObservationSchema

_RENAME = {"state": "proprio", "privileged_state": "privileged"}
_INSTALL_HINT = (
    "PlaygroundEnvAdapter needs the optional package 'mujoco_playground' "
    "(the 'playground' extra: `pip install playground`) to load an env by name; "
    "an env object needs no install."
)


def _import_registry():
    try:
        from mujoco_playground import registry
    except ImportError as e:
        raise ImportError(f"{_INSTALL_HINT} Import failed with: {e}") from e
    return registry


class PlaygroundEnvAdapter(ForeignEnvAdapter):
    """A Playground env as a single-instance distill_jax env (see the module docstring).

    Args:
      env: a name accepted by ``mujoco_playground.registry.load``, or a
        Playground-style env object.
      config_overrides: passed to ``registry.load`` (only with a name).
      env_name: the name recorded in the fingerprint (``f"playground_{env_name}"``);
        defaults to ``env`` when it is a name, else to the object's class name.

    Raises:
      ImportError: ``env`` is a name and ``mujoco_playground`` is not installed.
      ValueError: ``config_overrides`` given with an env object.
    """

    def __init__(self, env: str | Any, config_overrides: dict[str, Any] | None = None, env_name: str | None = None):
        self.config_overrides = dict(config_overrides or {})
        if isinstance(env, str):
            self.pg_env = _import_registry().load(env, config_overrides=self.config_overrides or None)
            self.env_name = env_name or env
        else:
            if self.config_overrides:
                raise ValueError("config_overrides apply only to an env loaded by name; configure the env object itself")
            self.pg_env = env
            self.env_name = env_name or type(env).__name__
        super().__init__(self.pg_env, f"playground_{self.env_name}", "playground")

    def model_slot(self) -> tuple[Any, str]:
        return self.pg_env, "_mjx_model"

    @property
    def mj_model(self) -> mujoco.MjModel:
        return self.pg_env.mj_model

    def observe(self, pstate) -> dict[str, jax.Array]:
        obs = pstate.obs
        if isinstance(obs, dict):
            return {_RENAME.get(k, k): jnp.asarray(v, jnp.float32) for k, v in obs.items()}
        return {"proprio": jnp.asarray(obs, jnp.float32)}

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        names = list(jax.eval_shape(self.reset, jax.random.PRNGKey(0)).obs)
        student = tuple(n for n in names if n == "proprio")
        teacher = tuple(n for n in names if n != "proprio")
        return with_inferred_specs(ObservationSchema(student_obs=student, teacher_only=teacher), self.reset)

    def fingerprint_extra(self) -> dict[str, Any]:
        return {
            "reset_distribution": f"mujoco_playground.{self.env_name}.reset",
            "config_overrides": self.config_overrides,
        }

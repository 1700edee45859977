"""Adapter from a Brax environment (MJX backend) to the distill_jax env contract.

``BraxEnvAdapter("inverted_pendulum")`` wraps ``brax.envs.get_environment(name,
backend="mjx")``. ``obs = {obs_field: brax_obs}`` (default ``"proprio"``,
deployable); privileged fields come from wrapping the adapter in
:class:`~distill_jax.envs.wrappers.DomainRandomization`, which swaps Brax's
``sys`` (a subclass of ``mjx.Model``, so ``sys.replace(...)`` works). The
mapping of ``done``, metrics and actions is :mod:`distill_jax.envs.adapter_base`'s.

Brax is imported when an adapter is built, not when this module is imported.
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


class BraxEnvAdapter(ForeignEnvAdapter):
    """A Brax env as a single-instance distill_jax env (see the module docstring).

    Args:
      env_name: a name accepted by ``brax.envs.get_environment``.
      obs_field: name of the deployable observation field holding Brax's obs.
      **brax_kwargs: passed to ``get_environment`` (``backend`` defaults to "mjx").
    """

    def __init__(self, env_name: str, obs_field: str = "proprio", **brax_kwargs: Any):
        import brax  # deferred: importing brax costs ~2 s
        from brax import envs as brax_envs

        brax_kwargs.setdefault("backend", "mjx")
        if brax_kwargs["backend"] != "mjx":
            raise ValueError("BraxEnvAdapter supports only backend='mjx' (domain randomisation edits an mjx.Model)")
        self.env_name = env_name
        self.obs_field = obs_field
        self.brax_kwargs = dict(brax_kwargs)
        self.brax_env = brax_envs.get_environment(env_name, **brax_kwargs)
        super().__init__(self.brax_env, f"brax_{env_name}", f"brax-{getattr(brax, '__version__', 'unknown')}")

    def model_slot(self) -> tuple[Any, str]:
        # Brax envs read ``self.sys`` while being traced.
        return self.brax_env.unwrapped, "sys"

    @property
    def mj_model(self) -> mujoco.MjModel:
        return self.mjx_model.mj_model

    @property
    def n_substeps(self) -> int:
        return int(self.brax_env._n_frames)

    @property
    def dt(self) -> float:
        return float(self.mj_model.opt.timestep) * self.n_substeps

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        return with_inferred_specs(ObservationSchema(student_obs=(self.obs_field,)), self.reset)

    def fingerprint_extra(self) -> dict[str, Any]:
        return {
            "reset_distribution": f"brax.envs.{self.env_name}.reset",
            "control_dt": self.dt,
            "brax_kwargs": {k: v for k, v in sorted(self.brax_kwargs.items())},
        }

    def observe(self, bstate) -> dict[str, jax.Array]:
        """The named observation fields of a Brax state (float32, no batch axis).

        The default is Brax's flat ``obs`` under ``obs_field``. Override it (with
        ``schema``) to split Brax's vector into named fields that the schema can
        assign to roles; ``bstate.metrics`` is there for critic-only terms.
        """
        return {self.obs_field: jnp.asarray(bstate.obs, jnp.float32)}

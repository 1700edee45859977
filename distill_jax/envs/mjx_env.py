"""Base class for tasks simulated with MuJoCo MJX from an MJCF shipped in the package.

A task's physics is a function of the ``mjx.Model`` it is handed, so domain
randomisation can substitute a per-environment model without the task knowing:
``reset``/``step`` use the nominal model, ``reset_with_model``/
``step_with_model`` take any model of the same structure (the
:class:`~distill_jax.envs.wrappers.DomainRandomization` wrapper uses these).
"""

from __future__ import annotations

import abc
from importlib import resources

import jax
import mujoco
from mujoco import mjx

from distill_jax.envs.base import Env, EnvState
from distill_jax.hashing import mjcf_hash  # noqa: F401  (re-exported)


def load_asset(filename: str) -> str:
    """Reads an MJCF file shipped in ``distill_jax/envs/assets``."""
    return resources.files("distill_jax.envs").joinpath("assets", filename).read_text()


class MjxEnv(Env):
    """A task over one MJX model.

    Attributes:
      mj_model: the compiled ``mujoco.MjModel`` (host side).
      mjx_model: the nominal device model.
      n_substeps: physics steps per control step (control dt = n_substeps * timestep).
    """

    def __init__(self, xml: str, n_substeps: int = 1):
        self.xml = xml
        self.mj_model = mujoco.MjModel.from_xml_string(xml)
        # On this process's own first device: MJX's default is jax.devices()[0], which with several
        # processes (jax.distributed) is process 0's and cannot be read by the others.
        self.mjx_model = mjx.put_model(self.mj_model, device=jax.local_devices()[0])
        self.n_substeps = int(n_substeps)

    @property
    def dt(self) -> float:
        """Control period in seconds."""
        return float(self.mj_model.opt.timestep) * self.n_substeps

    @property
    def model_hash(self) -> str:
        return mjcf_hash(self.xml)

    def reset(self, key: jax.Array) -> EnvState:
        return self.reset_with_model(key, self.mjx_model)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        return self.step_with_model(state, action, self.mjx_model)

    @abc.abstractmethod
    def reset_with_model(self, key: jax.Array, model: mjx.Model) -> EnvState:
        """Like ``reset`` but simulating ``model`` (same structure as ``mjx_model``)."""

    @abc.abstractmethod
    def step_with_model(self, state: EnvState, action: jax.Array, model: mjx.Model) -> EnvState:
        """Like ``step`` but simulating ``model``."""

    def before_physics_step(self, model: mjx.Model, data: mjx.Data) -> mjx.Data:
        """Hook run before every physics step (e.g. to move mocap bodies); identity here."""
        return data

    def physics_step(self, model: mjx.Model, data: mjx.Data, ctrl: jax.Array) -> mjx.Data:
        """Applies ``ctrl`` and advances ``n_substeps`` physics steps."""
        data = data.replace(ctrl=ctrl)

        def substep(d, _):
            return mjx.step(model, self.before_physics_step(model, d)), None

        data, _ = jax.lax.scan(substep, data, None, length=self.n_substeps)
        return data

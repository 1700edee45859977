"""``PlaygroundEnvAdapter`` on a tiny Playground-style env built here (no ``mujoco_playground`` needed).

``SlidingBlock`` has the surface of Playground's ``MjxEnv`` that the adapter
uses: ``reset(rng)`` / ``step(state, action)`` returning a state with Playground's
fields (``data, obs, reward, done, metrics, info``), a dict observation with
``"state"`` and ``"privileged_state"``, ``action_size``, ``mj_model`` and the
device model in ``_mjx_model``, which its physics reads while traced. Its
privileged state reads the block's mass off that model, so a randomised mass
shows whether domain randomisation reaches the physics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from flax import struct
from mujoco import mjx

from distill_jax.envs import DomainRandomization, ParamRange, PlaygroundEnvAdapter, VmapAutoReset
from distill_jax.envs.registry import wrap_task

XML = """
<mujoco model="sliding_block">
  <option timestep="0.01"/>
  <worldbody>
    <body name="block">
      <joint name="slide" type="slide" axis="1 0 0"/>
      <geom type="box" size="0.1 0.1 0.1" mass="2"/>
    </body>
  </worldbody>
  <actuator><motor joint="slide" gear="10"/></actuator>
</mujoco>
"""
MASS = 2.0
GEAR = 10.0  # no ctrlrange: MuJoCo applies any control, so only the adapter clips
LIMIT = 0.2  # |x| beyond this ends the episode (m)


@struct.dataclass
class PlaygroundState:
    """The fields of ``mujoco_playground.State``."""

    data: mjx.Data
    obs: dict
    reward: jax.Array
    done: jax.Array
    metrics: dict
    info: dict


class SlidingBlock:
    """A 2 kg block on a frictionless rail pushed by a motor; Playground's env surface."""

    def __init__(self, n_substeps: int = 2):
        self._mj_model = mujoco.MjModel.from_xml_string(XML)
        self._mjx_model = mjx.put_model(self._mj_model)
        self.n_substeps = n_substeps

    @property
    def mj_model(self) -> mujoco.MjModel:
        return self._mj_model

    @property
    def mjx_model(self) -> mjx.Model:
        return self._mjx_model

    @property
    def action_size(self) -> int:
        return int(self._mjx_model.nu)

    def _state(self, data: mjx.Data, reward, done) -> PlaygroundState:
        x, v = data.qpos[0], data.qvel[0]
        obs = {
            "state": jnp.stack([x, v]),
            "privileged_state": self.mjx_model.body_mass[1:2],
            "goal": jnp.zeros(2),
        }
        return PlaygroundState(data=data, obs=obs, reward=reward, done=done,
                               metrics={"position": x}, info={"unused": jnp.zeros(())})

    def reset(self, rng: jax.Array) -> PlaygroundState:
        data = mjx.make_data(self.mjx_model)
        data = data.replace(qpos=jax.random.uniform(rng, (1,), minval=-0.1, maxval=0.1))
        return self._state(mjx.forward(self.mjx_model, data), jnp.zeros(()), jnp.zeros(()))

    def step(self, state: PlaygroundState, action: jax.Array) -> PlaygroundState:
        data = state.data.replace(ctrl=action)
        for _ in range(self.n_substeps):
            data = mjx.step(self.mjx_model, data)
        x = data.qpos[0]
        return self._state(data, -jnp.square(x), (jnp.abs(x) > LIMIT).astype(jnp.float32))


@pytest.fixture(scope="module")
def adapter():
    return PlaygroundEnvAdapter(SlidingBlock())


@pytest.fixture(scope="module")
def rollout(adapter):
    """20 steps of full push (actions of 5 are clipped to 1) from one reset, jitted once."""

    def run(key):
        s0 = adapter.reset(key)

        def body(s, _):
            nxt = adapter.step(s, jnp.full((1,), 5.0))
            return nxt, nxt

        return s0, jax.lax.scan(body, s0, None, length=20)[1]

    return jax.device_get(jax.jit(run)(jax.random.PRNGKey(0)))


def test_schema_renames_the_playground_fields(adapter):
    schema = adapter.schema
    assert schema.student_obs == ("proprio",)
    assert set(schema.teacher_only) == {"privileged", "goal"}
    assert schema.critic_only == ()
    specs = schema.field_specs
    assert specs["proprio"].shape == (2,) and specs["privileged"].shape == (1,) and specs["goal"].shape == (2,)
    assert adapter.action_size == 1


def test_reset_and_step_under_jit_follow_the_physics(rollout):
    s0, traj = rollout
    assert set(s0.obs) == {"proprio", "privileged", "goal"}
    assert s0.first == 1 and s0.reward == 0 and s0.terminated == 0 and s0.truncated == 0
    for leaf in jax.tree_util.tree_leaves((s0.obs, traj.obs, traj.reward, traj.metrics)):
        assert np.isfinite(leaf).all()
    # Clipped to 1: a = GEAR / MASS from rest, x(t) = x0 + a t^2 / 2 up to the semi-implicit
    # Euler error a h t / 2 (0.01 m after 0.4 s).
    dt = 0.02
    t = dt * np.arange(1, 21)
    x_expected = s0.obs["proprio"][0] + 0.5 * (GEAR / MASS) * t**2
    np.testing.assert_allclose(traj.obs["proprio"][:, 0], x_expected, atol=0.02)
    np.testing.assert_allclose(traj.metrics["position"], traj.obs["proprio"][:, 0])
    np.testing.assert_allclose(traj.obs["privileged"][:, 0], MASS)
    assert (traj.first == 0).all() and (traj.truncated == 0).all()


def test_done_becomes_terminated_fall_and_success(rollout):
    _, traj = rollout
    x = traj.obs["proprio"][:, 0]
    fell = (np.abs(x) > LIMIT).astype(np.float32)
    assert 0 < fell.sum() < len(fell)  # the block leaves the rail within the rollout
    np.testing.assert_array_equal(traj.terminated, fell)
    np.testing.assert_array_equal(traj.metrics["fall"], fell)
    np.testing.assert_array_equal(traj.metrics["success"], 1.0 - fell)
    np.testing.assert_allclose(traj.reward, -np.square(x), rtol=1e-6)


def test_domain_randomization_reaches_the_playground_physics(adapter):
    dr = DomainRandomization(adapter, (ParamRange("block_mass", "body_mass:block", 0.5, 2.0),))

    def run(key):
        s0 = dr.reset(key)
        return s0, dr.step(s0, jnp.ones((1,)))

    s0, s1 = jax.device_get(jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(1), 4)))
    scale = s0.params["block_mass"]
    assert scale.std() > 0.05  # the draws differ across envs
    np.testing.assert_allclose(s0.obs["privileged"][:, 0], MASS * scale, rtol=1e-6)
    np.testing.assert_allclose(s1.obs["privileged"][:, 0], MASS * scale, rtol=1e-6)
    # A heavier block accelerates less: one step's velocity gain is GEAR * dt / (mass * scale).
    dv = s1.obs["proprio"][:, 1] - s0.obs["proprio"][:, 1]
    np.testing.assert_allclose(dv, GEAR * 0.02 / (MASS * scale), rtol=1e-4)
    assert "dyn_params" in dr.schema.teacher_only
    # The trace left the nominal model in place.
    assert adapter.pg_env._mjx_model is adapter.mjx_model


def test_default_stack_and_autoreset_run(adapter):
    env = wrap_task(adapter, episode_length=6, ranges=(ParamRange("block_mass", "body_mass:block", 0.5, 2.0),),
                    noise_std={"proprio": 0.01}, history_length=3, history_fields=("proprio",))
    venv = VmapAutoReset(env, 3)
    state = jax.jit(venv.reset)(jax.random.PRNGKey(2))
    step = jax.jit(venv.step)
    for _ in range(8):
        state = step(state, jnp.zeros((3, 1)))
    state = jax.device_get(state)
    env.schema.check_shapes(state.obs, "critic")
    assert all(np.isfinite(v).all() for v in state.obs.values())
    # 8 steps with a 6-step limit and no push: every env restarted once, at step 6.
    assert (state.info["episode_length"] == 2).all()


def test_fingerprint_and_refusals():
    env = SlidingBlock()
    fp = PlaygroundEnvAdapter(env, env_name="block").fingerprint()
    assert fp["name"] == "playground_block" and fp["reward_terms"] == {"playground_block_reward": 1.0}
    assert fp["config_overrides"] == {} and fp["randomization"] == []
    heavier = SlidingBlock()
    heavier._mj_model.body_mass[1] = 3.0
    assert PlaygroundEnvAdapter(heavier).fingerprint()["model_hash"] != fp["model_hash"]
    assert PlaygroundEnvAdapter(SlidingBlock()).fingerprint()["model_hash"] == fp["model_hash"]
    assert PlaygroundEnvAdapter(env).name == "playground_SlidingBlock"
    with pytest.raises(ValueError, match="config_overrides apply only to an env loaded by name"):
        PlaygroundEnvAdapter(env, config_overrides={"ctrl_dt": 0.02})

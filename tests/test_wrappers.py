"""Wrapper tests on the real cart-pole MJX task (no mocks).

Each jitted function is compiled once per module through fixtures; batch sizes
and horizons are small so the module runs in well under two minutes on 2 cores.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from distill_jax.envs import (
    DomainRandomization,
    ModelRandomizer,
    ObservationHistory,
    ParamRange,
    SensorNoise,
    TimeLimit,
)
from distill_jax.envs.cartpole import CARTPOLE_RANGES, Cartpole
from distill_jax.envs.hash_prng import hash_normal


@pytest.fixture(scope="module")
def task():
    return Cartpole()


# ------------------------------------------------------------ ParamRange
def test_param_range_validation():
    with pytest.raises(ValueError, match="unknown target kind"):
        ParamRange("x", "body_volume:pole", 0.5, 1.5)
    with pytest.raises(ValueError, match="mode"):
        ParamRange("x", "body_mass:pole", 0.5, 1.5, "relative")
    with pytest.raises(ValueError, match="high"):
        ParamRange("x", "body_mass:pole", 1.5, 0.5)
    with pytest.raises(ValueError, match="only mode='scale'"):
        ParamRange("x", "body_length:pole", 0.5, 1.5, "absolute")
    r = ParamRange("m", "body_mass", 0.5, 1.5)
    assert r.element == "*" and r.kind == "body_mass"


def test_randomizer_rejects_unknown_names_and_duplicates(task):
    with pytest.raises(ValueError, match="no body named 'tail'"):
        ModelRandomizer([ParamRange("m", "body_mass:tail", 0.5, 1.5)], task.mj_model)
    with pytest.raises(ValueError, match="unique"):
        ModelRandomizer([ParamRange("m", "body_mass:pole", 0.5, 1.5)] * 2, task.mj_model)


def test_randomizer_apply_matches_hand_computation(task):
    """Every edited model field equals the numpy computation from the host model."""
    m = task.mj_model
    rz = ModelRandomizer(CARTPOLE_RANGES, m)
    values = jnp.array([1.5, 0.8, 0.7, 1.2])  # pole mass x1.5, length x0.8, damping 0.7, gain x1.2
    model = rz.apply(task.mjx_model, values)
    pole = m.body("pole").id
    slider = m.joint("slider").dofadr[0]
    mass = m.body_mass.copy()
    mass[pole] *= 1.5
    np.testing.assert_allclose(model.body_mass, mass, rtol=1e-6)
    inertia = m.body_inertia.copy()
    inertia[pole] *= 1.5 * 0.8**2
    np.testing.assert_allclose(model.body_inertia, inertia, rtol=1e-5)
    np.testing.assert_allclose(model.body_ipos[pole], m.body_ipos[pole] * 0.8, rtol=1e-6)
    np.testing.assert_allclose(model.body_ipos[: pole], m.body_ipos[: pole])
    g = m.geom("pole").id
    np.testing.assert_allclose(model.geom_pos[g], m.geom_pos[g] * 0.8, rtol=1e-6)
    np.testing.assert_allclose(model.geom_size[g], m.geom_size[g] * [1.0, 0.8, 1.0], rtol=1e-6)
    np.testing.assert_allclose(model.dof_damping[slider], 0.7, rtol=1e-6)
    np.testing.assert_allclose(model.dof_damping[m.joint("hinge").dofadr[0]], m.dof_damping[1])
    np.testing.assert_allclose(model.actuator_gainprm[0, 0], 1.2 * m.actuator_gainprm[0, 0], rtol=1e-6)
    np.testing.assert_allclose(model.body_subtreemass[0], mass.sum(), rtol=1e-6)
    np.testing.assert_allclose(rz.normalize(jnp.asarray(rz.low)), -1.0)
    np.testing.assert_allclose(rz.normalize(jnp.asarray(rz.high)), 1.0)


def test_randomised_mjx_model_matches_mujoco_c(task):
    """mjx with the randomised model tracks MuJoCo (C) with the same edits applied by hand."""
    rz = ModelRandomizer(CARTPOLE_RANGES, task.mj_model)
    values = jnp.array([1.8, 1.3, 0.9, 0.7])
    model = rz.apply(task.mjx_model, values)

    ref = mujoco.MjModel.from_xml_string(task.xml)
    pole = ref.body("pole").id
    ref.body_mass[pole] *= 1.8
    ref.body_inertia[pole] *= 1.8 * 1.3**2
    ref.body_ipos[pole] *= 1.3
    ref.dof_damping[ref.joint("slider").dofadr[0]] = 0.9
    ref.actuator_gainprm[0, 0] *= 0.7
    assert_mjx_follows_c(task.mjx_model, model, ref, qpos=[0.1, 0.15], ctrl=[0.5])


def assert_mjx_follows_c(base, model, ref, qpos, ctrl, steps: int = 50):
    """``steps`` physics steps of mjx with the randomised ``model`` (data made from ``base``) and of
    MuJoCo C on ``ref`` (the same edits by hand), from ``qpos`` with ``ctrl``, end in the same state;
    returns the C data."""
    from mujoco import mjx

    data = mujoco.MjData(ref)
    data.qpos[:] = qpos
    data.ctrl[:] = ctrl
    d = mjx.make_data(base).replace(qpos=jnp.array(qpos), ctrl=jnp.array(ctrl))
    d = jax.jit(lambda d: jax.lax.fori_loop(0, steps, lambda i, x: mjx.step(model, x), d))(d)
    for _ in range(steps):
        mujoco.mj_step(ref, data)
    np.testing.assert_allclose(np.asarray(d.qpos), data.qpos, atol=2e-3)
    np.testing.assert_allclose(np.asarray(d.qvel), data.qvel, atol=1e-2)
    return data


def test_bias_and_tilt_kinds_match_mujoco_c():
    """``actuator_bias`` (a constant actuator force) and ``gravity_tilt`` (a hidden slope) on the
    cart-pole_hidden model: mjx with the randomised model tracks MuJoCo (C) with the same edits."""
    from distill_jax.envs.cartpole_hidden import CartpoleHidden

    hidden = CartpoleHidden()
    rz = ModelRandomizer([ParamRange("bias", "actuator_bias:motor", -0.4, 0.4, "absolute"),
                          ParamRange("slope", "gravity_tilt", -0.2, 0.2, "absolute")], hidden.mj_model)
    model = rz.apply(hidden.mjx_model, jnp.array([0.3, -0.15]))
    ref = mujoco.MjModel.from_xml_string(hidden.xml)
    ref.actuator_biasprm[0, 0] = 0.3
    g = float(np.linalg.norm(ref.opt.gravity))
    ref.opt.gravity[:] = [g * np.sin(-0.15), 0.0, -g * np.cos(-0.15)]
    np.testing.assert_allclose(model.actuator_biasprm, ref.actuator_biasprm, rtol=1e-6)
    np.testing.assert_allclose(model.opt.gravity, ref.opt.gravity, rtol=1e-6)
    data = assert_mjx_follows_c(hidden.mjx_model, model, ref, qpos=[0.1, 0.05], ctrl=[-0.2])
    # Bias 0.3 with ctrl -0.2: net actuator force gear * 0.1 = +1 N.
    np.testing.assert_allclose(data.actuator_force, [0.1], rtol=1e-6)


def test_bias_and_tilt_kinds_reject_what_they_cannot_mean(task):
    with pytest.raises(ValueError, match="only mode='absolute'"):
        ParamRange("b", "actuator_bias:motor", 0.5, 1.5)
    with pytest.raises(ValueError, match="gravity_tilt takes mode='absolute'"):
        ParamRange("s", "gravity_tilt:pole", -0.1, 0.1, "absolute")
    with pytest.raises(ValueError, match="biastype='affine'"):  # the plain cart-pole's motor has no bias
        ModelRandomizer([ParamRange("b", "actuator_bias:motor", -0.1, 0.1, "absolute")], task.mj_model)


def test_domain_randomization_wraps_only_the_task(task):
    with pytest.raises(TypeError, match="must wrap the task itself"):
        DomainRandomization(TimeLimit(task, 10), CARTPOLE_RANGES)


# ------------------------------------------------------- unbatched stack
@pytest.fixture(scope="module")
def stack(task):
    """task -> DR -> noise -> history(fill='first') -> TimeLimit(12), and its jitted step."""
    dr = DomainRandomization(task, CARTPOLE_RANGES)
    noisy = SensorNoise(dr, {"cart_pos": 0.05, "pole_angle": 0.02})
    hist = ObservationHistory(noisy, ["cart_pos", "pole_angle"], length=4, include_actions=True, fill="first")
    env = TimeLimit(hist, 12)
    return env, jax.jit(env.reset), jax.jit(env.step)


def test_schema_extended_by_wrappers(stack):
    env, _, _ = stack
    s = env.schema
    assert s.student_obs == ("cart_pos", "pole_angle", "last_action", "history")
    assert s.teacher_only == ("velocities", "dyn_params")
    assert s.critic_only == ("clean_pos",)
    specs = s.field_specs
    assert specs["history"].shape == (4, 1 + 2 + 1)
    assert specs["dyn_params"].shape == (len(CARTPOLE_RANGES),)
    fp = env.fingerprint()
    json.dumps(fp)
    assert [w["type"] for w in fp["wrappers"]] == [
        "DomainRandomization",
        "SensorNoise",
        "ObservationHistory",
        "TimeLimit",
    ]
    assert [r["name"] for r in fp["randomization"]] == [r.name for r in CARTPOLE_RANGES]
    assert env.episode_length == 12


def test_wrappers_refuse_privileged_fields(task):
    with pytest.raises(ValueError, match="velocities"):
        SensorNoise(task, {"velocities": 0.1})
    with pytest.raises(ValueError, match="clean_pos"):
        ObservationHistory(task, ["clean_pos"], 3)
    with pytest.raises(ValueError, match="history length"):
        ObservationHistory(task, ["cart_pos"], 0)


def _rollout_unbatched(stack, key, actions):
    env, reset, step = stack
    states = [reset(key)]
    for a in actions:
        states.append(step(states[-1], jnp.array([a], jnp.float32)))
    return states


def test_time_limit_history_and_params(stack):
    """Exact truncation step, history rows, params fixed within the episode."""
    actions = [0.3, -0.7, 1.5, -0.2, 0.0, 0.9, -1.0, 0.4, 0.1, -0.5, 0.6, 0.2, 0.3]
    states = _rollout_unbatched(stack, jax.random.PRNGKey(7), actions)
    s0 = states[0]
    term = [float(s.terminated) for s in states[1:]]
    trunc = [float(s.truncated) for s in states[1:]]
    assert not any(term)  # these mild actions keep this episode's pole up for 13 steps
    assert trunc == [0.0] * 11 + [1.0] + [1.0]  # without an auto-reset the counter runs on
    assert [int(s.info["steps"]) for s in states] == list(range(len(states)))
    assert float(s0.first) == 1.0 and all(float(s.first) == 0.0 for s in states[1:])

    # History: rows are (cart_pos, pole_angle, previous action) of the last 4 steps, oldest first.
    rows = []
    for t, s in enumerate(states):
        prev_a = 0.0 if t == 0 else float(np.clip(actions[t - 1], -1, 1))
        row = np.concatenate([np.asarray(s.obs["cart_pos"]), np.asarray(s.obs["pole_angle"]), [prev_a]])
        rows.append(row)
        expect = np.stack([rows[max(0, i)] for i in range(t - 3, t + 1)])
        np.testing.assert_allclose(np.asarray(s.obs["history"]), expect, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(s.obs["last_action"]), [prev_a])

    # Domain randomisation: params constant through the episode and mirrored in dyn_params.
    for s in states[1:]:
        for name in s0.params:
            assert float(s.params[name]) == float(s0.params[name])
        np.testing.assert_array_equal(np.asarray(s.obs["dyn_params"]), np.asarray(s0.obs["dyn_params"]))
    for r, v in zip(CARTPOLE_RANGES, np.asarray(s0.obs["dyn_params"])):
        raw = float(s0.params[r.name])
        assert r.low <= raw <= r.high
        np.testing.assert_allclose(v, 2 * (raw - r.low) / (r.high - r.low) - 1, atol=1e-6)

    # Same key -> identical trajectory; another key -> different params and noise.
    again = _rollout_unbatched(stack, jax.random.PRNGKey(7), actions)
    for a, b in zip(states, again):
        for k in a.obs:
            np.testing.assert_array_equal(np.asarray(a.obs[k]), np.asarray(b.obs[k]))
    other = _rollout_unbatched(stack, jax.random.PRNGKey(8), actions[:1])
    assert float(other[0].params["pole_mass"]) != float(s0.params["pole_mass"])


def test_history_zero_fill(task):
    env = ObservationHistory(task, ["pole_angle"], length=3, include_actions=False, fill="zeros")
    s = env.reset(jax.random.PRNGKey(0))  # eager: no compile needed for a reset
    h = np.asarray(s.obs["history"])
    assert h.shape == (3, 2)
    np.testing.assert_array_equal(h[:2], 0.0)
    np.testing.assert_allclose(h[2], np.asarray(s.obs["pole_angle"]))


def test_termination_and_time_limit_on_the_same_step(task):
    """When the limit is reached on a falling step, only ``terminated`` is set."""
    push = Cartpole(track_limit=0.3, fall_angle=3.0, init_pos=0.0, init_vel=0.0)
    step_inner = jax.jit(push.step)
    s = push.reset(jax.random.PRNGKey(1))
    n = 0
    while float(s.terminated) == 0.0:
        s = step_inner(s, jnp.ones(1))
        n += 1
        assert n < 50
    env = TimeLimit(push, n)  # the limit coincides with the fall
    s = env.reset(jax.random.PRNGKey(1))
    step = jax.jit(env.step)
    for t in range(n):
        s = step(s, jnp.ones(1))
        assert float(s.truncated) == 0.0
        assert float(s.terminated) == (1.0 if t == n - 1 else 0.0)
    assert float(s.metrics["fall"]) == 1.0


# ----------------------------------------------------------------- noise
def test_hash_normal_statistics():
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    nxt, z = jax.jit(jax.vmap(lambda k: hash_normal(k, 5)))(keys)
    z = np.asarray(z)
    assert z.shape == (20000, 5) and np.isfinite(z).all()
    flat = z.ravel()
    n = flat.size
    assert abs(flat.mean()) < 4 / np.sqrt(n)
    assert abs(flat.std() - 1.0) < 0.01
    assert abs(np.mean(flat**4) - 3.0) < 0.1  # Gaussian kurtosis
    assert abs(np.mean(np.abs(flat) < 1.0) - 0.6827) < 0.01
    corr = np.corrcoef(z.T)
    assert np.max(np.abs(corr - np.eye(5))) < 0.03  # components independent
    # The next key differs from the old one and yields fresh noise.
    assert not np.array_equal(np.asarray(nxt), np.asarray(keys))
    _, z2 = jax.jit(jax.vmap(lambda k: hash_normal(k, 5)))(nxt)
    assert abs(np.corrcoef(z[:, 0], np.asarray(z2)[:, 0])[0, 1]) < 0.03


def test_sensor_noise_statistics(task):
    """Noise on deployable fields has the requested std, zero mean, and spares other fields."""
    stds = {"cart_pos": 0.05, "pole_angle": 0.02}
    env = SensorNoise(task, stds)
    n_env, n_steps = 256, 8

    def roll(key):
        s = jax.vmap(env.reset)(jax.random.split(key, n_env))

        def body(s, _):
            s = jax.vmap(env.step)(s, jnp.zeros((n_env, 1)))
            return s, s.obs

        return jax.lax.scan(body, s, None, length=n_steps)[1]

    obs = jax.jit(roll)(jax.random.PRNGKey(3))
    clean = np.asarray(obs["clean_pos"])
    e_x = np.asarray(obs["cart_pos"])[..., 0] - clean[..., 0]
    e_a = np.asarray(obs["pole_angle"]) - clean[..., 1:]
    for err, std in ((e_x.ravel(), 0.05), (e_a.ravel(), 0.02)):
        assert abs(err.mean()) < 4 * std / np.sqrt(err.size)
        assert abs(err.std() / std - 1.0) < 0.05
    # Fresh noise every step and every env.
    assert abs(np.corrcoef(e_x[:-1].ravel(), e_x[1:].ravel())[0, 1]) < 0.1
    assert abs(np.corrcoef(e_x[:, :-1].ravel(), e_x[:, 1:].ravel())[0, 1]) < 0.1
    # Privileged fields are untouched: velocities equal the physics state.
    assert np.isfinite(np.asarray(obs["velocities"])).all()


# ------------------------------------------------------------ ActionLatency
def test_action_latency_applies_the_command_of_d_steps_ago(task):
    from distill_jax.envs import ActionLatency

    env = ActionLatency(task, max_delay=3)
    assert "action_latency" in env.schema.teacher_only and env.schema.field_specs["action_latency"].shape == (1,)
    keys = jax.random.split(jax.random.PRNGKey(5), 32)
    delays = np.asarray(jax.vmap(env.reset)(keys).info["action_delay"])
    assert set(delays.tolist()) == {0, 1, 2, 3}  # per-env draws cover the range

    commands = jnp.sin(jnp.arange(12.0))[:, None] * 0.8

    @jax.jit
    def run(key):
        state = env.reset(key)
        inner = task.reset(jax.random.split(key)[1])  # the key the wrapper hands the task
        delay = state.info["action_delay"]
        padded = jnp.concatenate([jnp.zeros((3, 1)), commands])
        delayed = jax.vmap(lambda t: padded[t + 3 - delay])(jnp.arange(12))

        def step(carry, xs):
            s, i = carry
            command, applied = xs
            s, i = env.step(s, command), task.step(i, applied)
            return (s, i), (s.physics.qpos, i.physics.qpos, s.obs["action_latency"], s.info["action_delay"])

        _, out = jax.lax.scan(step, (state, inner), (commands, delayed))
        return delay, out

    assert delays[:4].max() > 0  # the equality below is then a real test of the delay
    for key in keys[:4]:
        delay, (qpos, reference, latency_obs, carried) = run(key)
        np.testing.assert_array_equal(qpos, reference)  # latency == feeding the delayed commands
        assert np.all(np.asarray(carried) == int(delay))  # fixed within the episode
        np.testing.assert_allclose(latency_obs, int(delay) / 3)
    with pytest.raises(ValueError, match="max_delay"):
        ActionLatency(task, max_delay=0)

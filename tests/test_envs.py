"""Task, adapter, auto-reset and registry tests on real MJX / Brax envs (no mocks).

One jitted 100-step ``lax.scan`` rollout of the batched, fully wrapped env is
compiled per task (module fixtures) and every property is checked on it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.envs import VmapAutoReset, get_env, list_envs
from distill_jax.schema import ObservationSchema

T = 100  # rollout length
CARTPOLE_EPISODE = 40
# LQR gains for the nominal cart-pole (u = k . (sin θ, θ̇, x, ẋ)); robust to the randomised ranges.
LQR = (9.7, 2.0, 1.4, 1.6)


def _lqr(obs):
    s, x = obs["clean_pos"][:, 2], obs["clean_pos"][:, 0]
    xd, thd = obs["velocities"][:, 0], obs["velocities"][:, 1]
    k1, k2, k3, k4 = LQR
    return jnp.clip(k1 * s + k2 * thd + k3 * x + k4 * xd, -1.0, 1.0)[:, None]


def _make_rollout(venv, controlled: int):
    """Jitted ``key -> (initial state, per-step states)``; the first ``controlled``
    envs follow the privileged LQR controller, the others act uniformly at random."""
    b, a = venv.num_envs, venv.action_size

    def rollout(key):
        state = venv.reset(key)

        def body(s, k):
            act = jax.random.uniform(k, (b, a), minval=-1.0, maxval=1.0)
            if controlled:
                act = act.at[:controlled].set(_lqr(s.obs)[:controlled])
            nxt = venv.step(s, act)
            return nxt, nxt.replace(physics=None)

        _, traj = jax.lax.scan(body, state, jax.random.split(jax.random.fold_in(key, 1), T))
        return state.replace(physics=None), traj

    return jax.jit(rollout)


class Case:
    def __init__(self, name, env, venv, rollout, controlled):
        self.name, self.env, self.venv, self.rollout, self.controlled = name, env, venv, rollout, controlled
        self.init, self.traj = jax.device_get(rollout(jax.random.PRNGKey(0)))


@pytest.fixture(scope="module")
def cartpole():
    env = get_env("cartpole", episode_length=CARTPOLE_EPISODE)
    venv = VmapAutoReset(env, 6)
    return Case("cartpole", env, venv, _make_rollout(venv, controlled=3), controlled=3)


@pytest.fixture(scope="module")
def brax_ip():
    env = get_env("brax_inverted_pendulum", episode_length=30)
    venv = VmapAutoReset(env, 4)
    return Case("brax_inverted_pendulum", env, venv, _make_rollout(venv, controlled=0), controlled=0)


@pytest.fixture(scope="module", params=["cartpole", "brax_ip"])
def case(request):
    return request.getfixturevalue(request.param)


# ------------------------------------------------------ contract, any task
def test_obs_match_schema_batched_and_unbatched(case):
    schema = case.env.schema
    assert isinstance(schema, ObservationSchema)
    specs = schema.field_specs
    assert set(specs) == set(schema.all_fields)
    # Unbatched, abstractly (no compile).
    single = jax.eval_shape(case.env.reset, jax.random.PRNGKey(0))
    assert set(single.obs) == set(schema.all_fields)
    for name, spec in specs.items():
        assert single.obs[name].shape == spec.shape and str(single.obs[name].dtype) == spec.dtype
    # Batched: [B, ...] after reset, [T, B, ...] over the rollout.
    b = case.venv.num_envs
    assert set(case.init.obs) == set(schema.all_fields)
    schema.check_shapes(case.init.obs, "critic")
    schema.check_shapes(case.traj.obs, "critic")
    for name, spec in specs.items():
        assert case.init.obs[name].shape == (b, *spec.shape)
        assert case.traj.obs[name].shape == (T, b, *spec.shape)
        assert case.traj.info["final_obs"][name].shape == (T, b, *spec.shape)
    assert case.env.observation_size == {n: s.shape for n, s in specs.items()}
    # The student sees deployable fields only.
    assert "dyn_params" in schema.teacher_only and "history" in schema.student_obs
    schema.guard_student({n: case.init.obs[n] for n in schema.student_obs})


def test_rollout_is_finite_and_flags_are_float(case):
    tr = case.traj
    for leaf in jax.tree_util.tree_leaves((tr.obs, tr.reward, tr.metrics)):
        assert np.isfinite(leaf).all()
    for flag in (tr.terminated, tr.truncated, tr.first):
        assert flag.dtype == np.float32 and set(np.unique(flag)) <= {0.0, 1.0}


def test_terminated_and_truncated_are_exclusive_and_reset(case):
    tr = case.traj
    assert not np.any((tr.terminated > 0) & (tr.truncated > 0))
    done = np.maximum(tr.terminated, tr.truncated) > 0
    assert done.any(), "the rollout should contain finished episodes"
    np.testing.assert_array_equal(tr.first > 0, done)  # auto-reset exactly where done
    np.testing.assert_array_equal(tr.info["episode_completed"] > 0, done)
    np.testing.assert_array_equal(tr.info["steps"][done], 0)  # TimeLimit counter restarted
    assert np.all(case.init.first == 1.0)
    # Episode bookkeeping: running length counts steps since the last reset.
    length = np.zeros(case.venv.num_envs, np.int64)
    ret = np.zeros(case.venv.num_envs)
    for t in range(T):
        length += 1
        ret += tr.reward[t]
        d = done[t]
        np.testing.assert_array_equal(tr.info["episode_length_completed"][t], np.where(d, length, 0))
        np.testing.assert_allclose(tr.info["episode_return_completed"][t], np.where(d, ret, 0.0), rtol=1e-4)
        length[d] = 0
        ret[d] = 0.0
        np.testing.assert_array_equal(tr.info["episode_length"][t], length)


def test_final_obs_holds_the_last_observation(case):
    tr = case.traj
    done = np.maximum(tr.terminated, tr.truncated) > 0
    for name in case.env.schema.all_fields:
        fin, obs = tr.info["final_obs"][name], tr.obs[name]
        np.testing.assert_array_equal(fin[~done], obs[~done])
        assert not np.array_equal(fin[done], obs[done])


def test_params_fixed_within_episode_and_differ_across_envs(case):
    tr = case.traj
    assert case.init.params, "the default stack randomises dynamics"
    first = tr.first > 0
    for name, p0 in case.init.params.items():
        values = np.concatenate([p0[None], tr.params[name]])  # [T + 1, B]
        changed = values[1:] != values[:-1]
        assert not np.any(changed & ~first), f"{name} changed within an episode"
        assert np.any(changed[first]), f"{name} not resampled at reset"
        assert len(np.unique(p0)) == len(p0), f"{name} equal across envs"
    dyn = np.concatenate([case.init.obs["dyn_params"][None], tr.obs["dyn_params"]])
    assert np.all(np.abs(dyn) <= 1.0 + 1e-6)


def test_same_key_same_trajectory(case):
    again_init, again = jax.device_get(case.rollout(jax.random.PRNGKey(0)))
    for a, b in zip(jax.tree_util.tree_leaves((case.init, case.traj)), jax.tree_util.tree_leaves((again_init, again))):
        np.testing.assert_array_equal(a, b)
    other_init, _ = jax.device_get(case.rollout(jax.random.PRNGKey(1)))
    for name in case.init.params:
        assert not np.array_equal(other_init.params[name], case.init.params[name])


def test_fingerprint(case):
    fp = case.env.fingerprint()
    json.dumps(fp)
    for key in ("name", "version", "reward_terms", "reset_distribution", "randomization", "model_hash", "wrappers"):
        assert key in fp
    assert fp["randomization"] and fp["episode_length"] == case.env.episode_length
    assert case.venv.fingerprint()["wrappers"][-1] == {"type": "VmapAutoReset"}


# --------------------------------------------------------- cartpole only
def test_cartpole_truncation_and_termination(cartpole):
    tr, c = cartpole.traj, cartpole.controlled
    # The privileged LQR envs balance: no falls, truncated exactly every 40 steps.
    assert not tr.terminated[:, :c].any()
    steps = np.nonzero(tr.truncated[:, :c].any(axis=1))[0]
    np.testing.assert_array_equal(steps, [CARTPOLE_EPISODE - 1, 2 * CARTPOLE_EPISODE - 1])
    assert np.all(tr.truncated[steps, :c] == 1)
    np.testing.assert_array_equal(tr.info["episode_length_completed"][steps, :c], CARTPOLE_EPISODE)
    np.testing.assert_array_equal(tr.metrics["success"][steps, :c], 1.0)
    # Random actions fall (terminate) and are flagged as falls, never as truncations.
    assert tr.terminated[:, c:].sum() >= 3
    np.testing.assert_array_equal(tr.metrics["fall"], tr.terminated)
    assert np.all((tr.reward >= 0) & (tr.reward <= 1))


def test_cartpole_autoreset_restores_valid_states(cartpole):
    tr, env = cartpole.traj, cartpole.env
    cfg = env.unwrapped.config
    first = tr.first > 0
    assert first.sum() >= 3
    x = tr.obs["clean_pos"][..., 0][first]
    theta = np.arctan2(tr.obs["clean_pos"][..., 2], tr.obs["clean_pos"][..., 1])[first]
    vel = tr.obs["velocities"][first]
    assert np.all(np.abs(x) <= cfg.init_pos + 1e-6)
    assert np.all(np.abs(theta) <= cfg.init_angle + 1e-6)
    assert np.all(np.abs(vel[:, 0]) <= cfg.init_vel + 1e-6)
    assert np.all(np.abs(vel[:, 1]) <= cfg.init_angvel + 1e-6)
    np.testing.assert_array_equal(tr.obs["last_action"][first], 0.0)
    hist = tr.obs["history"][first]  # fill="first": every row is the first observation
    np.testing.assert_array_equal(hist, np.repeat(hist[:, -1:], hist.shape[1], axis=1))
    np.testing.assert_allclose(hist[:, -1, 0], tr.obs["cart_pos"][first][:, 0])


def test_cartpole_reset_chunks_do_not_change_results(cartpole):
    """Resetting finished envs one per loop iteration gives the same trajectory."""
    venv = VmapAutoReset(cartpole.env, cartpole.venv.num_envs, reset_chunk=1)
    init, traj = jax.device_get(_make_rollout(venv, cartpole.controlled)(jax.random.PRNGKey(0)))
    assert np.max(np.sum(np.maximum(traj.terminated, traj.truncated), axis=1)) >= 2  # >1 chunk per step
    for a, b in zip(jax.tree_util.tree_leaves(cartpole.traj), jax.tree_util.tree_leaves(traj)):
        np.testing.assert_array_equal(a, b)


def test_cartpole_velocities_matter():
    """Without the privileged velocities the same controller fails; history restores them."""
    env = get_env("cartpole", episode_length=150)
    venv = VmapAutoReset(env, 16)
    dt = env.unwrapped.dt

    def controller(obs, mode):
        if mode == 0:  # privileged
            return _lqr(obs)
        h = obs["history"]
        x, th = h[:, -1, 0], jnp.arctan2(h[:, -1, 2], h[:, -1, 1])
        if mode == 1:  # memoryless: no velocity estimate
            xd = thd = 0.0
        else:  # finite differences over two history rows
            xd = (x - h[:, -3, 0]) / (2 * dt)
            thd = (th - jnp.arctan2(h[:, -3, 2], h[:, -3, 1])) / (2 * dt)
        k1, k2, k3, k4 = LQR
        return jnp.clip(k1 * jnp.sin(th) + k2 * thd + k3 * x + k4 * xd, -1.0, 1.0)[:, None]

    @jax.jit
    def falls(key):
        def one(mode):
            def body(s, _):
                s = venv.step(s, controller(s.obs, mode))
                return s, s.terminated

            return jax.lax.scan(body, venv.reset(key), None, length=150)[1].sum()

        return jnp.stack([one(0), one(1), one(2)])

    privileged, memoryless, history = np.asarray(falls(jax.random.PRNGKey(0)))
    assert privileged == 0
    assert memoryless >= 16  # falls again and again
    assert history <= 2


# ------------------------------------------------------- pooled restarts
@pytest.fixture(scope="module")
def pooled_two_seeds():
    return _pooled_rollout(num_envs=8, reset_chunk=2, refill_every=3, seeds=2)


def _pooled_rollout(num_envs: int, reset_chunk: int, refill_every: int, steps: int = 24, seeds: int = 0):
    """Random-action rollout of a 3-step cart-pole with pooled restarts: every env
    finishes every third step, so most refills find more used slots than the budget.
    With ``seeds > 0``, that many independent rollouts under one ``vmap`` (as
    multi-seed training runs them), with a leading seed axis."""
    env = get_env("cartpole", episode_length=3)
    venv = VmapAutoReset(env, num_envs, reset_chunk=reset_chunk, reset_pool=True, refill_every=refill_every)

    def rollout(key):
        def body(s, k):
            nxt = venv.step(s, jax.random.uniform(k, (num_envs, 1), minval=-1.0, maxval=1.0))
            return nxt, nxt.replace(physics=None)

        state = venv.reset(key)
        _, traj = jax.lax.scan(body, state, jax.random.split(jax.random.fold_in(key, 1), steps))
        return state.replace(physics=None), traj

    if seeds:
        return venv, jax.device_get(jax.jit(jax.vmap(rollout))(jax.random.split(jax.random.PRNGKey(0), seeds)))
    return venv, jax.device_get(jax.jit(rollout)(jax.random.PRNGKey(0)))


@pytest.mark.parametrize("seed", [0, 1])
def test_pooled_restarts_start_from_the_slot_with_a_new_key(pooled_two_seeds, seed):
    # Two seeds under one vmap: the 0-or-1-trip refill loop then has a batched trip count.
    venv, batched = pooled_two_seeds
    init, tr = jax.tree_util.tree_map(lambda x: x[seed], batched)
    assert venv.fingerprint()["wrappers"][-1] == {"type": "VmapAutoReset", "reset_pool": True,
                                                  "refill_chunk": 2, "refill_every": 3}
    pools = [init.info["reset_pool"]] + [jax.tree_util.tree_map(lambda x, t=t: x[t], tr.info["reset_pool"])
                                         for t in range(tr.reward.shape[0])]
    used = np.zeros(8, bool)  # slots restarted from since their last refill, tracked here independently
    n_restarts = n_refilled = 0
    for t in range(tr.reward.shape[0]):
        done = np.maximum(tr.terminated[t], tr.truncated[t]) > 0
        np.testing.assert_array_equal(tr.first[t] > 0, done)
        slot = pools[t]  # the pool before step t
        for name, value in tr.obs.items():
            np.testing.assert_array_equal(value[t][done], slot.obs[name][done], err_msg=name)
        for name, value in tr.params.items():
            np.testing.assert_array_equal(value[t][done], slot.params[name][done], err_msg=name)
        assert not np.any(np.all(tr.rng[t][done] == slot.rng[done], axis=-1)), "restart kept the slot's key"
        # Every third step, at most reset_chunk slots are refilled, only used ones.
        used |= done
        changed = ~np.all(pools[t + 1].rng == pools[t].rng, axis=-1)
        assert not np.any(changed & ~used)
        assert changed.sum() == (min(2, used.sum()) if (t + 1) % 3 == 0 else 0)
        used &= ~changed
        np.testing.assert_array_equal(tr.info["reset_pool_used"][t] > 0, used)
        n_restarts += done.sum()
        n_refilled += changed.sum()
    assert n_restarts >= 50 and n_refilled == 16


def test_pooled_restarts_with_full_budget_never_reuse_an_initial_state():
    _, (init, tr) = _pooled_rollout(num_envs=4, reset_chunk=4, refill_every=1)
    starts = np.concatenate([init.params["pole_mass"], tr.params["pole_mass"][tr.first > 0]])
    assert len(starts) >= 30
    assert len(np.unique(starts)) == len(starts)
    # A budget of one refill every other step must reuse slots in the same rollout.
    _, (init, tr) = _pooled_rollout(num_envs=4, reset_chunk=1, refill_every=2)
    starts = tr.params["pole_mass"][tr.first > 0]
    assert len(np.unique(starts)) < len(starts)
    with pytest.raises(ValueError, match="refill_every needs reset_pool=True"):
        VmapAutoReset(get_env("cartpole"), 4, refill_every=2)


def test_stepping_a_state_from_the_other_restart_mode_is_refused():
    env = get_env("cartpole")
    fresh, pooled = VmapAutoReset(env, 4), VmapAutoReset(env, 4, reset_pool=True)
    key = jax.random.PRNGKey(0)
    actions = jnp.zeros((4, env.action_size))
    with pytest.raises(ValueError, match="lacks 'reset_pool' but this VmapAutoReset has reset_pool=True"):
        pooled.step(fresh.reset(key), actions)
    with pytest.raises(ValueError, match="has 'reset_pool' but this VmapAutoReset has reset_pool=False"):
        fresh.step(pooled.reset(key), actions)


# ---------------------------------------------------------------- brax
@pytest.mark.slow
def test_brax_ant_scan():
    env = get_env("brax_ant", episode_length=50)
    venv = VmapAutoReset(env, 2)
    init, traj = jax.device_get(_make_rollout(venv, controlled=0)(jax.random.PRNGKey(0)))
    env.schema.check_shapes(traj.obs, "critic")
    assert np.isfinite(traj.obs["proprio"]).all()
    assert traj.truncated.sum() >= 1 or traj.terminated.sum() >= 1


# -------------------------------------------------------------- registry
def test_registry_names_and_errors():
    assert set(list_envs()) >= {"cartpole", "brax_inverted_pendulum", "brax_ant", "quadruped_rough"}
    with pytest.raises(ValueError, match="unknown environment 'nope'.*cartpole"):
        get_env("nope")
    with pytest.raises(ValueError, match="'episode_lenght'"):
        get_env("cartpole", episode_lenght=10)
    with pytest.raises(ValueError, match="'not_an_option'"):
        get_env("brax_inverted_pendulum", not_an_option=1)


def test_registry_overrides_shape_the_stack():
    env = get_env("cartpole", randomize=False, noise_std=0.0, history_length=0, episode_length=17)
    assert env.episode_length == 17
    assert env.schema.student_obs == ("cart_pos", "pole_angle", "last_action")
    assert "dyn_params" not in env.schema.all_fields
    assert [w["type"] for w in env.fingerprint()["wrappers"]] == ["TimeLimit"]
    env = get_env("cartpole", noise_std={"cart_pos": 0.2}, history_length=3, fall_angle=0.5)
    assert env.unwrapped.config.fall_angle == 0.5
    assert env.schema.field_specs["history"].shape == (3, 4)
    assert env.fingerprint()["wrappers"][1] == {"type": "SensorNoise", "std": {"cart_pos": 0.2}}


def test_import_is_cheap_and_lazy():
    code = (
        "import sys, time; t = time.time(); import distill_jax.envs as e; "
        "assert 'brax' not in sys.modules, 'brax imported'; "
        "assert 'distill_jax.envs.quadruped' not in sys.modules, 'quadruped imported'; "
        "assert 'distill_jax.envs.cartpole' not in sys.modules, 'cartpole imported'; "
        "e.list_envs(); assert 'distill_jax.envs.quadruped' not in sys.modules; print(time.time() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(importlib.util.find_spec("mujoco_playground") is not None, reason="playground installed")
def test_playground_adapter_names_the_missing_extra():
    from distill_jax.envs import PlaygroundEnvAdapter

    with pytest.raises(ImportError, match="mujoco_playground.*playground"):
        PlaygroundEnvAdapter("CartpoleBalance")

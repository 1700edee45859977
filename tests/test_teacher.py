"""PPO teacher: rollout semantics, determinism, multi-seed vmap, multi-device sharding, NaN guard."""

import dataclasses
import functools
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.config import ConfigError, DistillConfig, PPOConfig, StudentConfig
from distill_jax.distill.phase import build_student, initial_student_states
from distill_jax.envs import VmapAutoReset, get_env
from distill_jax.envs.base import Wrapper
from distill_jax.loop import NonFiniteError, check_finite
from distill_jax.ppo.teacher import initial_teacher_states, train_teacher
from distill_jax.networks import make_teacher_networks
from distill_jax.ppo.update import train_step
from distill_jax.treeops import first_seed
from distill_jax.rollout import PolicyStep, unroll

TINY = PPOConfig(
    num_envs=16, unroll_length=8, num_minibatches=2, num_epochs=2, total_env_steps=16 * 8 * 2,
)


@pytest.fixture(scope="module")
def env():
    return get_env("cartpole")


def leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_unroll_records_true_next_obs_and_flags(env):
    batched = VmapAutoReset(get_env("cartpole", episode_length=5), 4)
    state = batched.reset(jax.random.PRNGKey(0))

    def zero_policy(carry, obs, first, key):
        a = jnp.zeros((first.shape[0], batched.action_size))
        return carry, PolicyStep(a, a, jnp.zeros(first.shape), a, jnp.ones_like(a))

    _, _, tr = jax.jit(lambda s: unroll(batched, s, zero_policy, None, jax.random.PRNGKey(1), 12))(state)
    # Episodes of 5 steps: truncation at steps 4 and 9, new episode first obs at steps 0, 5, 10.
    np.testing.assert_array_equal(tr.truncated[:, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(tr.first[:, 0], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0])
    # next_obs equals the following obs except across the reset, where it is the final obs.
    for name in tr.obs:
        same = np.asarray(tr.next_obs[name][:-1] == tr.obs[name][1:]).reshape(11, 4, -1).all(-1)
        assert same[[0, 1, 2, 3, 5, 6, 7, 8, 10]].all()


def test_same_seed_same_params(env):
    a = train_teacher(env, TINY, seed=3)
    b = train_teacher(env, TINY, seed=3)
    assert leaves_equal(a.state.params, b.state.params)
    c = train_teacher(env, TINY, seed=4)
    assert not leaves_equal(a.state.params, c.state.params)


def test_seed_k_of_multi_seed_run_equals_single_run(env):
    multi = train_teacher(env, TINY, seed=10, num_seeds=2)
    single = train_teacher(env, TINY, seed=11)
    for m, s in zip(jax.tree.leaves(multi.state.params), jax.tree.leaves(single.state.params)):
        np.testing.assert_allclose(m[1], s[0], rtol=1e-4, atol=1e-5)
    assert len(multi.history[0]["episode_return"]) == 2


def test_unrolled_minibatch_loop_takes_the_same_steps(env):
    """``sgd_epochs(unroll=M)`` only changes how the loop compiles: the same minibatches, the same Adam steps."""
    from distill_jax.ppo import update as ppo_update
    from distill_jax.sgd import make_optimizer, sgd_epochs

    batched = VmapAutoReset(env, TINY.num_envs)
    nets = make_teacher_networks(env.schema, env.action_size, TINY.network)
    state = first_seed(initial_teacher_states(batched, nets, TINY, 0, 1))
    batch = ppo_update.collect(state, state.key, env=batched, nets=nets, config=TINY).batch
    plain = ppo_update.ppo_epochs(state.params, state.opt_state, batch, state.key, nets=nets, config=TINY,
                                  hparams=state.hparams)
    unrolled = jax.jit(lambda p, o: sgd_epochs(
        p, o, batch, state.key, loss_fn=ppo_update.make_ppo_loss(nets, TINY, state.hparams),
        optimizer=make_optimizer(TINY.learning_rate, TINY.max_grad_norm), num_epochs=TINY.num_epochs,
        num_minibatches=TINY.num_minibatches, unroll=TINY.num_minibatches))(state.params, state.opt_state)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(plain[0]),
                                                             jax.tree.leaves(state.params)))
    assert moved > 1e-4  # the epochs did train, so agreement below is not trivial
    for a, b in zip(jax.tree.leaves(plain[:2]), jax.tree.leaves(unrolled[:2])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain[2]["loss"], unrolled[2]["loss"], rtol=1e-5)


def test_saturated_steps_metric_counts_mean_actions_at_the_bound(env):
    """A constant mean action tanh(bias): tanh(5) = 0.9999 is saturated, tanh(1) = 0.76 is not."""
    batched = VmapAutoReset(env, TINY.num_envs)
    nets = make_teacher_networks(env.schema, env.action_size, TINY.network)
    state = first_seed(initial_teacher_states(batched, nets, TINY, 0, 1))
    step = jax.jit(functools.partial(train_step, env=batched, nets=nets, config=TINY))
    actor = state.params["actor"]["params"]
    for bias, expected in ((5.0, 1.0), (1.0, 0.0)):
        loc = {"bias": jnp.full_like(actor["head"]["loc"]["bias"], bias),
               "kernel": jnp.zeros_like(actor["head"]["loc"]["kernel"])}
        params = {**state.params, "actor": {"params": {**actor, "head": {**actor["head"], "loc": loc}}}}
        _, metrics = step(state.replace(params=params))
        assert float(metrics["policy/saturated_steps"]) == expected


def _qr_operand_ranks(fn) -> list[int]:
    jaxpr = str(jax.make_jaxpr(fn)())
    return [len(m.group(1).split(",")) for m in re.finditer(r"f32\[([0-9,]+)\] \S+ = qr\[", jaxpr)]


def test_seeds_are_initialised_without_batched_lapack_qr(env):
    """A vmapped orthogonal init is a batched CPU QR, which deadlocks jaxlib 0.10 on 2 cores (it hung CI)."""
    batched = VmapAutoReset(env, TINY.num_envs)
    nets = make_teacher_networks(batched.schema, batched.action_size, TINY.network)
    config = DistillConfig(student=StudentConfig(kind="gru", gru_size=8))
    student = build_student(batched, config)
    for init in (lambda: initial_teacher_states(batched, nets, TINY, 0, 4),
                 lambda: initial_student_states(batched, student, config, 0, 4)):
        ranks = _qr_operand_ranks(init)
        assert ranks and set(ranks) == {2}, ranks  # one [rows, cols] matrix per QR, no seed axis


def test_config_errors_name_field():
    with pytest.raises(ConfigError, match="ppo.num_minibatches=3"):
        PPOConfig(num_envs=16, unroll_length=8, num_minibatches=3).validate()
    with pytest.raises(ConfigError, match="ppo.num_envs=-4"):
        PPOConfig(num_envs=-4).validate()
    with pytest.raises(ConfigError, match="ppo.gamma=1.5"):
        PPOConfig(gamma=1.5).validate()
    with pytest.raises(ConfigError, match=r"ppo.action_bound=1.0.*\(0, 1\)"):
        PPOConfig(action_bound=1.0).validate()
    with pytest.raises(ConfigError, match="ppo.bound_coef=-1"):
        PPOConfig(bound_coef=-1.0).validate()
    with pytest.raises(ConfigError, match=r"ppo.entropy='tanh'.*'squashed'"):
        PPOConfig(entropy="tanh").validate()


def test_non_finite_guard_names_update_and_field():
    metrics = {"finite": {"obs['x']": np.array([[True], [True]]), "loss": np.array([[True], [False]])}}
    with pytest.raises(NonFiniteError, match=r"in loss at update 8 \(seed index 0\)"):
        check_finite(metrics, 6)


class NaNObservationAfter(Wrapper):
    """Real env whose ``cart_pos``-like first student field turns NaN after ``k`` steps."""

    def __init__(self, env, k):
        super().__init__(env)
        self.k = k

    def reset(self, key):
        state = self.env.reset(key)
        return state.replace(info={**state.info, "nan_clock": jnp.zeros(())})

    def step(self, state, action):
        clock = state.info["nan_clock"] + 1
        state = self.env.step(state, action)
        name = self.schema.student_obs[0]
        poisoned = jnp.where(clock > self.k, jnp.nan, state.obs[name])
        return state.replace(obs={**state.obs, name: poisoned}, info={**state.info, "nan_clock": clock})


def test_non_finite_observation_stops_training_before_checkpoint(env):
    saved = []
    config = dataclasses.replace(TINY, total_env_steps=16 * 8 * 4)
    name = env.schema.student_obs[0]
    with pytest.raises(NonFiniteError, match=rf"in obs\['{name}'\] at update 2"):
        train_teacher(NaNObservationAfter(env, k=12), config, updates_per_call=1, on_chunk=lambda s, n: saved.append(n))
    assert saved == [1]  # the first (finite) update was handed over, the poisoned one was not


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from distill_jax.config import PPOConfig
    from distill_jax.envs import get_env
    from distill_jax.ppo.teacher import train_teacher
    assert jax.device_count() == 8, jax.devices()
    env = get_env("cartpole")
    cfg = PPOConfig(num_envs=16, unroll_length=8, num_minibatches=2, num_epochs=2, total_env_steps=16 * 8 * 2)
    many = train_teacher(env, cfg, seed=5)
    one = train_teacher(env, cfg, seed=5, devices=jax.devices()[:1])
    sh = jax.tree.leaves(many.state.env_state)[1].sharding
    assert len(sh.device_set) == 8, sh
    # Sharded and unsharded programs sum gradients in different orders. Adam divides by the
    # gradient's running RMS, so for a parameter whose gradient is near zero that rounding can
    # move it by up to one learning rate (3e-4) per step (8 steps here). Elsewhere the two
    # runs must agree closely: a real difference between the programs (other data, other
    # gradients) would move most parameters by far more than 1e-5.
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(many.state.params)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(one.state.params)])
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=cfg.learning_rate)
    close = np.isclose(a, b, rtol=1e-4, atol=1e-5)
    assert close.mean() > 0.999, f"{(~close).sum()} of {close.size} parameters differ"
    print("MULTI_DEVICE_OK")
    """
)


@pytest.mark.slow  # a subprocess that compiles twice (~75 s on 2 cores)
def test_eight_cpu_devices_match_one_device():
    env_vars = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT], capture_output=True, text=True, env=env_vars,
        cwd=pathlib.Path(__file__).parent,
    )
    assert "MULTI_DEVICE_OK" in out.stdout, out.stderr[-3000:]


def test_annealed_learning_rate_falls_linearly_to_zero_over_the_phases_gradient_steps():
    from distill_jax.sgd import make_optimizer

    config = dataclasses.replace(TINY, anneal_lr=True)
    assert config.anneal_steps == config.num_updates * 2 * 2 == 8 and TINY.anneal_steps == 0
    optimizer = make_optimizer(0.1, 1e9, anneal_steps=4)
    params = jnp.zeros(3)
    state = optimizer.init(params)
    steps = []
    for _ in range(6):
        # A constant gradient: Adam's normalised direction is exactly 1, so the step is the rate.
        updates, state = optimizer.update(jnp.ones(3), state, params)
        steps.append(float(-updates[0]))
    np.testing.assert_allclose(steps, [0.1, 0.075, 0.05, 0.025, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ConfigError, match=r"ppo\.anneal_lr"):
        dataclasses.replace(TINY, anneal_lr=1).validate()

"""Policies stepped side by side on one batched env get the transitions they would get alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.distributions import TanhGaussian
from distill_jax.envs import get_env
from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.policy import policy_step
from distill_jax.rollout import unroll, unroll_together

N, T = 4, 40


def _noisy(gain: float):
    """A stochastic feed-forward policy: pushes against the pole with Gaussian noise (uses its key)."""
    def policy(carry, obs, first, key):
        loc = gain * obs["pole_angle"][:, :1]
        return carry, policy_step(TanhGaussian(loc, jnp.full_like(loc, 0.3)), key, deterministic=False)
    return policy


def _counting(carry, obs, first, key):
    """A recurrent policy whose carry counts the steps since its episode began (reset by ``first``)."""
    carry = (carry + 1.0) * (1.0 - first)
    loc = jnp.sin(carry)[:, None]
    return carry, policy_step(TanhGaussian(loc, jnp.ones_like(loc)), key, deterministic=True)


@pytest.fixture(scope="module")
def env():
    return get_env("cartpole")


def test_each_policy_gets_the_transitions_it_gets_alone(env):
    keys = jax.random.split(jax.random.PRNGKey(5), N)
    policies, carries = [_noisy(-2.0), _counting], [None, jnp.zeros(N)]
    joint_env = VmapAutoReset(env, 2 * N)
    together = jax.jit(lambda: unroll_together(joint_env, joint_env.reset_with_keys(jnp.tile(keys, (2, 1))),
                                               policies, carries, jax.random.PRNGKey(9), T))()
    single = VmapAutoReset(env, N)
    for policy, carry, tr in zip(policies, carries, together):
        _, _, alone = jax.jit(lambda p=policy, c=carry: unroll(single, single.reset_with_keys(keys), p, c,
                                                              jax.random.PRNGKey(9), T))()
        assert tr.reward.shape == (T, N)
        for got, want in zip(jax.tree.leaves(tr), jax.tree.leaves(alone)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Different policies really acted differently (the blocks were not mixed up or shared).
    assert not np.allclose(together[0].policy.action, together[1].policy.action)
    assert float(jnp.max(together[0].terminated + together[1].terminated)) > 0  # resets happened


def test_a_mismatched_call_names_what_is_wrong(env):
    batched = VmapAutoReset(env, 5)
    state = batched.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="do not split into 2 equal blocks"):
        unroll_together(batched, state, [_noisy(1.0), _noisy(1.0)], [None, None], jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="one carry per policy"):
        unroll_together(batched, state, [_noisy(1.0)], [None, None], jax.random.PRNGKey(0), 2)

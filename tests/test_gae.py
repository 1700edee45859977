"""GAE vs a plain NumPy double loop, with mixed terminations and truncations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.ppo import compute_gae


def numpy_gae(r, v, nv, term, trunc, gamma, lam):
    T, B = r.shape
    adv = np.zeros((T, B))
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            if term[t, b]:
                target = r[t, b]
            else:
                target = r[t, b] + gamma * nv[t, b]
            delta = target - v[t, b]
            if term[t, b] or trunc[t, b]:
                running = delta  # the episode ends here: nothing flows back across
            else:
                running = delta + gamma * lam * running
            adv[t, b] = running
    return adv, adv + v


def random_rollout(seed, T=12, B=5):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, B))
    v = rng.normal(size=(T, B))
    nv = np.concatenate([v[1:], rng.normal(size=(1, B))])
    ends = rng.uniform(size=(T, B))
    term = (ends < 0.15).astype(np.float32)
    trunc = ((ends >= 0.15) & (ends < 0.3)).astype(np.float32)
    # On an episode end next_values is V(final obs), not V(first obs of the next episode).
    done = np.maximum(term, trunc).astype(bool)
    nv = np.where(done, rng.normal(size=(T, B)), nv)
    return r, v, nv, term, trunc


@pytest.mark.parametrize("seed,gamma,lam", [(0, 0.99, 0.95), (1, 0.9, 1.0), (2, 0.97, 0.0)])
def test_matches_numpy_double_loop(seed, gamma, lam):
    r, v, nv, term, trunc = random_rollout(seed)
    assert term.any() and trunc.any()
    adv, ret = jax.jit(compute_gae)(r, v, nv, term, trunc, gamma, lam)
    ref_adv, ref_ret = numpy_gae(r, v, nv, term, trunc, gamma, lam)
    assert adv.shape == ret.shape == r.shape
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)


def test_hand_computed_single_env():
    # t0 continues, t1 truncated (bootstraps from final obs value 10), t2 terminated.
    r = np.array([[1.0], [2.0], [3.0]])
    v = np.array([[0.5], [1.0], [2.0]])
    nv = np.array([[1.0], [10.0], [7.0]])
    term = np.array([[0.0], [0.0], [1.0]])
    trunc = np.array([[0.0], [1.0], [0.0]])
    g, lam = 0.5, 0.5
    adv, ret = compute_gae(r, v, nv, term, trunc, g, lam)
    a2 = 3.0 - 2.0  # no bootstrap on termination
    a1 = 2.0 + g * 10.0 - 1.0  # bootstrap on truncation; recursion stops
    a0 = (1.0 + g * 1.0 - 0.5) + g * lam * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [a0 + 0.5, a1 + 1.0, a2 + 2.0], rtol=1e-6)


def test_lambda_one_no_ends_gives_discounted_returns():
    rng = np.random.default_rng(3)
    T, B, g = 8, 2, 0.9
    r = rng.normal(size=(T, B))
    v = rng.normal(size=(T, B))
    last = rng.normal(size=(B,))
    nv = np.concatenate([v[1:], last[None]])
    zeros = np.zeros((T, B))
    _, ret = compute_gae(r, v, nv, zeros, zeros, g, 1.0)
    mc = np.array([sum(g**k * r[t + k] for k in range(T - t)) + g ** (T - t) * last for t in range(T)])
    np.testing.assert_allclose(ret, mc, rtol=1e-5, atol=1e-5)


def test_vmap_over_gamma_and_no_gradient():
    r, v, nv, term, trunc = random_rollout(4)
    gammas = jnp.array([0.9, 0.99])
    adv = jax.vmap(lambda g: compute_gae(r, v, nv, term, trunc, g, 0.95)[0])(gammas)
    for i, g in enumerate([0.9, 0.99]):
        np.testing.assert_allclose(adv[i], numpy_gae(r, v, nv, term, trunc, g, 0.95)[0], rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda vv: jnp.sum(compute_gae(r, vv, nv, term, trunc, 0.9, 0.9)[0]))(jnp.asarray(v))
    np.testing.assert_array_equal(grad, 0.0)

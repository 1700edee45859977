"""Tanh-Gaussian: closed forms vs independent NumPy/Monte-Carlo references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import distributions as D


def make_dist(key, shape=(4, 3)):
    k1, k2 = jax.random.split(key)
    loc = jax.random.normal(k1, shape)
    scale = jnp.exp(0.5 * jax.random.normal(k2, shape))
    return D.TanhGaussian(loc, scale)


def np_normal_logpdf(x, m, s):
    return -0.5 * ((x - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)


def test_sample_shapes_range_and_relation():
    dist = make_dist(jax.random.PRNGKey(0), (5, 2, 3))
    action, raw = D.sample(dist, jax.random.PRNGKey(1))
    assert action.shape == raw.shape == (5, 2, 3)
    np.testing.assert_allclose(action, np.tanh(raw), rtol=1e-6)
    assert np.all(np.abs(action) <= 1.0)


def test_sample_moments_match_parameters():
    dist = D.TanhGaussian(jnp.array([0.3, -1.0]), jnp.array([0.5, 2.0]))
    keys = jax.random.split(jax.random.PRNGKey(2), 20000)
    _, raw = jax.vmap(D.sample, in_axes=(None, 0))(dist, keys)
    np.testing.assert_allclose(raw.mean(0), [0.3, -1.0], atol=0.05)
    np.testing.assert_allclose(raw.std(0), [0.5, 2.0], rtol=0.03)


def test_log_probs_match_numpy_reference():
    dist = make_dist(jax.random.PRNGKey(3))
    raw = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (4, 3))) * 2.0
    loc, scale = np.asarray(dist.loc, np.float64), np.asarray(dist.scale, np.float64)
    gauss = np_normal_logpdf(raw, loc, scale).sum(-1)
    squashed = gauss - np.log(1.0 - np.tanh(raw) ** 2).sum(-1)
    np.testing.assert_allclose(D.gaussian_log_prob(dist, raw), gauss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(D.log_prob(dist, raw), squashed, rtol=1e-5, atol=1e-5)


def test_log_prob_is_density_of_squashed_action():
    # The squashed density integrates to one over (-1, 1) (1-D, trapezoid).
    dist = D.TanhGaussian(jnp.array([[0.4]]), jnp.array([[0.8]]))
    a = np.linspace(-1 + 1e-6, 1 - 1e-6, 200001)
    raw = np.arctanh(a)[:, None, None]
    dens = np.exp(np.asarray(D.log_prob(dist, jnp.asarray(raw, jnp.float32)))[:, 0])
    assert abs(np.trapezoid(dens, a) - 1.0) < 1e-3


def test_log_prob_stable_for_saturated_actions():
    dist = D.TanhGaussian(jnp.zeros(2), jnp.ones(2))
    raw = jnp.array([30.0, -30.0])
    lp = D.log_prob(dist, raw)
    # log(1 - tanh(x)^2) ~ log 4 - 2|x| for large |x|.
    expected = float(D.gaussian_log_prob(dist, raw)) - 2 * (math.log(4.0) - 60.0)
    assert np.isfinite(float(lp))
    np.testing.assert_allclose(float(lp), expected, rtol=1e-5)
    g = jax.grad(lambda r: D.log_prob(dist, r))(raw)
    assert np.all(np.isfinite(g))


def test_entropy_closed_form_and_monte_carlo():
    dist = make_dist(jax.random.PRNGKey(5), (3,))
    scale = np.asarray(dist.scale, np.float64)
    closed = np.sum(0.5 * np.log(2 * np.pi * np.e * scale**2))
    np.testing.assert_allclose(float(D.entropy(dist)), closed, rtol=1e-5)
    keys = jax.random.split(jax.random.PRNGKey(6), 50000)
    _, raw = jax.vmap(D.sample, in_axes=(None, 0))(dist, keys)
    mc = -np.mean(D.gaussian_log_prob(dist, raw))
    assert abs(mc - closed) < 0.03


def test_squashed_entropy_matches_monte_carlo_of_the_squashed_density():
    """Independent estimate: -E[log p(tanh(raw))] over samples, with log_prob's own Jacobian."""
    loc = jnp.array([0.0, 0.5, -2.0, 1.0, 0.0])
    scale = jnp.array([0.05, 0.3, 1.0, 3.0, 10.0])
    dist = D.TanhGaussian(loc, scale)
    raw = loc + scale * jax.random.normal(jax.random.PRNGKey(7), (400_000, 5))
    per_dim_logp = jax.vmap(lambda r: D.log_prob(D.TanhGaussian(loc[:, None], scale[:, None]), r[:, None]))(raw)
    mc = -np.mean(np.asarray(per_dim_logp, np.float64), axis=0)  # [5]
    sem = np.std(np.asarray(per_dim_logp, np.float64), axis=0) / np.sqrt(raw.shape[0])
    quad = np.array([float(D.squashed_entropy(D.TanhGaussian(loc[i:i + 1], scale[i:i + 1]))) for i in range(5)])
    # Exact where the scale is <= 1; 16 nodes lose a little on the narrow bend of wider Gaussians.
    np.testing.assert_allclose(quad[:3], mc[:3], atol=5 * sem[:3].max() + 2e-3)
    np.testing.assert_allclose(quad[3:], mc[3:], rtol=0.03, atol=5 * sem[3:].max())
    np.testing.assert_allclose(float(D.squashed_entropy(dist)), quad.sum(), rtol=1e-5)  # sums over A


def test_squashed_entropy_is_bounded_and_pulls_a_large_scale_back():
    """Uniform on [-1, 1] (log 2 per dimension) bounds it; its gradient in the scale turns negative
    past the peak, where the Gaussian entropy's gradient stays 1/scale > 0 at every scale."""
    scales = jnp.geomspace(0.01, 1000.0, 200)
    h = jax.vmap(lambda s: D.squashed_entropy(D.TanhGaussian(jnp.zeros(3), jnp.full(3, s))))(scales)
    assert float(jnp.max(h)) < 3 * math.log(2.0)
    peak = float(scales[int(jnp.argmax(h))])
    assert 0.7 < peak < 1.0  # the peak at loc 0 is near scale 0.87
    slope = jax.vmap(jax.grad(lambda s: D.squashed_entropy(D.TanhGaussian(jnp.zeros(1), s[None]))))(scales)
    assert np.all(np.asarray(slope)[np.asarray(scales) > 1.2] < 0)
    gaussian_slope = jax.vmap(jax.grad(lambda s: D.entropy(D.TanhGaussian(jnp.zeros(1), s[None]))))(scales)
    assert np.all(np.asarray(gaussian_slope) > 0)
    # Gradient ascent on the squashed entropy alone settles the scale; on the Gaussian one it runs away.
    def ascend(entropy_fn):
        log_s = jnp.log(3.0)
        for _ in range(300):
            log_s = log_s + 0.1 * jax.grad(lambda ls: entropy_fn(D.TanhGaussian(jnp.zeros(1), jnp.exp(ls)[None])))(log_s)
        return float(jnp.exp(log_s))
    assert 0.7 < ascend(D.squashed_entropy) < 1.0
    assert ascend(D.entropy) > 3.0 * math.exp(29.0)


def test_config_entropy_kinds_are_the_distribution_table():
    from distill_jax.config import ENTROPY_KINDS

    assert set(ENTROPY_KINDS) == set(D.ENTROPIES)


def test_mode_is_tanh_loc():
    dist = make_dist(jax.random.PRNGKey(7))
    np.testing.assert_allclose(D.mode(dist), np.tanh(np.asarray(dist.loc)), rtol=1e-6)


def test_kl_closed_form_zero_and_monte_carlo():
    p = make_dist(jax.random.PRNGKey(8), (3,))
    q = make_dist(jax.random.PRNGKey(9), (3,))
    assert abs(float(D.kl(p, p))) < 1e-6
    assert float(D.kl(p, q)) > 0.0
    # Monte Carlo of E_p[log p - log q] on squashed densities (Jacobians cancel).
    keys = jax.random.split(jax.random.PRNGKey(10), 200000)
    _, raw = jax.vmap(D.sample, in_axes=(None, 0))(p, keys)
    mc = np.asarray(D.log_prob(p, raw) - D.log_prob(q, raw), np.float64)
    se = mc.std() / np.sqrt(mc.size)
    assert abs(mc.mean() - float(D.kl(p, q))) < 4 * se + 1e-3


def test_kl_batched_matches_loop():
    p = make_dist(jax.random.PRNGKey(11), (6, 2))
    q = make_dist(jax.random.PRNGKey(12), (6, 2))
    batched = D.kl(p, q)
    assert batched.shape == (6,)
    for i in range(6):
        pi = D.TanhGaussian(p.loc[i], p.scale[i])
        qi = D.TanhGaussian(q.loc[i], q.scale[i])
        mp, sp, mq, sq = (np.asarray(v, np.float64) for v in (pi.loc, pi.scale, qi.loc, qi.scale))
        ref = np.sum(np.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5)
        np.testing.assert_allclose(float(batched[i]), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", [0.05, 0.5, 1.0, 3.0])
def test_scale_parameterisation_roundtrip(target):
    x = D.raw_for_scale(target, min_std=1e-3)
    np.testing.assert_allclose(float(D.scale_from_raw(jnp.float32(x), 1e-3)), target, rtol=1e-5)
    assert float(D.scale_from_raw(jnp.float32(-100.0), 1e-3)) >= 1e-3
    with pytest.raises(ValueError):
        D.raw_for_scale(1e-4, min_std=1e-3)


def test_functions_jit_and_vmap():
    dist = make_dist(jax.random.PRNGKey(13), (5, 3))
    raw = jnp.ones((5, 3))
    for fn in (D.log_prob, D.gaussian_log_prob):
        np.testing.assert_allclose(jax.jit(fn)(dist, raw), jax.vmap(fn)(dist, raw), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(D.entropy)(dist), jax.vmap(D.entropy)(dist), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(D.kl)(dist, dist), jax.vmap(D.kl)(dist, dist), atol=1e-6)

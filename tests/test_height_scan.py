"""The deployable height scan (distill_jax.envs.height_scan): geometry against a closed-form terrain,
and each declared imperfection's statistics over many vmapped episodes, one imperfection at a time."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.envs.height_scan import (
    HeightScanConfig,
    exact_scan,
    scan_offsets,
    scan_points,
    scan_reset,
    scan_step,
)

N = 4096  # episodes per statistic
# Every imperfection off: each test switches on the one it measures.
CLEAN = HeightScanConfig(nx=5, ny=4, noise_std=0.0, offset_std=0.0, drift_std=0.0, dropout=0.0, latency=0)


def run(cfg: HeightScanConfig, exact: jax.Array, steps: int, seed: int = 0) -> jax.Array:
    """Delivered fields ``[steps + 1, N, nx, ny, 2]`` (reset, then ``steps`` steps) for exact scans
    ``exact`` ``[steps + 1, nx, ny]`` shared by the ``N`` episodes."""

    def episode(key):
        k0, key = jax.random.split(key)
        state, first = scan_reset(cfg, k0, exact[0])

        def body(state, inp):
            k, e = inp
            state, out = scan_step(cfg, state, k, e)
            return state, out

        _, rest = jax.lax.scan(body, state, (jax.random.split(key, steps), exact[1:]))
        return jnp.concatenate([first[None], rest], axis=0)

    out = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(seed), N))
    return np.asarray(jnp.swapaxes(out, 0, 1))


def flat_exact(cfg: HeightScanConfig, steps: int, level: float = -0.3) -> jax.Array:
    return jnp.full((steps + 1, cfg.nx, cfg.ny), level, jnp.float32)


# ------------------------------------------------------------------ geometry
def test_points_are_a_yaw_frame_grid_and_heights_are_exact_on_a_plane():
    cfg = HeightScanConfig(nx=5, ny=3, spacing=0.2, x_offset=0.1)
    off = scan_offsets(cfg)
    assert off.shape == (5, 3, 2)
    np.testing.assert_allclose(off[:, 0, 0], [-0.3, -0.1, 0.1, 0.3, 0.5], atol=1e-6)  # x: back to front
    np.testing.assert_allclose(off[0, :, 1], [-0.2, 0.0, 0.2], atol=1e-6)  # y: right to left
    # Facing +y (yaw = pi/2): the frontmost point lies 0.5 m along world +y, the leftmost column along world -x.
    pts = np.asarray(scan_points(cfg, jnp.array([1.0, 2.0]), jnp.float32(np.pi / 2)))
    np.testing.assert_allclose(pts[4, 1], [1.0, 2.5], atol=1e-6)
    np.testing.assert_allclose(pts[2, 2], [1.0 - 0.2, 2.1], atol=1e-6)
    # A plane is represented exactly by the triangulated height field: the scan is the plane's height.
    half, res = 3.0, 0.1
    xs = np.linspace(-half, half, int(2 * half / res) + 1)
    a, b, c = 0.3, -0.2, 1.5
    heights = (a * xs[None, :] + b * xs[:, None] + c).astype(np.float32)
    base, yaw = np.array([0.4, -0.7, 1.9]), 0.9
    got = np.asarray(exact_scan(cfg, jnp.asarray(heights), half, half, jnp.asarray(base), jnp.float32(yaw)))
    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    world = base[:2] + off @ rot.T
    np.testing.assert_allclose(got, a * world[..., 0] + b * world[..., 1] + c - base[2], atol=2e-5)


def test_a_clean_scan_is_the_exact_one_clipped_and_valid():
    steps = 3
    exact = jnp.asarray(np.random.default_rng(0).uniform(-1.5, 1.5, (steps + 1, CLEAN.nx, CLEAN.ny)), jnp.float32)
    out = run(CLEAN, exact, steps)
    np.testing.assert_allclose(out[..., 0], np.broadcast_to(np.clip(exact, -1, 1)[:, None], out[..., 0].shape))
    assert np.all(out[..., 1] == 1.0)


# ---------------------------------------------------------- imperfections
def test_noise_has_the_declared_std_and_is_independent_per_point():
    cfg = dataclasses.replace(CLEAN, noise_std=0.03)
    out = run(cfg, flat_exact(cfg, 2), 2)
    err = out[..., 0] - (-0.3)  # [3, N, nx, ny]
    assert abs(err.std() / 0.03 - 1) < 0.01 and abs(err.mean()) < 4 * 0.03 / np.sqrt(err.size)
    # Neighbouring points, and consecutive steps of one point, are uncorrelated.
    for a, b in ((err[:, :, 1:], err[:, :, :-1]), (err[1:], err[:-1])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02


def test_offset_is_per_episode_with_the_declared_distribution():
    cfg = dataclasses.replace(CLEAN, offset_std=0.05)
    out = run(cfg, flat_exact(cfg, 20), 20)
    err = out[..., 0] + 0.3  # [21, N, nx, ny]
    # One value per episode: the same at every point and every step.
    np.testing.assert_allclose(err, np.broadcast_to(err[:1, :, :1, :1], err.shape), atol=1e-6)
    per_episode = err[0, :, 0, 0]
    assert abs(per_episode.std() / 0.05 - 1) < 0.05 and abs(per_episode.mean()) < 4 * 0.05 / np.sqrt(N)
    # Gaussian: the quartiles sit at +-0.6745 std (a uniform of the same std would put them at +-0.866 std).
    np.testing.assert_allclose(np.quantile(per_episode, [0.25, 0.75]) / 0.05, [-0.6745, 0.6745], atol=0.05)


def test_drift_is_a_random_walk_with_the_declared_increment_and_bound():
    steps = 50
    cfg = dataclasses.replace(CLEAN, drift_std=0.004, drift_limit=10.0)
    out = run(cfg, flat_exact(cfg, steps), steps)
    drift = out[:, :, 0, 0, 0] + 0.3  # [steps + 1, N]; common to all points
    np.testing.assert_allclose(out[..., 0] + 0.3, np.broadcast_to(drift[..., None, None], out[..., 0].shape),
                               atol=1e-6)
    assert np.all(drift[0] == 0)  # no drift at the start of an episode
    steps_ = np.diff(drift, axis=0)
    assert abs(steps_.std() / 0.004 - 1) < 0.02
    assert abs(np.corrcoef(steps_[1:].ravel(), steps_[:-1].ravel())[0, 1]) < 0.02  # independent increments
    # Variance grows linearly: var(drift_n) = n drift_std^2.
    assert abs(drift[steps].var() / (steps * 0.004 ** 2) - 1) < 0.08
    # A tight bound holds at every step, and the walk does reach it.
    bounded = dataclasses.replace(cfg, drift_limit=0.01)
    drift = run(bounded, flat_exact(bounded, steps), steps)[:, :, 0, 0, 0] + 0.3
    assert np.abs(drift).max() <= 0.01 + 1e-6 and np.mean(np.abs(drift[-1]) > 0.0099) > 0.1


def test_dropout_drops_the_declared_fraction_with_fill_and_validity():
    cfg = dataclasses.replace(CLEAN, dropout=0.1, fill_value=0.7)
    out = run(cfg, flat_exact(cfg, 2), 2)
    valid = out[..., 1]
    assert set(np.unique(valid)) == {0.0, 1.0}
    dropped = valid == 0
    se = np.sqrt(0.1 * 0.9 / dropped.size)
    assert abs(dropped.mean() - 0.1) < 4 * se
    np.testing.assert_array_equal(out[..., 0][dropped], np.float32(0.7))
    np.testing.assert_allclose(out[..., 0][~dropped], -0.3)
    # Independent per point: dropping one point says nothing about its neighbour.
    assert abs(np.corrcoef(dropped[..., 1:].ravel(), dropped[..., :-1].ravel())[0, 1]) < 0.02


@pytest.mark.parametrize("latency", [0, 1, 3])
def test_latency_delivers_the_reading_exactly_k_steps_old(latency):
    cfg = dataclasses.replace(CLEAN, latency=latency)
    steps = 8
    # The exact scan at step t is t centimetres everywhere: the delivered value names its step.
    exact = jnp.broadcast_to(0.01 * jnp.arange(steps + 1, dtype=jnp.float32)[:, None, None],
                             (steps + 1, cfg.nx, cfg.ny))
    out = run(cfg, exact, steps)
    delivered_step = np.round(out[..., 0] / 0.01).astype(int)  # [steps + 1, N, nx, ny]
    expected = np.maximum(np.arange(steps + 1) - latency, 0)  # the first reading stands in before
    np.testing.assert_array_equal(delivered_step, np.broadcast_to(expected[:, None, None, None], delivered_step.shape))


def test_the_latency_buffer_delays_noise_and_dropout_too():
    """What is delayed is the whole reading, as measured then: the same noise and the same holes."""
    cfg = dataclasses.replace(CLEAN, noise_std=0.02, dropout=0.2, latency=2)
    no_delay = dataclasses.replace(cfg, latency=0)
    exact = flat_exact(cfg, 6)

    def readings(c):
        state, first = scan_reset(c, jax.random.PRNGKey(0), exact[0])
        out = [first]
        for t, k in enumerate(jax.random.split(jax.random.PRNGKey(1), 6)):
            state, o = scan_step(c, state, k, exact[t + 1])
            out.append(o)
        return np.stack(out)

    delayed, direct = readings(cfg), readings(no_delay)
    np.testing.assert_array_equal(delayed[2:], direct[:-2])


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("field, value, why", [
    ("noise_std", -0.01, ">= 0"),
    ("offset_std", float("nan"), "finite"),
    ("drift_limit", -1.0, ">= 0"),
    ("dropout", 1.0, r"\[0, 1\)"),
    ("latency", -1, "integer >= 0"),
    ("nx", 0, "integer >= 1"),
    ("spacing", 0.0, "> 0"),
    ("clip", float("inf"), "finite"),
])
def test_bad_configs_are_refused_in_one_line_naming_the_field(field, value, why):
    with pytest.raises(ValueError, match=rf"^HeightScanConfig\.{field}=.*{why}") as e:
        HeightScanConfig(**{field: value})
    assert "\n" not in str(e.value)


def test_a_scan_grid_larger_than_the_map_is_refused():
    cfg = HeightScanConfig(nx=41, ny=41, spacing=0.2)
    with pytest.raises(ValueError, match=r"^HeightScanConfig\.spacing=0\.2 .*reaches .* half extent 3 m") as e:
        cfg.check_fits(3.0, 8.0)
    assert "\n" not in str(e.value)
    HeightScanConfig().check_fits(3.0, 3.0)  # the default's ~0.7 m reach fits

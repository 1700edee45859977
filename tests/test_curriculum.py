"""The terrain curriculum (distill_jax.envs.curriculum) on scripted episode outcomes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.envs.curriculum import (
    CurriculumConfig,
    assign_types,
    init_levels,
    level_distribution,
    update_levels,
)

L, TILE = 4, 5.0  # levels 0..3; promotion beyond 2.5 m with the default half a tile
KEY = jax.random.PRNGKey(0)

# (level, done, distance m, commanded distance m, fell) -> expected level, with the rule that decides it.
SCRIPT = [
    (1, 1, 3.0, 10.0, 0, 2),   # far enough: up
    (1, 1, 3.0, 10.0, 1, 2),   # far enough then fell: still up (Rudin: distance decides first)
    (1, 1, 2.5, 4.0, 0, 1),    # exactly half a tile is not beyond it; 2.5 >= half of 4: stays
    (1, 1, 1.0, 10.0, 0, 0),   # walked under half of what was commanded: down
    (1, 1, 2.0, 3.0, 0, 1),    # short of promotion but over half the command: stays
    (1, 1, 2.0, 3.0, 1, 0),    # ... and fell: down
    (0, 1, 0.0, 10.0, 1, 0),   # down from the easiest level: clamped at 0
    (2, 0, 9.0, 10.0, 0, 2),   # no episode ended: unchanged whatever the distance
    (2, 0, 0.0, 10.0, 1, 2),
    (3, 1, 2.0, 3.0, 0, 3),    # at the hardest level and not promoted: stays
]


def script_arrays():
    a = np.array(SCRIPT, dtype=np.float64)
    return (jnp.asarray(a[:, 0], jnp.int32), jnp.asarray(a[:, 1]), jnp.asarray(a[:, 2], jnp.float32),
            jnp.asarray(a[:, 3], jnp.float32), jnp.asarray(a[:, 4]), a[:, 5].astype(int))


@pytest.mark.parametrize("jit", [False, True])
def test_scripted_outcomes_move_levels_as_specified(jit):
    levels, done, dist, cmd, fell, expected = script_arrays()
    update = lambda *args: update_levels(CurriculumConfig(), *args, num_levels=L, tile_size=TILE)  # noqa: E731
    update = jax.jit(update) if jit else update
    new, counts = update(levels, done, dist, cmd, fell, KEY)
    np.testing.assert_array_equal(np.asarray(new), expected)
    assert new.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(counts["promoted"]), (expected > np.asarray(levels)).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(counts["demoted"]),
                                  [0, 0, 0, 1, 0, 1, 1, 0, 0, 0])  # the clamped one at 0 was demoted too
    assert float(counts["resampled"].sum()) == 0.0


def test_thresholds_follow_the_config():
    levels, done, dist, cmd, fell, _ = script_arrays()
    cfg = CurriculumConfig(promote_fraction=0.3, demote_fraction=0.1, demote_on_fall=False, resample_at_max=False)
    new, _ = update_levels(cfg, levels, done, dist, cmd, fell, KEY, num_levels=L, tile_size=TILE)
    # Promotion now beyond 1.5 m, demotion below a tenth of the command (1.0 m is not below 1.0 m), falls
    # alone do not demote, the hardest level keeps a promoted env.
    np.testing.assert_array_equal(np.asarray(new), [2, 2, 2, 1, 2, 2, 0, 2, 2, 3])


def test_promoted_past_the_hardest_level_resamples_uniformly_or_stays():
    n = 20000
    levels = jnp.full(n, L - 1, jnp.int32)
    ones = jnp.ones(n)
    args = (levels, ones, jnp.full(n, 4.0), jnp.full(n, 10.0), jnp.zeros(n), KEY)
    new, counts = update_levels(CurriculumConfig(), *args, num_levels=L, tile_size=TILE)
    freq = np.bincount(np.asarray(new), minlength=L) / n
    np.testing.assert_allclose(freq, 1 / L, atol=4 * np.sqrt(0.25 * 0.75 / n))
    assert float(counts["resampled"].mean()) == 1.0
    kept, counts = update_levels(CurriculumConfig(resample_at_max=False), *args, num_levels=L, tile_size=TILE)
    assert np.all(np.asarray(kept) == L - 1) and float(counts["resampled"].sum()) == 0.0


def test_levels_outside_the_grid_are_refused_in_one_line():
    _, done, dist, cmd, fell, _ = script_arrays()
    for bad in (5, -1):
        levels = jnp.asarray([0, 1, 2, 3, bad, 0, 0, 0, 0, 0], jnp.int32)
        with pytest.raises(ValueError, match=rf"^levels: \[{bad}\] outside the map's levels 0\.\.3$"):
            update_levels(CurriculumConfig(), levels, done, dist, cmd, fell, KEY, num_levels=L, tile_size=TILE)
    with pytest.raises(ValueError, match=r"^CurriculumConfig\.init_max_level=4: outside the map's levels 0\.\.3$"):
        init_levels(CurriculumConfig(init_max_level=4), KEY, 8, L)
    with pytest.raises(ValueError, match=r"^CurriculumConfig\.promote_fraction=-0\.5: must be"):
        CurriculumConfig(promote_fraction=-0.5)
    # Traced levels cannot raise: they are clamped into the grid.
    levels = jnp.asarray([7, -3, 1, 1, 1, 1, 1, 1, 1, 1], jnp.int32)
    new, _ = jax.jit(lambda lv: update_levels(CurriculumConfig(), lv, jnp.zeros(10), dist, cmd, fell, KEY,
                                              num_levels=L, tile_size=TILE))(levels)
    assert np.asarray(new)[:2].tolist() == [L - 1, 0]


def test_initial_levels_types_and_the_logged_distribution():
    n = 8000
    levels = init_levels(CurriculumConfig(init_max_level=2), KEY, n, L)
    freq = np.bincount(np.asarray(levels), minlength=L) / n
    np.testing.assert_allclose(freq, [1 / 3, 1 / 3, 1 / 3, 0.0], atol=0.02)
    np.testing.assert_allclose(np.asarray(level_distribution(levels, L)), freq, atol=1e-6)
    assert np.asarray(init_levels(CurriculumConfig(), KEY, 16, L)).tolist() == [0] * 16
    np.testing.assert_array_equal(np.asarray(assign_types(10, 7)), [0, 1, 2, 3, 4, 5, 6, 0, 1, 2])

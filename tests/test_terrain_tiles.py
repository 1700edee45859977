"""The tiled curriculum terrain (distill_jax.terrain_tiles): layout, grades measured on the generated
array, determinism, held-out maps, MuJoCo's collision surface, and one-line refusals of bad configs.

NumPy and MuJoCo only, except one comparison with the JAX lookup the MJX task uses.
"""

from __future__ import annotations

import dataclasses
import math

import mujoco
import numpy as np
import pytest

from distill_jax.heightfield import heights_hash, surface_plane
from distill_jax.terrain_tiles import (
    TILE_TYPES,
    TileTerrainConfig,
    describe_tiles,
    generate_tile_heights,
    level_value,
    tile_centre,
    tile_of,
    tile_origin,
)

CFG = TileTerrainConfig()  # the default map: 10 levels x 7 types of 5 m tiles at 5 cm
SMALL = TileTerrainConfig(num_levels=3, tile_size=3.0, border=0.5, resolution=0.1, step_width=0.25)


@pytest.fixture(scope="module")
def heights():
    return generate_tile_heights(CFG)


def tile_patch(cfg: TileTerrainConfig, heights: np.ndarray, level: int, kind: str, owned: bool = False) -> np.ndarray:
    """The ``[n + 1, n + 1]`` nodes of one tile (row = y), edges included; ``owned``: ``[n, n]``, without the
    last row and column (shared with the next tiles, which write them)."""
    x0, y0 = tile_origin(cfg, level, cfg.type_index(kind))
    c0 = int(round((x0 + cfg.half_x) / cfg.resolution))
    r0 = int(round((y0 + cfg.half_y) / cfg.resolution))
    n = int(round(cfg.tile_size / cfg.resolution))
    m = n if owned else n + 1
    return heights[r0:r0 + m, c0:c0 + m].astype(np.float64)


def offset_cells(right: np.ndarray, platform_cells: int) -> int:
    """Cells between the platform's edge and the first node that leaves its height, on a row from the centre."""
    left_platform = np.flatnonzero(np.abs(right - right[0]) > 1e-6)
    return int(left_platform[0]) - 1 - platform_cells


def centre_row(cfg, heights, level, kind) -> np.ndarray:
    """The row through the tile centre, without its last node (shared with, and written by, the next tile)."""
    patch = tile_patch(cfg, heights, level, kind)
    return patch[patch.shape[0] // 2, :-1]


# ------------------------------------------------------------------ layout
def test_grid_size_and_extent_follow_from_the_tiles(heights):
    assert heights.shape == (CFG.nrow, CFG.ncol) == (10 * 100 + 40 + 1, 7 * 100 + 40 + 1)
    assert CFG.half_x == pytest.approx(0.5 * (7 * 5.0 + 2.0)) and CFG.half_y == pytest.approx(0.5 * (50.0 + 2.0))
    assert heights.dtype == np.float32 and float(heights.min()) == 0.0
    # The border is flat.
    b = int(round(CFG.border / CFG.resolution))
    border = np.concatenate([heights[:b].ravel(), heights[-b:].ravel(), heights[:, :b].ravel(), heights[:, -b:].ravel()])
    assert np.ptp(border) == 0.0


def test_tile_lookups_are_inverse_and_bounded():
    levels, types = np.meshgrid(np.arange(CFG.num_levels), np.arange(len(CFG.types)), indexing="ij")
    x, y = tile_centre(CFG, levels, types)
    lv, ty = tile_of(CFG, x, y)
    np.testing.assert_array_equal(lv, levels)
    np.testing.assert_array_equal(ty, types)
    # The origin is the lower-left corner: a point just inside is that tile, just outside the previous one.
    x0, y0 = tile_origin(CFG, 4, 2)
    assert tuple(map(int, tile_of(CFG, x0 + 1e-3, y0 + 1e-3))) == (4, 2)
    assert tuple(map(int, tile_of(CFG, x0 - 1e-3, y0 - 1e-3))) == (3, 1)
    assert (x0, y0) == pytest.approx((-CFG.half_x + 1.0 + 2 * 5.0, -CFG.half_y + 1.0 + 4 * 5.0))
    # Off the map and on the border: the nearest tile.
    assert tuple(map(int, tile_of(CFG, -100.0, 100.0))) == (CFG.max_level, 0)
    assert tuple(map(int, tile_of(CFG, CFG.half_x - 0.1, -CFG.half_y + 0.1))) == (0, len(CFG.types) - 1)


@pytest.mark.parametrize("level, type_index, field", [(-1, 0, "level"), (10, 0, "level"), (2.5, 0, "level"),
                                                      (0, 7, "type_index"), (0, -1, "type_index")])
def test_a_tile_outside_the_grid_is_refused_in_one_line(level, type_index, field):
    with pytest.raises(ValueError, match=rf"^{field}=.*outside the map's") as e:
        tile_centre(CFG, level, type_index)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="level=.*outside"):
        tile_centre(CFG, np.array([0, 3, 11]), np.zeros(3, int))


def test_spawn_platforms_are_flat(heights):
    p = int(round(CFG.platform_size / 2 / CFG.resolution))
    for level in range(CFG.num_levels):
        for kind in CFG.types:
            patch = tile_patch(CFG, heights, level, kind)
            c = patch.shape[0] // 2
            assert np.ptp(patch[c - p:c + p + 1, c - p:c + p + 1]) < 1e-6, (level, kind)


# ------------------------------------------------------------- the grades
def test_slopes_have_the_declared_grade_and_direction(heights):
    hardest = CFG.max_level
    grades = []
    for level in range(CFG.num_levels):
        for kind, sign in (("slope_up", 1.0), ("slope_down", -1.0)):
            patch = tile_patch(CFG, heights, level, kind)
            # Rise over run between neighbouring nodes, along x and along y: the steepest is the grade.
            steepest = max(np.abs(np.diff(patch, axis=1)).max(), np.abs(np.diff(patch, axis=0)).max()) / CFG.resolution
            assert steepest == pytest.approx(level_value(CFG, "slope_grade", level), abs=2e-4)
            # Walking out from the centre (right half of the centre row) climbs on slope_up, descends on slope_down.
            row = centre_row(CFG, heights, level, kind)
            right = row[len(row) // 2:]
            if level > 0:
                assert sign * (right[-1] - right[0]) > 0
            grades.append(steepest)
    assert level_value(CFG, "slope_grade", hardest) >= 0.30  # the issue's >= 30 % grade
    # The whole face of the hardest slope is at that grade (not just one pair of nodes), from where it
    # starts (within feature_offset of the platform) to the tile edge.
    row = centre_row(CFG, heights, hardest, "slope_up")
    c, p = len(row) // 2, int(round(CFG.platform_size / 2 / CFG.resolution))
    start = c + p + offset_cells(row[c:], p)
    assert start - c - p <= round(CFG.feature_offset / CFG.resolution)
    np.testing.assert_allclose(np.diff(row[start:]) / CFG.resolution, CFG.slope_grade[1], atol=2e-4)


def test_stairs_have_the_declared_step_height_and_tread(heights):
    for level in (0, CFG.num_levels // 2, CFG.max_level):
        rise = level_value(CFG, "step_height", level)
        for kind, sign in (("stairs_up", 1.0), ("stairs_down", -1.0)):
            row = centre_row(CFG, heights, level, kind)
            right = row[len(row) // 2:]  # from the centre to the tile edge
            jumps = np.diff(right)
            steps = np.flatnonzero(np.abs(jumps) > 1e-5)
            np.testing.assert_allclose(jumps[steps], sign * rise, atol=2e-5)
            # The first step is one tread past where the staircase starts, feature_offset at most
            # beyond the platform; from there whole treads fill the tile.
            offset = (steps[0] + 1) * CFG.resolution - CFG.platform_size / 2 - CFG.step_width
            assert -1e-9 <= offset <= CFG.feature_offset + 1e-9
            n_steps = math.floor(((CFG.tile_size - CFG.platform_size) / 2 - offset) / CFG.step_width + 1e-6)
            # The row stops one node short of the tile edge, where a step whose tread ends exactly there is.
            edge_step = math.isclose(CFG.platform_size / 2 + offset + n_steps * CFG.step_width, CFG.tile_size / 2)
            assert len(steps) == n_steps - edge_step
            # Treads: the nodes between consecutive steps span step_width.
            np.testing.assert_allclose(np.diff(steps) * CFG.resolution, CFG.step_width, atol=1e-9)
    assert CFG.step_height[1] >= 0.15  # the issue's >= 15 cm steps


def test_blocks_gaps_and_rough_have_their_declared_sizes(heights):
    for level in (0, CFG.max_level):
        # Blocks: heights within +-block_height of the platform, reaching near it, in block_size squares.
        h = level_value(CFG, "block_height", level)
        patch = tile_patch(CFG, heights, level, "blocks")
        rel = patch - patch[patch.shape[0] // 2, patch.shape[1] // 2]
        assert np.abs(rel).max() <= 2 * h + 1e-5 and np.ptp(rel) > 1.5 * h
        # Off the platform, heights change only across block edges: u = +-block_size / 2 + k block_size.
        row = rel[rel.shape[0] // 2, :-1]  # without the node the next tile writes
        u = (np.arange(len(row)) - len(row) // 2) * CFG.resolution
        after = u[1:][np.abs(np.diff(row)) > 1e-6]  # the node just past each change
        after = after[(after < -CFG.platform_size / 2) | (after > CFG.platform_size / 2 + CFG.resolution)]
        k = (after + CFG.block_size / 2) / CFG.block_size
        assert len(after) >= 8 and np.allclose(k, np.round(k), atol=1e-6), after
        # Gaps: the moat's top width (first to last node below the platform, plus the slanted cells) is gap_width.
        w = level_value(CFG, "gap_width", level)
        row = centre_row(CFG, heights, level, "gaps")
        right = row[len(row) // 2:] - row[len(row) // 2]
        deep = np.flatnonzero(right < -1e-6)
        if w == 0:
            assert deep.size == 0
        else:
            assert (deep.size + 1) * CFG.resolution == pytest.approx(w)
            assert right.min() == pytest.approx(-CFG.gap_depth, abs=1e-5)
        # Rough: peak to peak over the tile is the amplitude (the platform sits inside the range).
        patch = tile_patch(CFG, heights, level, "rough", owned=True)  # the nodes this tile writes
        assert np.ptp(patch) == pytest.approx(level_value(CFG, "rough_amplitude", level), abs=1e-5)


def test_levels_get_harder(heights):
    def steepest(level, kind):
        patch = tile_patch(CFG, heights, level, kind)
        return np.abs(np.diff(patch, axis=1)).max()

    for kind in ("slope_up", "stairs_down", "blocks", "gaps"):
        values = [steepest(level, kind) for level in range(CFG.num_levels)]
        assert np.all(np.diff(values) >= -1e-6) and values[-1] > values[0], (kind, values)


# ------------------------------------------------------ determinism, held-out
def test_same_config_same_map_other_seed_other_map(heights):
    again = generate_tile_heights(TileTerrainConfig())
    np.testing.assert_array_equal(again, heights)
    assert heights_hash(again) == heights_hash(heights)
    held_out = generate_tile_heights(dataclasses.replace(CFG, seed=1))
    assert held_out.shape == heights.shape and heights_hash(held_out) != heights_hash(heights)
    # The random tiles differ at every level; the slopes, stairs and moats begin elsewhere on most tiles
    # (one of seven offsets each: the same one on about a seventh of them), with the same grades.
    for level in range(CFG.num_levels):
        for kind in ("rough", "blocks"):
            a, b = tile_patch(CFG, heights, level, kind), tile_patch(CFG, held_out, level, kind)
            assert np.mean(np.abs(a - b) > 1e-4) > 0.5, (level, kind)
    for kind in ("slope_up", "slope_down", "stairs_up", "stairs_down", "gaps"):
        moved = [not np.allclose(tile_patch(CFG, heights, level, kind), tile_patch(CFG, held_out, level, kind))
                 for level in range(1, CFG.num_levels)]  # level 0 of a slope or a moat is flat
        assert sum(moved) >= len(moved) // 2, (kind, moved)
    d = describe_tiles(CFG, heights)
    assert d["heights_hash"] == heights_hash(heights) and d["seed"] == 0 and d["types"] == list(TILE_TYPES)


def test_a_tile_does_not_depend_on_the_other_columns():
    fewer = TileTerrainConfig(types=("blocks", "rough"), num_levels=2, seed=3)
    full = TileTerrainConfig(num_levels=2, seed=3)
    a, b = generate_tile_heights(fewer), generate_tile_heights(full)
    for kind in ("rough", "blocks"):
        pa, pb = tile_patch(fewer, a, 1, kind, owned=True), tile_patch(full, b, 1, kind, owned=True)
        np.testing.assert_allclose(pa - pa[0, 0], pb - pb[0, 0], atol=1e-5)


# ------------------------------------------------- MuJoCo's collision surface
def hfield_model(cfg: TileTerrainConfig, heights: np.ndarray) -> mujoco.MjModel:
    top = max(float(heights.max()), 1e-3)
    xml = f"""<mujoco><asset><hfield name="terrain" nrow="{cfg.nrow}" ncol="{cfg.ncol}"
      size="{cfg.half_x!r} {cfg.half_y!r} {top!r} 0.2"/></asset>
      <worldbody><geom name="floor" type="hfield" hfield="terrain"/></worldbody></mujoco>"""
    m = mujoco.MjModel.from_xml_string(xml)
    m.hfield_data[:] = (heights / top).ravel()
    return m


def test_exact_heights_are_mujocos_collision_surface():
    import jax.numpy as jnp

    from distill_jax.envs.terrain import terrain_height

    heights = generate_tile_heights(SMALL)
    m = hfield_model(SMALL, heights)
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    rng = np.random.default_rng(0)
    pts = rng.uniform([-SMALL.half_x + 0.05, -SMALL.half_y + 0.05], [SMALL.half_x - 0.05, SMALL.half_y - 0.05],
                      size=(300, 2))
    # Add points right at stair edges and gap walls, where the surface is steepest.
    lv, ty = np.arange(SMALL.num_levels), np.full(SMALL.num_levels, SMALL.type_index("stairs_up"))
    cx, cy = tile_centre(SMALL, lv, ty)
    edge = SMALL.platform_size / 2 + SMALL.step_width + np.array([-0.03, -0.01, 0.01, 0.03])
    pts = np.concatenate([pts, np.stack(np.broadcast_arrays(cx[:, None] + edge, cy[:, None] + 0.37), -1).reshape(-1, 2)])
    top = float(heights.max()) + 1.0
    geom = np.array([-1], np.int32)
    ray = np.empty(len(pts))
    for i, (x, y) in enumerate(pts):
        ray[i] = top - mujoco.mj_ray(m, d, np.array([x, y, top]), np.array([0.0, 0.0, -1.0]), None, 1, -1, geom)
        assert geom[0] == 0
    ours, _, _ = surface_plane(heights, SMALL.half_x, SMALL.half_y, pts[:, 0], pts[:, 1])
    np.testing.assert_allclose(ours, ray, atol=2e-5)
    jax_h = terrain_height(jnp.asarray(heights), SMALL.half_x, SMALL.half_y, jnp.asarray(pts[:, 0]),
                           jnp.asarray(pts[:, 1]))
    np.testing.assert_allclose(np.asarray(jax_h), ray, atol=2e-5)
    assert np.ptp(ray) > 0.3  # the probes saw the relief, not a flat patch


# -------------------------------------------------------------- refusals
@pytest.mark.parametrize("field, value, why", [
    ("num_levels", 0, "integer >= 1"),
    ("tile_size", -1.0, ">= 0"),
    ("tile_size", float("nan"), "finite"),
    ("resolution", 0.0, "> 0"),
    ("border", 0.33, "whole number of grid cells"),
    ("slope_grade", (0.0, float("inf")), "finite"),
    ("step_height", (0.05, -0.1), ">= 0"),
    ("gap_width", (0.0, 2.5), "do not fit"),
    ("gap_depth", -0.5, ">= 0"),
    ("types", ("rough", "ice"), "unknown type"),
    ("types", ("rough", "rough"), "appears twice"),
    ("platform_size", 6.0, "smaller than tile_size"),
    ("step_width", 2.5, "no whole step"),
    ("seed", -2, "integer >= 0"),
    ("feature_offset", -0.1, ">= 0"),
    ("feature_offset", float("nan"), "finite"),
])
def test_bad_configs_are_refused_in_one_line_naming_the_field(field, value, why):
    with pytest.raises(ValueError, match=rf"^TileTerrainConfig\.{field}=.*{why}") as e:
        TileTerrainConfig(**{field: value})
    assert "\n" not in str(e.value)

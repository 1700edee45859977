"""A tiled terrain of typed, graded tiles for a terrain curriculum, NumPy only.

The map is a grid of square tiles of side ``tile_size`` (m) surrounded by a flat
border of width ``border``: tile *rows* (the height array's row index, world y)
are difficulty **levels** ``0 .. num_levels - 1`` (easiest first), tile
*columns* (world x) are terrain **types** in the order of ``TileTerrainConfig.types``.
Tile ``(level, type)`` occupies::

    x in [-half_x + border + type  * tile_size, ... + tile_size]
    y in [-half_y + border + level * tile_size, ... + tile_size]

The heights use the layout of :mod:`distill_jax.heightfield` (``[nrow, ncol]``
float32 metres, row = y, column = x, the square ``[-half_x, half_x] x [-half_y,
half_y]`` centred on the origin, minimum 0), so the exact lookups
:func:`distill_jax.heightfield.surface_plane` and
:func:`distill_jax.envs.terrain.terrain_height` / ``terrain_plane`` apply as they
are, and the MJCF edit takes ``nrow``, ``ncol``, ``half_x``, ``half_y`` off this
config as off a :class:`~distill_jax.heightfield.TerrainConfig`.

Tile types (each with a flat square platform of side ``platform_size`` at the
tile centre, where an env spawns; ``d`` is the Chebyshev distance from the
centre, so the slopes and stairs are square pyramids and every walking
direction meets the same grade):

* ``rough``: smooth value noise of peak-to-peak ``rough_amplitude``;
* ``slope_up`` / ``slope_down``: a pit / a hill with grade (rise over run)
  ``slope_grade``: walking away from the centre climbs / descends;
* ``stairs_up`` / ``stairs_down``: the same with steps of rise ``step_height``
  and tread ``step_width``;
* ``blocks``: square blocks of side ``block_size`` with heights uniform in
  ``[-block_height, block_height]`` (discrete stepping blocks);
* ``gaps``: a moat of width ``gap_width`` and depth ``gap_depth`` around the
  platform.

Each graded quantity is a ``(easiest, hardest)`` pair interpolated linearly
over the levels (:func:`level_value`). Every tile's random draws come from its
own generator seeded by ``(seed, level, TILE_TYPES index)``, so the same config
always gives the same map (the config is part of the environment fingerprint),
and reordering or dropping a type does not change the other tiles. A map with
another ``seed`` is a held-out map: same types and grades, other noise, blocks
and places where the slopes, stairs and moats begin (``feature_offset``). Outer
tile edges of slopes, stairs and gaps are at height 0 before the
final shift, so neighbouring tiles meet without a step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from distill_jax.heightfield import GridShape, _value_noise, heights_hash

TILE_TYPES = ("rough", "slope_up", "slope_down", "stairs_up", "stairs_down", "blocks", "gaps")
# The graded quantities: (easiest, hardest) pairs in metres (slope_grade: rise over run).
GRADED = ("rough_amplitude", "slope_grade", "step_height", "block_height", "gap_width")


def _is_whole(value: float, unit: float) -> bool:
    """``value`` is an integer multiple of ``unit`` (to float rounding)."""
    n = value / unit
    return abs(n - round(n)) < 1e-6


@dataclasses.dataclass(frozen=True)
class TileTerrainConfig(GridShape):
    """Parameters of the tiled curriculum terrain (lengths in metres).

    Attributes:
      types: tile types, one column each, from :data:`TILE_TYPES` (no repeats).
      num_levels: difficulty levels, one row of tiles each (>= 1).
      tile_size: side of a square tile; a multiple of ``resolution``.
      border: width of the flat border around the tiles; a multiple of ``resolution``.
      resolution: grid spacing of the height field.
      platform_size: side of the flat spawn platform at each tile centre.
      rough_amplitude: peak-to-peak height of the ``rough`` noise, (easiest, hardest).
      rough_scale: wavelength of the ``rough`` noise.
      slope_grade: rise over run of the slopes, (easiest, hardest).
      step_height: rise of one stair step, (easiest, hardest).
      step_width: tread of one stair step.
      block_height: half range of the block heights, (easiest, hardest).
      block_size: side of one stepping block.
      gap_width: width of the moat around the platform, (easiest, hardest); 0 = no moat.
      gap_depth: depth of the moat.
      feature_offset: each slope, staircase and moat starts a random distance in ``[0, feature_offset]``
        beyond the platform's edge (whole grid cells, drawn per tile), so another seed moves every
        feature, not only the noise and the blocks; 0 puts them all at the edge.
      seed: NumPy seed; another seed is another (held-out) map.
    """

    types: tuple[str, ...] = TILE_TYPES
    num_levels: int = 10
    tile_size: float = 5.0
    border: float = 1.0
    resolution: float = 0.05
    platform_size: float = 1.0
    rough_amplitude: tuple[float, float] = (0.02, 0.10)
    rough_scale: float = 0.3
    slope_grade: tuple[float, float] = (0.0, 0.40)
    step_height: tuple[float, float] = (0.03, 0.18)
    step_width: float = 0.3
    block_height: tuple[float, float] = (0.01, 0.10)
    block_size: float = 0.4
    gap_width: tuple[float, float] = (0.0, 0.30)
    gap_depth: float = 0.5
    feature_offset: float = 0.3
    seed: int = 0

    def __post_init__(self):
        def fail(name: str, why: str) -> None:
            raise ValueError(f"TileTerrainConfig.{name}={getattr(self, name)!r}: {why}")

        if isinstance(self.types, str) or not self.types:
            fail("types", f"must be a non-empty tuple of {TILE_TYPES}")
        object.__setattr__(self, "types", tuple(self.types))  # a list from JSON or the CLI
        unknown = [t for t in self.types if t not in TILE_TYPES]
        if unknown:
            fail("types", f"unknown type(s) {unknown}; known: {TILE_TYPES}")
        if len(set(self.types)) != len(self.types):
            fail("types", "a type appears twice")
        if isinstance(self.num_levels, bool) or not isinstance(self.num_levels, (int, np.integer)) \
                or self.num_levels < 1:
            fail("num_levels", "must be an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            fail("seed", "must be an integer >= 0")
        scalars = ("tile_size", "border", "resolution", "platform_size", "rough_scale", "step_width",
                   "block_size", "gap_depth", "feature_offset")
        for name in scalars + GRADED:
            value = getattr(self, name)
            values = tuple(value) if name in GRADED else (value,)
            if name in GRADED:
                if len(values) != 2:
                    fail(name, "must be an (easiest, hardest) pair")
                object.__setattr__(self, name, tuple(float(v) for v in values))
            if not all(isinstance(v, (int, float, np.floating, np.integer)) and bool(np.isfinite(v)) for v in values):
                fail(name, "must be finite")
            if any(v < 0 for v in values):
                fail(name, "must be >= 0")
        for name in ("tile_size", "resolution", "platform_size", "rough_scale", "step_width", "block_size"):
            if getattr(self, name) <= 0:
                fail(name, "must be > 0")
        for name in ("tile_size", "border"):
            if not _is_whole(getattr(self, name), self.resolution):
                fail(name, f"must be a whole number of grid cells (resolution {self.resolution} m)")
        if self.tile_size < 4 * self.resolution:
            fail("tile_size", f"must span at least 4 grid cells of {self.resolution} m")
        if self.platform_size >= self.tile_size:
            fail("platform_size", f"must be smaller than tile_size {self.tile_size} m")
        if self.platform_size / 2 + self.feature_offset + self.gap_width[1] >= self.tile_size / 2:
            fail("gap_width", f"the platform ({self.platform_size} m), the feature offset ({self.feature_offset} m) "
                              f"and the moat do not fit in a {self.tile_size} m tile")
        if self.step_width >= (self.tile_size - self.platform_size) / 2 - self.feature_offset:
            fail("step_width", f"leaves no whole step between the platform, offset by up to {self.feature_offset} m, "
                               f"and the tile edge ({(self.tile_size - self.platform_size) / 2} m from the platform)")

    # Derived sizes (properties, never written back), named as on TerrainConfig so the MJCF edit
    # and the height lookups take either config.
    @property
    def half_x(self) -> float:
        return 0.5 * (len(self.types) * self.tile_size + 2 * self.border)

    @property
    def half_y(self) -> float:
        return 0.5 * (self.num_levels * self.tile_size + 2 * self.border)

    @property
    def max_level(self) -> int:
        return self.num_levels - 1

    def type_index(self, name: str) -> int:
        """The column of tile type ``name``.

        Raises:
          ValueError: ``name`` is not one of this map's types.
        """
        if name not in self.types:
            raise ValueError(f"tile type {name!r} is not on this map; its types are {self.types}")
        return self.types.index(name)


def level_fraction(cfg: TileTerrainConfig, level: int) -> float:
    """``level`` on ``[0, 1]``: 0 at level 0, 1 at the hardest (1 when there is only one level)."""
    _check_level(cfg, level)
    return 1.0 if cfg.num_levels == 1 else level / cfg.max_level


def level_value(cfg: TileTerrainConfig, name: str, level: int) -> float:
    """The graded quantity ``name`` (one of :data:`GRADED`) at ``level``: linear from easiest to hardest."""
    if name not in GRADED:
        raise ValueError(f"{name!r} is not a graded quantity; graded: {GRADED}")
    lo, hi = getattr(cfg, name)
    return lo + (hi - lo) * level_fraction(cfg, level)


def _check_level(cfg: TileTerrainConfig, level: Any) -> None:
    lv = np.asarray(level)
    if lv.size and (np.any(lv < 0) or np.any(lv > cfg.max_level) or np.any(lv != np.round(lv))):
        raise ValueError(f"level={level!r}: outside the map's levels 0..{cfg.max_level}")


def _check_type(cfg: TileTerrainConfig, type_index: Any) -> None:
    ti = np.asarray(type_index)
    if ti.size and (np.any(ti < 0) or np.any(ti >= len(cfg.types)) or np.any(ti != np.round(ti))):
        raise ValueError(f"type_index={type_index!r}: outside the map's types 0..{len(cfg.types) - 1} "
                         f"({cfg.types})")


def tile_origin(cfg: TileTerrainConfig, level: Any, type_index: Any) -> tuple[Any, Any]:
    """World ``(x, y)`` (m) of the lower-left corner of tile ``(level, type_index)``.

    Plain arithmetic, so it takes Python ints, NumPy or JAX arrays (any equal shapes); concrete
    values are checked against the grid.

    Raises:
      ValueError: a concrete level or type index outside the grid.
    """
    if not _is_traced(level):
        _check_level(cfg, level)
    if not _is_traced(type_index):
        _check_type(cfg, type_index)
    x0 = -cfg.half_x + cfg.border + type_index * cfg.tile_size
    y0 = -cfg.half_y + cfg.border + level * cfg.tile_size
    return x0, y0


def tile_centre(cfg: TileTerrainConfig, level: Any, type_index: Any) -> tuple[Any, Any]:
    """World ``(x, y)`` (m) of the centre of tile ``(level, type_index)`` (the spawn point);
    as :func:`tile_origin`."""
    x0, y0 = tile_origin(cfg, level, type_index)
    return x0 + 0.5 * cfg.tile_size, y0 + 0.5 * cfg.tile_size


def tile_of(cfg: TileTerrainConfig, x: Any, y: Any, xp: Any = np) -> tuple[Any, Any]:
    """The tile ``(level, type_index)`` under world ``(x, y)`` (m), as integer arrays.

    Points on the border or outside the map map to the nearest tile (clamped), so the result
    is always a valid tile. ``xp`` is the array namespace (``numpy`` or ``jax.numpy``).
    """
    t = (x - (-cfg.half_x + cfg.border)) / cfg.tile_size
    l = (y - (-cfg.half_y + cfg.border)) / cfg.tile_size  # noqa: E741
    type_index = xp.clip(xp.floor(t), 0, len(cfg.types) - 1).astype(xp.int32)
    level = xp.clip(xp.floor(l), 0, cfg.max_level).astype(xp.int32)
    return level, type_index


def _is_traced(value: Any) -> bool:
    """A JAX tracer (checked without importing JAX: this module stays JAX-free)."""
    return type(value).__module__.startswith("jax") and "Tracer" in type(value).__name__


# ------------------------------------------------------------------ tiles
def _tile(cfg: TileTerrainConfig, kind: str, level: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Heights (m) of one tile at local coordinates ``u`` (x) and ``v`` (y) from its centre.

    ``u`` ``[n]`` and ``v`` ``[n]`` span ``[-tile/2, tile/2]``; returns ``[n, n]`` (row = v).
    """
    rng = np.random.default_rng([cfg.seed, level, TILE_TYPES.index(kind)])
    d = np.maximum(np.abs(u)[None, :], np.abs(v)[:, None])  # Chebyshev distance from the centre
    half = 0.5 * cfg.tile_size
    p = 0.5 * cfg.platform_size
    if kind not in ("rough", "blocks"):  # their draws stay the first of their generators
        # The feature starts this far beyond the platform (whole cells, so it stays on the grid).
        p += cfg.resolution * int(rng.integers(0, int(np.floor(cfg.feature_offset / cfg.resolution + 1e-6)) + 1))
    # Nodes within half a cell of the platform's edge count as platform (float rounding on the grid).
    out = np.maximum(d - p, 0.0)
    out = np.where(out < 1e-6, 0.0, out)
    if kind == "rough":
        amplitude = level_value(cfg, "rough_amplitude", level)
        noise = _value_noise(rng, u, v, cfg.rough_scale)
        noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-9)
        heights = amplitude * noise
        # The platform sits at the noise's middle: at most half the amplitude above or below it.
        return np.where(d <= p, 0.5 * amplitude, heights)
    if kind in ("slope_up", "slope_down"):
        grade = level_value(cfg, "slope_grade", level)
        rise = grade * (half - p)  # platform to tile edge
        # slope_up: a pit, the edge (0) above the centre; slope_down: a hill.
        return grade * out - rise if kind == "slope_up" else rise - grade * out
    if kind in ("stairs_up", "stairs_down"):
        rise = level_value(cfg, "step_height", level)
        # Step k (k = 1, 2, ...) starts k treads out from the platform; the last partial tread
        # rounds to whole steps so that the tile edge sits at the top (bottom) step.
        n_steps = int(np.floor((half - p) / cfg.step_width + 1e-6))
        k = np.minimum(np.floor(out / cfg.step_width + 1e-6), n_steps)
        total = rise * n_steps
        return rise * k - total if kind == "stairs_up" else total - rise * k
    if kind == "blocks":
        h = level_value(cfg, "block_height", level)
        nb = int(np.ceil(cfg.tile_size / cfg.block_size)) + 1
        heights_of_blocks = rng.uniform(-h, h, size=(nb, nb))
        # Blocks are laid out from the tile centre so one is centred under the platform.
        bi = np.floor((u + 0.5 * cfg.block_size) / cfg.block_size + 1e-6).astype(int) + nb // 2
        bj = np.floor((v + 0.5 * cfg.block_size) / cfg.block_size + 1e-6).astype(int) + nb // 2
        heights = heights_of_blocks[np.ix_(np.clip(bj, 0, nb - 1), np.clip(bi, 0, nb - 1))]
        return np.where(d <= p, 0.0, heights)
    if kind == "gaps":
        w = level_value(cfg, "gap_width", level)
        moat = (d > p + 1e-6) & (d < p + w - 1e-6)
        return np.where(moat, -cfg.gap_depth, 0.0)
    raise AssertionError(kind)  # the config refuses unknown types


def generate_tile_heights(cfg: TileTerrainConfig) -> np.ndarray:
    """The tiled terrain, ``[nrow, ncol]`` float32 metres with minimum 0 (see the module docstring).

    Deterministic in ``cfg`` (including ``cfg.seed``). Neighbouring tiles share their edge
    row/column of nodes; the tile of higher level / type index writes it (after the
    others), and slopes, stairs and gaps have their edges at the same height anyway.
    """
    heights = np.zeros((cfg.nrow, cfg.ncol))
    n = int(round(cfg.tile_size / cfg.resolution))
    b = int(round(cfg.border / cfg.resolution))
    local = (np.arange(n + 1) - n / 2) * cfg.resolution  # node offsets from a tile centre
    for level in range(cfg.num_levels):
        for ti, kind in enumerate(cfg.types):
            r0, c0 = b + level * n, b + ti * n
            heights[r0:r0 + n + 1, c0:c0 + n + 1] = _tile(cfg, kind, level, local, local)
    heights -= heights.min()
    return heights.astype(np.float32)


def describe_tiles(cfg: TileTerrainConfig, heights: np.ndarray) -> dict[str, Any]:
    """JSON-able description of a generated tile map for fingerprints."""
    return {
        "kind": "tiles",
        **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()},
        "nrow": cfg.nrow,
        "ncol": cfg.ncol,
        "half_x": cfg.half_x,
        "half_y": cfg.half_y,
        "max_height": float(heights.max()),
        "heights_hash": heights_hash(heights),
    }

"""Procedural height-field terrain, NumPy only: shared by the MJX tasks and the JAX-free deploy side.

The terrain is a ``[nrow, ncol]`` grid of heights in metres over the square
``x in [-half_x, half_x]``, ``y in [-half_y, half_y]`` (row index = y, column
index = x, MuJoCo's ``hfield_data`` layout). It is generated on the host with
NumPy from a fixed seed, so the same :class:`TerrainConfig` always gives the
same terrain (it is part of the environment fingerprint), and is the sum of

* ``noise``  – smooth value noise (two octaves), peak-to-peak ``noise_amplitude``;
* ``steps``  – piecewise-constant blocks of side ``step_width`` with random
  heights in ``[0, step_height]`` (stairs/rubble-like edges);
* ``slopes`` – a triangle wave along a random direction with grade
  ``slope_grade`` (rise over run) and period ``slope_period``.

All amplitudes 0 gives a flat floor. Heights are shifted so the minimum is 0
and a flat ``spawn_flat_radius`` disc can be blended in around the origin.

:func:`surface_plane` is the NumPy twin of :func:`distill_jax.envs.terrain.terrain_plane`:
the height and slope of the surface MuJoCo collides with (each grid cell split along its
``(c, r)-(c+1, r+1)`` diagonal into two triangles, heights linear on each).

This module lives outside :mod:`distill_jax.envs` because importing that package imports
JAX; :mod:`distill_jax.envs.terrain` re-exports everything here next to its JAX lookups.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np


def grid_nodes(half_extent: float, resolution: float) -> int:
    """Nodes of a height-field axis spanning ``[-half_extent, half_extent]`` m at ``resolution`` m."""
    return int(round(2 * half_extent / resolution)) + 1


class GridShape:
    """``ncol``/``nrow`` of a height field from its ``half_x``, ``half_y`` and ``resolution`` (m)."""

    @property
    def ncol(self) -> int:
        return grid_nodes(self.half_x, self.resolution)

    @property
    def nrow(self) -> int:
        return grid_nodes(self.half_y, self.resolution)


@dataclasses.dataclass(frozen=True)
class TerrainConfig(GridShape):
    """Parameters of the procedural terrain (all lengths in metres).

    Attributes:
      half_x, half_y: half extents of the height field.
      resolution: grid spacing; ``ncol = 2 * half_x / resolution + 1``.
      noise_amplitude: peak-to-peak height of the smooth noise.
      noise_scale: wavelength of the coarse noise octave.
      step_height: maximum height of a step block (0 disables steps).
      step_width: side of a step block.
      slope_grade: rise over run of the ramps (0 disables slopes).
      slope_period: length of one up-and-down ramp period.
      spawn_flat_radius: radius of a flat disc at the origin (0 = none).
      seed: NumPy seed of the generator.
    """

    half_x: float = 8.0
    half_y: float = 8.0
    resolution: float = 0.1
    noise_amplitude: float = 0.05
    noise_scale: float = 1.5
    step_height: float = 0.04
    step_width: float = 0.8
    slope_grade: float = 0.08
    slope_period: float = 6.0
    spawn_flat_radius: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.resolution <= 0 or self.half_x <= 0 or self.half_y <= 0:
            raise ValueError("terrain half extents and resolution must be positive")
        for name in ("noise_amplitude", "step_height", "slope_grade", "spawn_flat_radius"):
            if getattr(self, name) < 0:
                raise ValueError(f"terrain {name} must be >= 0, got {getattr(self, name)}")
        if self.noise_scale <= 0 or self.step_width <= 0 or self.slope_period <= 0:
            raise ValueError("terrain noise_scale, step_width and slope_period must be positive")




def _value_noise(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, scale: float) -> np.ndarray:
    """Smooth noise in [0, 1]: random lattice values, smoothstep-interpolated."""
    gx = int(np.ceil((xs[-1] - xs[0]) / scale)) + 2
    gy = int(np.ceil((ys[-1] - ys[0]) / scale)) + 2
    lattice = rng.uniform(0.0, 1.0, size=(gy, gx))
    u = (xs - xs[0]) / scale
    v = (ys - ys[0]) / scale
    i0, j0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - i0, v - j0
    su, sv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    a = lattice[np.ix_(j0, i0)]
    b = lattice[np.ix_(j0, i0 + 1)]
    c = lattice[np.ix_(j0 + 1, i0)]
    d = lattice[np.ix_(j0 + 1, i0 + 1)]
    top = a + (b - a) * su[None, :]
    bottom = c + (d - c) * su[None, :]
    return top + (bottom - top) * sv[:, None]


def generate_heights(cfg: TerrainConfig) -> np.ndarray:
    """The terrain heights, ``[nrow, ncol]`` float32 metres, min 0.

    Deterministic in ``cfg`` (including ``cfg.seed``).
    """
    rng = np.random.default_rng(cfg.seed)
    xs = np.linspace(-cfg.half_x, cfg.half_x, cfg.ncol)
    ys = np.linspace(-cfg.half_y, cfg.half_y, cfg.nrow)
    heights = np.zeros((cfg.nrow, cfg.ncol))

    # Draw every random quantity unconditionally so that switching one
    # component off does not reshuffle the others.
    coarse = _value_noise(rng, xs, ys, cfg.noise_scale)
    fine = _value_noise(rng, xs, ys, cfg.noise_scale / 3.0)
    noise = 0.7 * coarse + 0.3 * fine
    noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-9)
    heights += cfg.noise_amplitude * noise

    nbx = int(np.ceil(2 * cfg.half_x / cfg.step_width)) + 1
    nby = int(np.ceil(2 * cfg.half_y / cfg.step_width)) + 1
    blocks = rng.uniform(0.0, 1.0, size=(nby, nbx))
    bi = np.minimum(((xs + cfg.half_x) / cfg.step_width).astype(int), nbx - 1)
    bj = np.minimum(((ys + cfg.half_y) / cfg.step_width).astype(int), nby - 1)
    heights += cfg.step_height * blocks[np.ix_(bj, bi)]

    angle = rng.uniform(0.0, np.pi)
    along = np.cos(angle) * xs[None, :] + np.sin(angle) * ys[:, None]
    phase = np.mod(along / cfg.slope_period, 1.0)
    triangle = 1.0 - np.abs(2.0 * phase - 1.0)  # 0 -> 1 -> 0 over one period
    heights += cfg.slope_grade * 0.5 * cfg.slope_period * triangle

    if cfg.spawn_flat_radius > 0:
        r = np.hypot(xs[None, :], ys[:, None])
        centre = heights[cfg.nrow // 2, cfg.ncol // 2]
        w = np.clip((r - cfg.spawn_flat_radius) / max(cfg.spawn_flat_radius, 1e-9), 0.0, 1.0)
        heights = w * heights + (1 - w) * centre

    heights -= heights.min()
    return heights.astype(np.float32)


def heights_hash(heights: np.ndarray) -> str:
    """Short hash of a height array (shape and float32 bytes)."""
    h = hashlib.sha256(str(heights.shape).encode())
    h.update(np.ascontiguousarray(heights, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def describe(cfg: TerrainConfig, heights: np.ndarray) -> dict[str, Any]:
    """JSON-able description of a generated terrain for fingerprints."""
    return {
        **dataclasses.asdict(cfg),
        "nrow": cfg.nrow,
        "ncol": cfg.ncol,
        "max_height": float(heights.max()),
        "heights_hash": heights_hash(heights),
    }


def surface_plane(heights: np.ndarray, half_x: float, half_y: float, x: Any, y: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The collision surface's height and slope at world ``(x, y)`` (NumPy, float64).

    Args:
      heights: ``[nrow, ncol]`` heights in metres (row = y, column = x).
      half_x, half_y: half extents of the field (m).
      x, y: query coordinates (m), any equal shapes; points outside the field are clamped to
        its edge, where the slope along a clamped axis is 0.

    Returns:
      ``(h, sx, sy)``: height (m) and slopes ``dh/dx``, ``dh/dy`` (m/m), each with the
      broadcast shape of ``x`` and ``y`` (same rule as the JAX ``terrain_plane``).
    """
    heights = np.asarray(heights, np.float64)
    nrow, ncol = heights.shape
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    du = (ncol - 1) / (2 * half_x)  # grid cells per metre along x
    dv = (nrow - 1) / (2 * half_y)
    u_raw, v_raw = (x + half_x) * du, (y + half_y) * dv
    u, v = np.clip(u_raw, 0.0, ncol - 1), np.clip(v_raw, 0.0, nrow - 1)
    c = np.clip(np.floor(u), 0, ncol - 2).astype(np.int64)
    r = np.clip(np.floor(v), 0, nrow - 2).astype(np.int64)
    fx, fy = u - c, v - r
    h00, h10 = heights[r, c], heights[r, c + 1]
    h01, h11 = heights[r + 1, c], heights[r + 1, c + 1]
    # Triangle (c,r)-(c+1,r)-(c+1,r+1) when fx >= fy, else (c,r)-(c,r+1)-(c+1,r+1).
    lower = fx >= fy
    height = np.where(lower, h00 + fx * (h10 - h00) + fy * (h11 - h10), h00 + fy * (h01 - h00) + fx * (h11 - h01))
    sx = np.where(lower, h10 - h00, h11 - h01) * du
    sy = np.where(lower, h11 - h10, h01 - h00) * dv
    sx = np.where((u_raw < 0) | (u_raw > ncol - 1), 0.0, sx)
    sy = np.where((v_raw < 0) | (v_raw > nrow - 1), 0.0, sy)
    return height, sx, sy

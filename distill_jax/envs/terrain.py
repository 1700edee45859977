"""Procedural height-field terrain (re-exported from :mod:`distill_jax.heightfield`) and an exact JAX height lookup.

The generator (:class:`TerrainConfig`, :func:`generate_heights`, :func:`heights_hash`,
:func:`describe`) is NumPy-only and lives in :mod:`distill_jax.heightfield`, so the JAX-free
sim-to-sim side builds the very same terrain; see that module for the terrain's layout and
components.

:func:`terrain_height` evaluates the surface MuJoCo (and MJX) actually collides
with: each grid cell is split along its ``(c, r)-(c+1, r+1)`` diagonal into two
triangles and heights are linear on each. (On a cell whose four corners are
coplanar this equals bilinear interpolation; elsewhere bilinear interpolation
would be off the collision surface by up to a quarter of the cell's twist.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distill_jax.heightfield import TerrainConfig, _value_noise, describe, generate_heights, heights_hash

__all__ = ["TerrainConfig", "_value_noise", "describe", "generate_heights", "heights_hash", "terrain_height",
           "terrain_plane"]


def terrain_height(heights: jax.Array, half_x: float, half_y: float, x: jax.Array, y: jax.Array) -> jax.Array:
    """Height of the collision surface at world ``(x, y)`` (any equal shapes).

    Args:
      heights: ``[nrow, ncol]`` heights in metres (row = y, column = x).
      half_x, half_y: half extents of the field (static floats).
      x, y: query coordinates; points outside the field are clamped to its edge.

    Returns:
      Heights with the broadcast shape of ``x`` and ``y``.
    """
    # The slopes terrain_plane also returns are dead code under jit.
    return terrain_plane(heights, half_x, half_y, x, y)[0]


def terrain_plane(
    heights: jax.Array, half_x: float, half_y: float, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The collision surface's height and slope at world ``(x, y)``: its local tangent plane.

    The surface is linear on each triangle (see :func:`terrain_height`), so the
    plane through the triangle under ``(x, y)`` is ``z = h + sx (x' - x) + sy (y' - y)``.

    Args:
      heights, half_x, half_y: as for :func:`terrain_height`.
      x, y: query coordinates (any equal shapes); points outside the field are
        clamped to its edge, where the slope along a clamped axis is 0.

    Returns:
      ``(h, sx, sy)``: height (m) and slopes ``dh/dx``, ``dh/dy`` (m/m), each
      with the broadcast shape of ``x`` and ``y``.
    """
    nrow, ncol = heights.shape
    du = (ncol - 1) / (2 * half_x)  # grid cells per metre along x
    dv = (nrow - 1) / (2 * half_y)
    u_raw = (x + half_x) * du
    v_raw = (y + half_y) * dv
    u = jnp.clip(u_raw, 0.0, ncol - 1)
    v = jnp.clip(v_raw, 0.0, nrow - 1)
    c = jnp.clip(jnp.floor(u), 0, ncol - 2).astype(jnp.int32)
    r = jnp.clip(jnp.floor(v), 0, nrow - 2).astype(jnp.int32)
    fx, fy = u - c, v - r
    h00 = heights[r, c]
    h10 = heights[r, c + 1]
    h01 = heights[r + 1, c]
    h11 = heights[r + 1, c + 1]
    # Triangle (c,r)-(c+1,r)-(c+1,r+1) when fx >= fy, else (c,r)-(c,r+1)-(c+1,r+1).
    lower_tri = fx >= fy
    height = jnp.where(lower_tri, h00 + fx * (h10 - h00) + fy * (h11 - h10),
                       h00 + fy * (h01 - h00) + fx * (h11 - h01))
    # Per-cell slopes (height per cell) times cells per metre; zero where the query is clamped.
    sx = jnp.where(lower_tri, h10 - h00, h11 - h01) * du
    sy = jnp.where(lower_tri, h11 - h10, h01 - h00) * dv
    sx = jnp.where((u_raw < 0) | (u_raw > ncol - 1), 0.0, sx)
    sy = jnp.where((v_raw < 0) | (v_raw > nrow - 1), 0.0, sy)
    return height, sx, sy

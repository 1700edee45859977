"""A deployable height scan: the terrain around the base as a robot's elevation map would report it.

The scan samples an ``nx x ny`` grid of points (spacing ``spacing`` m, centred
``x_offset`` m ahead of the base) in the base's **yaw frame** (heading only: an
elevation map is gravity-aligned, so pitch and roll do not tilt the grid), reads
the exact terrain height there relative to the base (``ground - base_z``, m;
about ``-0.3`` on flat ground for the quadruped) and then applies the
imperfections a real elevation map has, each declared in
:class:`HeightScanConfig` (and so in the fingerprint):

* per-point, per-step Gaussian noise (``noise_std``);
* a per-episode vertical offset, Gaussian (``offset_std``), common to all points
  (a mis-calibrated sensor height or an odometry z error at the episode start);
* a slow vertical drift, a random walk with Gaussian increments per control step
  (``drift_std``) clipped to ``+-drift_limit`` (a bounded odometry z drift);
* dropped points, independently per point and step with probability ``dropout``
  (occlusion, no return): the value is ``fill_value`` and a validity channel says 0;
* latency: the reading delivered at step ``t`` is the one measured at step
  ``t - latency`` (control steps); the first reading stands in for the
  not-yet-measured ones at the start of an episode.

The reading is then clipped to ``+-clip``. The delivered field ``height_scan`` is
``[nx, ny, 2]`` float32: channel 0 the height (m), channel 1 the validity
(1 measured, 0 dropped); row ``i`` is body x (back to front), column ``j`` body y
(right to left), channels last as flax's convolutions expect.

All of it is pure: :func:`scan_reset` and :func:`scan_step` take the explicit
:class:`HeightScanState` and a PRNG key and return the new state and the
delivered field; they know nothing about the terrain beyond the exact scan
(:func:`exact_scan`) the caller hands them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.envs import terrain as terrain_lib


@dataclasses.dataclass(frozen=True)
class HeightScanConfig:
    """The scan's grid and imperfections (lengths m; per-step quantities per control step).

    Attributes:
      nx, ny: points along the body's x (forward) and y (left).
      spacing: distance between neighbouring points.
      x_offset: how far ahead of the base the grid's centre lies.
      noise_std: per-point, per-step Gaussian noise.
      offset_std: std of the per-episode vertical offset (Gaussian, mean 0).
      drift_std: std of the drift's per-step increment.
      drift_limit: the drift is clipped to +-this after each increment.
      dropout: probability that a point is dropped at a step, in [0, 1).
      fill_value: the height reported for a dropped point (before clipping).
      latency: control steps between measuring a reading and delivering it.
      clip: delivered heights are clipped to +-this.
    """

    nx: int = 11
    ny: int = 7
    spacing: float = 0.1
    x_offset: float = 0.1
    noise_std: float = 0.01
    offset_std: float = 0.02
    drift_std: float = 0.002
    drift_limit: float = 0.05
    dropout: float = 0.02
    fill_value: float = 0.0
    latency: int = 1
    clip: float = 1.0

    def __post_init__(self):
        def fail(name: str, why: str) -> None:
            raise ValueError(f"HeightScanConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("nx", "ny", "latency"):
            value = getattr(self, name)
            low = 0 if name == "latency" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                fail(name, f"must be an integer >= {low}")
        for name in ("spacing", "x_offset", "noise_std", "offset_std", "drift_std", "drift_limit", "dropout",
                     "fill_value", "clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(value):
                fail(name, "must be a finite number")
        for name in ("noise_std", "offset_std", "drift_std", "drift_limit"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        for name in ("spacing", "clip"):
            if getattr(self, name) <= 0:
                fail(name, "must be > 0")
        if not 0 <= self.dropout < 1:
            fail("dropout", "must be in [0, 1)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The delivered field's shape ``(nx, ny, 2)``."""
        return (self.nx, self.ny, 2)

    @property
    def reach(self) -> float:
        """The farthest a scan point gets from the base (m), at any heading."""
        fx = abs(self.x_offset) + 0.5 * (self.nx - 1) * self.spacing
        fy = 0.5 * (self.ny - 1) * self.spacing
        return math.hypot(fx, fy)

    def check_fits(self, half_x: float, half_y: float) -> None:
        """Refuses a scan that reaches past the map's half extent from the map centre (one line).

        Raises:
          ValueError: naming ``spacing`` (with ``nx``, ``ny``, ``x_offset``) and the map's half extent.
        """
        limit = min(half_x, half_y)
        if self.reach >= limit:
            raise ValueError(
                f"HeightScanConfig.spacing={self.spacing!r} (nx={self.nx}, ny={self.ny}, x_offset={self.x_offset}): "
                f"the scan grid reaches {self.reach:.3g} m from the base, not less than the map's half extent "
                f"{limit:.3g} m")

    def describe(self) -> dict[str, Any]:
        """JSON-able declaration for the fingerprint."""
        return {**dataclasses.asdict(self), "shape": list(self.shape),
                "value": "ground height minus base height (m), yaw frame; channel 1 = validity"}


@flax.struct.dataclass
class HeightScanState:
    """What the scan carries between control steps (one env; vmap adds a leading axis).

    Attributes:
      offset: ``[]`` the episode's vertical offset (m).
      drift: ``[]`` the drift's current value (m).
      pending: ``[latency, nx, ny, 2]`` readings measured but not yet delivered, oldest first.
    """

    offset: jax.Array
    drift: jax.Array
    pending: jax.Array


def scan_offsets(cfg: HeightScanConfig) -> np.ndarray:
    """The points in the base's yaw frame, ``[nx, ny, 2]`` (m): row ``i`` body x, column ``j`` body y."""
    gx = cfg.x_offset + (np.arange(cfg.nx) - 0.5 * (cfg.nx - 1)) * cfg.spacing
    gy = (np.arange(cfg.ny) - 0.5 * (cfg.ny - 1)) * cfg.spacing
    return np.stack(np.meshgrid(gx, gy, indexing="ij"), axis=-1).astype(np.float32)


def scan_points(cfg: HeightScanConfig, base_xy: jax.Array, yaw: jax.Array) -> jax.Array:
    """World ``(x, y)`` of the scan points, ``[nx, ny, 2]`` (m), for a base at ``base_xy`` ``[2]`` heading ``yaw`` (rad)."""
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    off = jnp.asarray(scan_offsets(cfg))
    x = base_xy[0] + c * off[..., 0] - s * off[..., 1]
    y = base_xy[1] + s * off[..., 0] + c * off[..., 1]
    return jnp.stack([x, y], axis=-1)


def exact_scan(cfg: HeightScanConfig, heights: jax.Array, half_x: float, half_y: float, base_pos: jax.Array,
               yaw: jax.Array) -> jax.Array:
    """The exact terrain height minus the base height at each scan point, ``[nx, ny]`` (m), unclipped.

    Args:
      heights, half_x, half_y: the terrain (as for :func:`distill_jax.envs.terrain.terrain_height`).
      base_pos: ``[3]`` world position of the base (m).
      yaw: the base's heading (rad).
    """
    pts = scan_points(cfg, base_pos[:2], yaw)
    ground = terrain_lib.terrain_height(heights, half_x, half_y, pts[..., 0], pts[..., 1])
    return ground - base_pos[2]


def _measure(cfg: HeightScanConfig, offset: jax.Array, drift: jax.Array, exact: jax.Array,
             key: jax.Array) -> jax.Array:
    """One reading ``[nx, ny, 2]`` of the exact scan ``[nx, ny]`` under the given offset and drift."""
    k_noise, k_drop = jax.random.split(key)
    value = exact + offset + drift
    if cfg.noise_std > 0:
        value = value + cfg.noise_std * jax.random.normal(k_noise, exact.shape)
    if cfg.dropout > 0:
        valid = jax.random.bernoulli(k_drop, 1.0 - cfg.dropout, exact.shape)
        value = jnp.where(valid, value, cfg.fill_value)
    else:
        valid = jnp.ones(exact.shape, bool)
    value = jnp.clip(value, -cfg.clip, cfg.clip)
    return jnp.stack([value, valid.astype(value.dtype)], axis=-1).astype(jnp.float32)


def scan_reset(cfg: HeightScanConfig, key: jax.Array, exact: jax.Array) -> tuple[HeightScanState, jax.Array]:
    """Starts an episode: draws its offset, zeroes the drift, measures and delivers the first reading.

    Args:
      key: a PRNG key.
      exact: ``[nx, ny]`` the exact scan at the first state (:func:`exact_scan`).

    Returns:
      ``(state, height_scan)``; ``height_scan`` ``[nx, ny, 2]``. The latency buffer is filled with
      this first reading, so the next ``latency`` steps deliver it again.
    """
    k_offset, k_measure = jax.random.split(key)
    offset = cfg.offset_std * jax.random.normal(k_offset, (), jnp.float32)
    drift = jnp.zeros((), jnp.float32)
    reading = _measure(cfg, offset, drift, exact, k_measure)
    pending = jnp.broadcast_to(reading, (cfg.latency, *reading.shape))
    return HeightScanState(offset=offset, drift=drift, pending=pending), reading


def scan_step(cfg: HeightScanConfig, state: HeightScanState, key: jax.Array,
              exact: jax.Array) -> tuple[HeightScanState, jax.Array]:
    """One control step: moves the drift, measures a reading and delivers the one ``latency`` steps old.

    Args:
      state: the scan's state after the previous step.
      key: a PRNG key.
      exact: ``[nx, ny]`` the exact scan at this step's state.

    Returns:
      ``(state, height_scan)``; ``height_scan`` ``[nx, ny, 2]``.
    """
    k_drift, k_measure = jax.random.split(key)
    drift = state.drift
    if cfg.drift_std > 0:
        drift = jnp.clip(drift + cfg.drift_std * jax.random.normal(k_drift, (), jnp.float32),
                         -cfg.drift_limit, cfg.drift_limit)
    reading = _measure(cfg, state.offset, drift, exact, k_measure)
    if cfg.latency == 0:
        return state.replace(drift=drift), reading
    # A shift register (latency is a few steps, so shifting beats a ring pointer's gather and bookkeeping).
    delivered = state.pending[0]
    pending = jnp.concatenate([state.pending[1:], reading[None]], axis=0)
    return state.replace(drift=drift, pending=pending), delivered

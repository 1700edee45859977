"""A Rudin-style terrain curriculum (Rudin et al. 2021, "Learning to walk in minutes"): per-env tile levels.

Each env owns a tile column (its terrain type, fixed) and a level (its tile row),
and spawns at that tile's centre. When its episode ends the level moves:

* **up** when the env got far from its spawn point: ``distance >
  promote_fraction * tile_size`` (Rudin: half a tile, i.e. it reached the tile's
  edge region, the hardest part of a pyramid);
* **down** otherwise, when it fell (``demote_on_fall``) or walked less than
  ``demote_fraction`` of the distance its command asked for over the episode
  (Rudin: half of ``|cmd_xy| * episode_length_s``);
* then clamped to ``[0, max_level]``; with ``resample_at_max`` an env promoted
  past the hardest level is sent to a uniformly random level instead, so the
  hardest row does not collect every good env and the easier rows stay
  practised (Rudin's rule).

Everything is a pure function of ``[B]`` arrays and a key, usable inside a jitted
step. Concrete inputs (outside a trace) are checked: a level outside the grid
raises one line naming it. Traced levels cannot raise; they are clamped.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
    """When a tile level moves (fractions are of lengths in metres).

    Attributes:
      promote_fraction: promote when the distance from the spawn point exceeds this times the tile size.
      demote_fraction: demote when the distance is below this times the commanded distance.
      demote_on_fall: a fall demotes (unless the env was far enough to be promoted first).
      resample_at_max: an env promoted past the hardest level gets a uniformly random level.
      init_max_level: initial levels are uniform in ``[0, init_max_level]``; ``None``: every level.
    """

    promote_fraction: float = 0.5
    demote_fraction: float = 0.5
    demote_on_fall: bool = True
    resample_at_max: bool = True
    init_max_level: int | None = 0

    def __post_init__(self):
        def fail(name: str, why: str) -> None:
            raise ValueError(f"CurriculumConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("promote_fraction", "demote_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                fail(name, "must be a finite number >= 0")
        if self.init_max_level is not None and (isinstance(self.init_max_level, bool) or not isinstance(
                self.init_max_level, int) or self.init_max_level < 0):
            fail("init_max_level", "must be an integer >= 0")

    def check_levels(self, num_levels: int) -> None:
        """Refuses an ``init_max_level`` outside a grid of ``num_levels`` levels (one line)."""
        if self.init_max_level is not None and self.init_max_level > num_levels - 1:
            raise ValueError(f"CurriculumConfig.init_max_level={self.init_max_level}: outside the map's levels "
                             f"0..{num_levels - 1}")


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_levels(levels: Any, num_levels: int, name: str = "levels") -> None:
    """Raises one line naming ``name`` when a concrete level is outside ``0..num_levels - 1`` or not whole."""
    if not _is_concrete(levels):
        return
    lv = np.asarray(levels)
    bad = (lv < 0) | (lv > num_levels - 1) | (lv != np.round(lv))
    if np.any(bad):
        raise ValueError(f"{name}: {np.unique(lv[bad]).tolist()} outside the map's levels 0..{num_levels - 1}")


def init_levels(cfg: CurriculumConfig, key: jax.Array, num_envs: int, num_levels: int) -> jax.Array:
    """Initial levels ``[num_envs]`` int32, uniform in ``[0, init_max_level]``."""
    cfg.check_levels(num_levels)
    return jax.random.randint(key, (num_envs,), 0, init_level_bound(cfg, num_levels), jnp.int32)


def init_level_bound(cfg: CurriculumConfig, num_levels: int) -> int:
    """One past the highest initial level: ``init_max_level + 1``, or ``num_levels`` for ``None``."""
    cfg.check_levels(num_levels)
    return num_levels if cfg.init_max_level is None else cfg.init_max_level + 1


def assign_types(num_envs: int, num_types: int) -> jax.Array:
    """Each env's tile column ``[num_envs]`` int32: ``env % num_types``, so every type gets an equal share."""
    if num_types < 1:
        raise ValueError(f"num_types={num_types}: must be >= 1")
    return jnp.arange(num_envs, dtype=jnp.int32) % num_types


def update_levels(cfg: CurriculumConfig, levels: jax.Array, done: jax.Array, distance: jax.Array,
                  commanded_distance: jax.Array, fell: jax.Array, key: jax.Array, *, num_levels: int,
                  tile_size: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The levels after this step's episode ends (pure; any leading shape ``[B]``).

    Args:
      levels: ``[B]`` int current levels.
      done: ``[B]`` bool/float, 1 where an episode ended this step (elsewhere the level is kept).
      distance: ``[B]`` horizontal distance (m) from the spawn point at the episode's end.
      commanded_distance: ``[B]`` the distance (m) the command asked for over the episode,
        e.g. ``|cmd_xy| * episode_length_s``.
      fell: ``[B]`` bool/float, 1 where the episode ended in a fall.
      key: PRNG key for the resampling at the hardest level.
      num_levels: rows of the tile map (static).
      tile_size: side of a tile (m, static).

    Returns:
      ``(levels [B] int32, counts)``: ``counts`` has ``promoted``, ``demoted`` and ``resampled``,
      ``[B]`` float32 masks of what happened (0 where no episode ended).

    Raises:
      ValueError: concrete ``levels`` outside ``0..num_levels - 1`` (one line).
    """
    check_levels(levels, num_levels)
    levels = jnp.clip(jnp.asarray(levels, jnp.int32), 0, num_levels - 1)
    done = jnp.asarray(done) > 0
    fell = jnp.asarray(fell) > 0
    promote = distance > cfg.promote_fraction * tile_size
    short = distance < cfg.demote_fraction * commanded_distance
    demote = ~promote & (short | (fell & cfg.demote_on_fall))
    promote, demote = promote & done, demote & done
    moved = levels + promote.astype(jnp.int32) - demote.astype(jnp.int32)
    resampled = moved > num_levels - 1
    if cfg.resample_at_max:
        random_level = jax.random.randint(key, levels.shape, 0, num_levels, jnp.int32)
        new = jnp.where(resampled, random_level, jnp.clip(moved, 0, num_levels - 1))
    else:
        new = jnp.clip(moved, 0, num_levels - 1)
        resampled = jnp.zeros_like(resampled)
    f32 = lambda m: m.astype(jnp.float32)  # noqa: E731
    return new, {"promoted": f32(promote), "demoted": f32(demote), "resampled": f32(resampled)}


def level_distribution(levels: jax.Array, num_levels: int) -> jax.Array:
    """Fraction of envs at each level, ``[num_levels]`` float32 (sums to 1): the per-update log."""
    counts = jnp.zeros(num_levels, jnp.float32).at[jnp.clip(levels, 0, num_levels - 1)].add(1.0)
    return counts / jnp.maximum(levels.size, 1)

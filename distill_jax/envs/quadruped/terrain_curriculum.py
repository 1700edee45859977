"""The terrain curriculum inside the jitted step: a batch of terrain quadrupeds whose tiles outlive episodes.

:class:`TerrainCurriculumAutoReset` is :class:`~distill_jax.envs.autoreset.VmapAutoReset` for the
``quadruped_terrain`` stack with one addition. The plain auto-reset restarts a finished env from
``reset(key)`` alone, so nothing of the finished episode reaches the next one; here each env keeps
its tile column (``env % num_types``, Rudin's fixed assignment) and its level, and when its episode
ends the level moves by :func:`distill_jax.envs.curriculum.update_levels` (promote beyond half a
tile from the spawn, demote on a fall or under half the commanded distance, resample past the
hardest level) and the fresh episode is moved onto that tile by
:meth:`~distill_jax.envs.quadruped.terrain_task.TerrainQuadruped.relocate`.

The outcome is read off the transition that ended the episode (the auto-reset keeps its metrics):
``distance_from_spawn``, ``fall`` and ``command_speed`` times the episode's duration. Added
per-step metrics (``[num_envs]``, 0 where no episode ended): ``curriculum_promoted``,
``curriculum_demoted``, ``curriculum_resampled``. The level distribution is in the task's
``terrain_level_<i>`` metrics.

Relocation rewrites only the task's position-dependent fields, which is right when no per-env
wrapper transforms them (noise, history): the constructor checks that.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.envs.base import Env, EnvState, add_wrapper_entry
from distill_jax.envs.curriculum import CurriculumConfig, assign_types, init_level_bound, update_levels
from distill_jax.envs.hash_prng import hash_fold
from distill_jax.envs.quadruped.terrain_task import TerrainQuadruped
from distill_jax.treeops import select_rows

CURRICULUM_METRICS = ("curriculum_promoted", "curriculum_demoted", "curriculum_resampled")


def find_task(env: Env) -> TerrainQuadruped:
    """The :class:`TerrainQuadruped` at the bottom of a wrapper stack.

    Raises:
      TypeError: there is none.
    """
    inner = env
    while not isinstance(inner, TerrainQuadruped):
        if not hasattr(inner, "env"):
            raise TypeError(f"TerrainCurriculumAutoReset needs a quadruped_terrain stack, got {type(env).__name__}")
        inner = inner.env
    return inner


def _check_stack(env: Env) -> None:
    """Refuses a per-env wrapper that transforms a field relocation rewrites (one line)."""
    inner = env
    while not isinstance(inner, TerrainQuadruped):
        # vars(), not getattr: a wrapper's getattr delegates to the wrappers inside it.
        own = vars(inner)
        touched = set(own.get("stds", {})) | set(own.get("fields", ()) or ())
        clash = sorted(touched & set(TerrainQuadruped.RELOCATED_FIELDS))
        if clash:
            raise ValueError(f"{type(inner).__name__} transforms {clash}, which the curriculum's relocation "
                             f"recomputes from the terrain; leave them out of its fields")
        inner = inner.env


class TerrainCurriculumAutoReset(VmapAutoReset):
    """``VmapAutoReset`` whose envs keep their tile column and move their level between episodes.

    Args:
      env: a ``quadruped_terrain`` stack (single instance, ending in ``TimeLimit``).
      num_envs: batch size.
      curriculum: the promotion rule; ``None`` takes the task config's.
      **kwargs: as for :class:`VmapAutoReset` (``reset_chunk``, ``reset_pool``, ``refill_every``).
    """

    def __init__(self, env: Env, num_envs: int, curriculum: CurriculumConfig | None = None, **kwargs: Any):
        super().__init__(env, num_envs, **kwargs)
        self.task = find_task(env)
        _check_stack(env)
        self.curriculum = self.task.config.curriculum if curriculum is None else curriculum
        self.curriculum.check_levels(self.task.config.terrain.num_levels)

    def reset_with_keys(self, keys: jax.Array) -> EnvState:
        """Resets every env, then puts env ``i`` on column ``i % num_types`` at a level uniform in
        ``[0, init_max_level]`` drawn from its own key."""
        state = super().reset_with_keys(keys)
        t = self.task.config.terrain
        bound = init_level_bound(self.curriculum, t.num_levels)
        levels = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 11), (), 0, bound, jnp.int32))(keys)
        types = assign_types(self.num_envs, len(t.types))
        scan_keys = jax.vmap(lambda k: jax.random.fold_in(k, 12))(keys)
        state = self._relocate(state, levels, types, scan_keys)
        zero = jnp.zeros((self.num_envs,), jnp.float32)
        return state.replace(metrics={**state.metrics, **{m: zero for m in CURRICULUM_METRICS}})

    def step(self, state: EnvState, actions: jax.Array) -> EnvState:
        nxt = super().step(state, actions)
        t = self.task.config.terrain
        done = nxt.info["episode_completed"] > 0
        duration = nxt.info["episode_length_completed"].astype(jnp.float32) * self.task.dt
        levels, counts = update_levels(
            self.curriculum, state.info["terrain_level"], done, nxt.metrics["distance_from_spawn"],
            nxt.metrics["command_speed"] * duration, nxt.metrics["fall"], hash_fold(nxt.rng[0], 13),
            num_levels=t.num_levels, tile_size=t.tile_size)
        types = state.info["terrain_type"]
        # Relocate only on steps where an episode ended (a trip count of 0 or 1, not lax.cond: under
        # an outer vmap over seeds a cond would run the relocation on every step).
        trips = jnp.any(done).astype(jnp.int32)

        def move(_, s: EnvState) -> EnvState:
            moved = self._relocate(s, levels, types, hash_fold(s.rng, 14))
            return select_rows(done, moved, s)

        after = jax.lax.fori_loop(0, trips, move, nxt)
        metrics = {**nxt.metrics, **{f"curriculum_{k}": v for k, v in counts.items()}}
        return after.replace(metrics=metrics)

    def _relocate(self, state: EnvState, levels: jax.Array, types: jax.Array, keys: jax.Array) -> EnvState:
        return jax.vmap(self.task.relocate)(state, levels, types, keys)

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        # Every CurriculumConfig field, so a new one cannot be left out of the fingerprint.
        entry = {"type": "TerrainCurriculum",
                 "curriculum": {**dataclasses.asdict(self.curriculum), "types": "env % num_types"}}
        return add_wrapper_entry(fp, entry)

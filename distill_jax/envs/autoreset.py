"""``VmapAutoReset``: a batch of single-instance envs that restart when their episode ends.

It goes outside every per-env wrapper of :mod:`distill_jax.envs.wrappers`::

    VmapAutoReset(task -> ... -> TimeLimit, num_envs)

and keeps the episode bookkeeping (returns, lengths, the last observation of a
finished episode) that GAE and the logs read from ``info``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from distill_jax.envs.base import Env, EnvState, Wrapper, add_wrapper_entry
from distill_jax.envs.hash_prng import hash_fold
from distill_jax.treeops import select_rows

# The info keys VmapAutoReset owns: stripped before the inner step, so the
# per-env wrappers never see (or carry) them.
AUTORESET_INFO_KEYS = (
    "final_obs",
    "episode_return",
    "episode_length",
    "episode_return_completed",
    "episode_length_completed",
    "episode_completed",
    "reset_pool",
    "reset_pool_used",
    "reset_pool_clock",
)


class VmapAutoReset(Wrapper):
    """A batch of ``num_envs`` independent envs that restart when done.

    ``reset(key) -> EnvState`` with a leading ``[num_envs]`` axis on every
    leaf; ``step(state, actions[num_envs, A])`` steps all envs with ``vmap``
    and resets the finished ones (``done = max(terminated, truncated)``).

    For a finished env the returned state holds the *new* episode (its first
    observation, ``first = 1``, fresh physics / params / rng / info) while
    ``reward``, ``terminated``, ``truncated`` and ``metrics`` describe the
    transition just taken. Added ``info`` entries (all ``[num_envs, ...]``):

    * ``final_obs``: the observation the step produced before any reset (the
      true last observation of a finished episode; equal to ``obs`` for the
      others), for bootstrapping the value on truncation;
    * ``episode_return`` / ``episode_length``: running sums of the current episode;
    * ``episode_return_completed`` / ``episode_length_completed``: return and
      length of the episode that finished at this step (0 where none did);
    * ``episode_completed``: float mask of envs whose episode finished at this step.

    The reset key of env ``i`` is split from its own ``state.rng``, so results
    do not depend on the batch layout or on ``reset_chunk``.

    Only finished envs are reset: their indices are gathered and reset in
    chunks of ``reset_chunk`` envs (default ``max(1, num_envs // 16)``) by a
    loop whose trip count is ``ceil(n_done / reset_chunk)`` (zero on most
    steps), then scattered back. Resetting every env and selecting would cost
    a full reset per step, which for small models is as dear as the physics.

    ``reset_pool=True`` bounds the reset cost per step instead, for tasks whose
    short episodes make resets a visible share of a step. Env ``i`` then
    restarts from the initial state kept in slot ``i`` of ``info["reset_pool"]``
    (made by the task's own ``reset``), with a new ``rng`` derived from its
    own, so noise and later randomness differ even when a slot is used twice.
    A slot is marked used (``info["reset_pool_used"]``) when its env restarts
    from it. Every ``refill_every`` steps (default 4) at most ``reset_chunk``
    used slots (default ``max(1, num_envs // 16)``, chosen from a random
    offset) are refilled by fresh resets in one batched call: on average
    ``reset_chunk / refill_every`` new initial states per step (``num_envs //
    64`` by default). Refills are batched across steps because a reset call
    has a fixed cost (the task's ``reset``, e.g. an ``mjx.forward``, is many
    small ops) that on CPU outweighs its per-env cost at these sizes. While
    fewer envs restart than that budget, every episode starts from a never
    used initial state; Brax's own auto-reset is the other extreme (one
    initial state per env, never refilled). The pool doubles the env state's
    memory, and results depend on ``reset_chunk`` and ``refill_every``.
    """

    def __init__(
        self,
        env: Env,
        num_envs: int,
        reset_chunk: int | None = None,
        reset_pool: bool = False,
        refill_every: int | None = None,
    ):
        super().__init__(env)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if reset_chunk is not None and int(reset_chunk) < 1:
            raise ValueError(f"reset_chunk must be >= 1, got {reset_chunk}")
        if refill_every is not None and (not reset_pool or int(refill_every) < 1):
            raise ValueError(f"refill_every needs reset_pool=True and must be >= 1, got {refill_every}")
        self.num_envs = int(num_envs)
        self.reset_pool = bool(reset_pool)
        self.refill_every = (4 if refill_every is None else int(refill_every)) if self.reset_pool else 1
        default_chunk = max(1, self.num_envs // 16)
        self.reset_chunk = min(default_chunk if reset_chunk is None else int(reset_chunk), self.num_envs)

    @classmethod
    def for_phase(cls, env: Env, config: Any) -> "VmapAutoReset":
        """The batched env a training phase's config asks for (its ``num_envs`` and ``reset_pool``).

        ``config`` is a :class:`~distill_jax.config.PPOConfig` or
        :class:`~distill_jax.config.DistillConfig`; one builder so that a phase
        and a checkpoint restore of it always batch the env the same way.

        A task whose training batches carry state from one episode to the next names its own
        batching class in ``phase_batching`` (found through the wrappers): the terrain quadruped's
        curriculum (:mod:`distill_jax.envs.quadruped.terrain_curriculum`). Evaluation batches with
        plain ``VmapAutoReset``.
        """
        batching = getattr(env, "phase_batching", None) if cls is VmapAutoReset else None
        if batching is not None:
            return batching.for_phase(env, config)
        return cls(env, config.num_envs, reset_pool=config.reset_pool)

    @property
    def batch_size(self) -> int:
        return self.num_envs

    def reset(self, key: jax.Array) -> EnvState:
        return self.reset_with_keys(jax.random.split(key, self.num_envs))

    def reset_with_keys(self, keys: jax.Array) -> EnvState:
        """Resets env ``i`` with ``keys[i]`` (``[num_envs, 2]``), e.g. an evaluation panel's seeds."""
        state = jax.vmap(self.env.reset)(keys)
        zeros_f = jnp.zeros((self.num_envs,), jnp.float32)
        zeros_i = jnp.zeros((self.num_envs,), jnp.int32)
        info = {
            **state.info,
            "final_obs": state.obs,
            "episode_return": zeros_f,
            "episode_length": zeros_i,
            "episode_return_completed": zeros_f,
            "episode_length_completed": zeros_i,
            "episode_completed": zeros_f,
        }
        if self.reset_pool:
            # fold_in(k, 1) differs from the keys reset(k) derives (it splits k).
            pool_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
            info["reset_pool"] = jax.vmap(self.env.reset)(pool_keys).replace(metrics={})
            info["reset_pool_used"] = zeros_f
            # Steps since the last refill, kept per env (all equal) rather than as a scalar:
            # every info leaf has the env axis, which the training loop shards over devices.
            info["reset_pool_clock"] = zeros_i
        return state.replace(info=info)

    def step(self, state: EnvState, actions: jax.Array) -> EnvState:
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"actions must have leading axis {self.num_envs}, got shape {actions.shape}")
        has_pool = "reset_pool" in state.info
        if has_pool != self.reset_pool:
            # A state from the other restart mode would otherwise fail deep inside
            # the step (pool mode) or silently drop its pool (fresh mode).
            raise ValueError(
                f"state.info {'has' if has_pool else 'lacks'} 'reset_pool' but this VmapAutoReset has "
                f"reset_pool={self.reset_pool}: step a state made by this wrapper's reset()"
            )
        inner = state.replace(info={k: v for k, v in state.info.items() if k not in AUTORESET_INFO_KEYS})
        nxt = jax.vmap(self.env.step)(inner, actions)
        done = nxt.done > 0
        pool_info = {}
        if self.reset_pool:
            after, pool_info = self._restart_from_pool(nxt, done, state.info)
        else:
            after = self._reset_finished(nxt, done)

        ret = state.info["episode_return"] + nxt.reward
        length = state.info["episode_length"] + 1
        info = {
            **after.info,
            "final_obs": nxt.obs,
            "episode_return": jnp.where(done, 0.0, ret),
            "episode_length": jnp.where(done, 0, length),
            "episode_return_completed": jnp.where(done, ret, 0.0),
            "episode_length_completed": jnp.where(done, length, 0),
            "episode_completed": done.astype(jnp.float32),
            **pool_info,
        }
        return after.replace(info=info)

    def _reset_finished(self, stepped: EnvState, done: jax.Array) -> EnvState:
        n, k = self.num_envs, self.reset_chunk
        # Indices of finished envs first, padded with the out-of-range index n,
        # which the scatter below drops.
        order = jnp.nonzero(done, size=n, fill_value=n)[0]
        padded = jnp.concatenate([order, jnp.full((k,), n, order.dtype)])
        n_chunks = (jnp.sum(done.astype(jnp.int32)) + k - 1) // k

        def reset_chunk(i, s: EnvState) -> EnvState:
            idx = jax.lax.dynamic_slice(padded, (i * k,), (k,))
            rngs = s.rng[jnp.minimum(idx, n - 1)]
            return self._reset_rows(s, idx, jax.vmap(lambda r: jax.random.split(r)[1])(rngs))

        merged = jax.lax.fori_loop(0, n_chunks, reset_chunk, stepped.replace(metrics={}))
        return self._with_outcome(merged, stepped)

    def _restart_from_pool(
        self, stepped: EnvState, done: jax.Array, info: Mapping[str, Any]
    ) -> tuple[EnvState, dict[str, jax.Array | EnvState]]:
        n, k = self.num_envs, self.reset_chunk
        pool = info["reset_pool"]
        # A select over the batch, not the chunked scatter of fresh resets: with
        # many envs finishing per step (the case the pool is for) one select
        # beats several scatter passes over every leaf of the state (measured on
        # the inverted pendulum, experiments/results/envs_cpu.md). Keys come from
        # the counter hash: threefry over every env's key would cost a good part
        # of the resets the pool saves.
        starts = pool.replace(rng=hash_fold(stepped.rng, 1))
        merged = select_rows(done, starts, stepped.replace(metrics={}))
        used = jnp.maximum(info["reset_pool_used"], done.astype(jnp.float32))
        clock = info["reset_pool_clock"] + 1
        due = clock[0] >= self.refill_every

        def refill(_, carry: tuple[EnvState, jax.Array]) -> tuple[EnvState, jax.Array]:
            p, u = carry
            # The first k used slots, counted from a random offset.
            offset = jax.random.randint(hash_fold(stepped.rng[0], 3), (), 0, n)
            rotated = jnp.nonzero(jnp.roll(u > 0, -offset), size=k, fill_value=n)[0]
            idx = jnp.where(rotated < n, (rotated + offset) % n, n)
            p = self._reset_rows(p, idx, hash_fold(stepped.rng[jnp.minimum(idx, n - 1)], 2))
            return p, u.at[idx].set(0.0, mode="drop")

        # A trip count of 0 or 1 rather than lax.cond: under an outer vmap (seeds)
        # a cond runs both branches on every step, a loop only when a refill is due.
        trips = (due & jnp.any(used > 0)).astype(jnp.int32)
        pool, used = jax.lax.fori_loop(0, trips, refill, (pool, used))
        pool_info = {"reset_pool": pool, "reset_pool_used": used, "reset_pool_clock": jnp.where(due, 0, clock)}
        return self._with_outcome(merged, stepped), pool_info

    def _reset_rows(self, target: EnvState, idx: jax.Array, keys: jax.Array) -> EnvState:
        """``target`` with row ``idx[j]`` replaced by a fresh reset from ``keys[j]``.

        Out-of-range indices (the padding ``num_envs``) are dropped by the scatter.
        """
        fresh = jax.vmap(self.env.reset)(keys).replace(metrics={})
        return jax.tree_util.tree_map(lambda a, b: a.at[idx].set(b, mode="drop"), target, fresh)

    @staticmethod
    def _with_outcome(merged: EnvState, stepped: EnvState) -> EnvState:
        # The transition's outcome is what the step produced, whatever was reset.
        return merged.replace(
            reward=stepped.reward,
            terminated=stepped.terminated,
            truncated=stepped.truncated,
            metrics=stepped.metrics,
        )

    def fingerprint(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "VmapAutoReset"}
        if self.reset_pool:
            entry.update(reset_pool=True, refill_chunk=self.reset_chunk, refill_every=self.refill_every)
        return add_wrapper_entry(self.env.fingerprint(), entry)

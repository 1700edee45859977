"""The one policy factory used by rollouts, PPO, distillation, evaluation and export.

A policy closes over an actor network, its params and observation-normaliser
statistics, and maps a batched observation dict to a :class:`PolicyStep`. The
actor itself selects the fields its role may read (it is built from the
schema), so the same factory serves teacher and student.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from distill_jax import distributions
from distill_jax.normalization import RunningStats, normalize
from distill_jax.rollout import Policy, PolicyStep

ApplyFn = Callable[[Any, dict], distributions.TanhGaussian]


def action_distribution(
    apply_actor: ApplyFn, params: Any, obs_stats: RunningStats | None, obs: dict
) -> distributions.TanhGaussian:
    """The actor's action distribution for ``obs`` (normalised with ``obs_stats`` if given)."""
    if obs_stats is not None:
        obs = normalize(obs_stats, obs)
    return apply_actor(params, obs)


def policy_step(dist: distributions.TanhGaussian, key: jax.Array, deterministic: bool) -> PolicyStep:
    """Samples (or takes the mode of) ``dist``; ``log_prob`` excludes the tanh Jacobian."""
    if deterministic:
        raw = dist.loc
    else:
        raw = dist.loc + dist.scale * jax.random.normal(key, dist.loc.shape, dist.loc.dtype)
    return PolicyStep(
        action=jnp.tanh(raw),
        raw_action=raw,
        log_prob=distributions.gaussian_log_prob(dist, raw),
        loc=dist.loc,
        scale=dist.scale,
    )


def make_policy(
    apply_actor: ApplyFn,
    params: Any,
    obs_stats: RunningStats | None = None,
    *,
    deterministic: bool = False,
) -> Policy:
    """A feed-forward :data:`~distill_jax.rollout.Policy` (its carry is passed through).

    Args:
      apply_actor: ``(params, obs_dict) -> TanhGaussian`` (e.g. ``actor.apply``).
      params: the actor's parameters.
      obs_stats: normaliser statistics, or ``None`` for raw observations.
      deterministic: act with ``tanh(loc)`` instead of sampling.
    """

    def policy(carry, obs, first, key):
        del first
        dist = action_distribution(apply_actor, params, obs_stats, obs)
        return carry, policy_step(dist, key, deterministic)

    return policy

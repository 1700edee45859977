"""Generalised advantage estimation (Schulman et al., 2016) over time-major batches.

Conventions (matching :class:`distill_jax.envs.base.EnvState`): row ``t`` of
every ``[T, B]`` array describes the transition taken from observation
``o_t``; ``terminated[t]`` / ``truncated[t]`` say whether that transition ended
the episode, and ``next_values[t] = V(o'_t)`` is the value of the *true* next
observation, i.e. for a step that ended the episode the final observation
before the automatic reset (not the first observation of the next episode).

* Termination (a fall, an absorbing state): no bootstrap, the target is ``r_t``.
* Truncation (time limit): bootstrap from ``V(final observation)``, since the
  episode was cut, not finished.
* Either way the advantage recursion stops at the boundary, so credit never
  flows from one episode into the previous one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """GAE(gamma, lambda) advantages and value targets.

    ``delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t``
    ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}``, ``done = max(terminated, truncated)``,
    with ``A_T = 0``, evaluated by a reverse ``lax.scan``.

    Args:
      rewards: ``[T, B]`` reward of each step (any trailing batch shape works,
        ``[T, *B]``; all arrays must share it).
      values: ``[T, B]`` ``V(o_t)`` of the observation each step acted from.
      next_values: ``[T, B]`` ``V`` of the true next observation of step ``t``
        (the pre-reset final observation where the episode ended).
      terminated: ``[T, B]`` 1.0 where step ``t`` ended the episode in failure.
      truncated: ``[T, B]`` 1.0 where step ``t`` hit the time limit.
      gamma: discount per control step (may be traced).
      lam: GAE lambda (may be traced).

    Returns:
      ``(advantages [T, B], returns [T, B])`` with ``returns = advantages +
      values`` (the value-function targets), both float32 and
      ``stop_gradient``-ed.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    values = jnp.asarray(values, jnp.float32)
    next_values = jnp.asarray(next_values, jnp.float32)
    terminated = jnp.asarray(terminated, jnp.float32)
    truncated = jnp.asarray(truncated, jnp.float32)
    done = jnp.maximum(terminated, truncated)

    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    decay = gamma * lam * (1.0 - done)

    def step(next_adv, xs):
        delta_t, decay_t = xs
        adv = delta_t + decay_t * next_adv
        return adv, adv

    _, advantages = jax.lax.scan(
        step, jnp.zeros_like(deltas[0]), (deltas, decay), reverse=True
    )
    returns = advantages + values
    return jax.lax.stop_gradient(advantages), jax.lax.stop_gradient(returns)


__all__ = ["compute_gae"]

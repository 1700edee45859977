"""The PPO clipped-surrogate loss (Schulman et al., 2017) for tanh-Gaussian actors.

``ppo_loss(params, batch, *, ...) -> (loss, metrics)`` is a module-level pure
function, so ``jax.value_and_grad(ppo_loss, has_aux=True)`` gives the update.
Bind the network apply functions and coefficients with ``functools.partial``
before ``jit``::

    loss_fn = functools.partial(
        ppo_loss, apply_actor=actor.apply, apply_critic=critic.apply,
        clip_eps=0.2, vf_coef=0.5, ent_coef=0.01)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)

Log-probabilities: the ratio uses :func:`distill_jax.distributions.gaussian_log_prob`
of the stored *pre-squash* ``raw_actions``. The tanh Jacobian depends only on
``raw_actions`` and cancels in ``p_new / p_old``, so ``old_log_probs`` **must**
be ``gaussian_log_prob(dist_old, raw_actions)`` as well (not ``log_prob``).

Entropy bonus: the pre-squash Gaussian entropy (``entropy_kind="gaussian"``,
:func:`distill_jax.distributions.entropy`) or the squashed action's
(``entropy_kind="squashed"``, :func:`distill_jax.distributions.squashed_entropy`).
The first rewards any growth of the scale, even where the squashed action is
already a coin flip between the bounds; the second is bounded and peaks at a
scale near 0.87, so it cannot drive the scale away on its own.

Action-bound penalty (optional, ``bound_coef > 0``): nothing in the surrogate
stops the pre-squash mean ``loc`` from running far past the point where
``tanh`` saturates, and once it does the mean action says nothing (and the
distillation mask drops the step as a target). The penalty is zero while
``|tanh(loc)| <= action_bound`` and quadratic in ``|loc| - atanh(action_bound)``
beyond it, in the spirit of rl_games' ``bounds_loss``; exploration noise still
reaches the bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from distill_jax import distributions as dists

ApplyActor = Callable[[Any, Mapping[str, jax.Array]], dists.TanhGaussian]
ApplyCritic = Callable[[Any, Mapping[str, jax.Array]], jax.Array]

ADV_EPS = 1e-8


class ActorCriticParams(NamedTuple):
    """Parameters of the two networks PPO trains (each any pytree, e.g. flax variables)."""

    actor: Any
    critic: Any


class PPOBatch(NamedTuple):
    """One (mini)batch of PPO samples; ``[N]`` may be any batch shape (e.g. ``[T, B]``).

    Attributes:
      obs: ``{field: [N, *field_shape]}`` observations the actions were taken from
        (the full dict; each network selects its own fields).
      raw_actions: ``[N, A]`` pre-squash actions that were executed.
      old_log_probs: ``[N]`` ``gaussian_log_prob`` of ``raw_actions`` under the
        behaviour policy (nats).
      advantages: ``[N]`` GAE advantages.
      returns: ``[N]`` value targets.
      old_values: ``[N]`` critic predictions at collection time; needed only
        for value clipping (``None`` otherwise).
    """

    obs: dict[str, jax.Array]  # {field: [N, *field_shape]}
    raw_actions: jax.Array  # [N, A]
    old_log_probs: jax.Array  # [N]
    advantages: jax.Array  # [N]
    returns: jax.Array  # [N]
    old_values: jax.Array | None = None  # [N]


def _split(params: ActorCriticParams | Mapping[str, Any]) -> tuple[Any, Any]:
    if isinstance(params, ActorCriticParams):
        return params.actor, params.critic
    return params["actor"], params["critic"]


def ppo_loss(
    params: ActorCriticParams | Mapping[str, Any],
    batch: PPOBatch,
    *,
    apply_actor: ApplyActor,
    apply_critic: ApplyCritic,
    clip_eps: float | jax.Array = 0.2,
    vf_coef: float | jax.Array = 0.5,
    ent_coef: float | jax.Array = 0.0,
    normalize_advantages: bool = True,
    value_clip: float | jax.Array = 0.0,
    bound_coef: float | jax.Array = 0.0,
    action_bound: float = 0.95,
    entropy_kind: str = "gaussian",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO loss: clipped surrogate + ``vf_coef`` * value loss - ``ent_coef`` * entropy
    + ``bound_coef`` * action-bound penalty.

    * ``ratio = exp(gaussian_log_prob(pi, raw) - old_log_probs)``
    * ``policy_loss = -mean(min(ratio A, clip(ratio, 1 - eps, 1 + eps) A))``
      with ``A`` standardised over the batch if ``normalize_advantages``.
    * ``value_loss = 0.5 mean((V - R)²)``; with ``value_clip = c``,
      ``V_c = old_V + clip(V - old_V, -c, c)`` and
      ``value_loss = 0.5 mean(max((V - R)², (V_c - R)²))``.
    * ``entropy = mean(H[pi])`` (pre-squash Gaussian, or squashed, see ``entropy_kind``).
    * ``bound_loss = mean(sum_A relu(|loc| - atanh(action_bound))²)``.

    Args:
      params: :class:`ActorCriticParams` (or a mapping with keys ``"actor"`` and
        ``"critic"``).
      batch: a :class:`PPOBatch` with leading shape ``[N]``.
      apply_actor: ``(actor_params, obs) -> TanhGaussian`` with ``[N, A]`` parameters.
      apply_critic: ``(critic_params, obs) -> values [N]``.
      clip_eps: surrogate clipping range ``eps``.
      vf_coef: weight of the value loss.
      ent_coef: weight of the entropy bonus.
      normalize_advantages: standardise advantages (mean 0, std 1) over the batch.
      value_clip: clipping range for the value prediction around ``old_values``
        (0: no clipping; may be traced). A non-zero range requires ``batch.old_values``.
      bound_coef: weight of the action-bound penalty (0: off).
      action_bound: mean-action magnitude ``|tanh(loc)|`` in (0, 1) above which
        the penalty starts.
      entropy_kind: ``"gaussian"`` or ``"squashed"`` (a key of
        :data:`distill_jax.distributions.ENTROPIES`).

    Returns:
      ``(loss, metrics)``: scalar loss and scalar metrics ``total_loss``,
      ``policy_loss``, ``value_loss``, ``entropy``, ``scale`` (mean pre-squash
      standard deviation), ``bound_loss``, ``approx_kl`` (the
      ``mean((ratio - 1) - log ratio)`` estimator of KL(old || new)),
      ``clip_fraction`` (fraction with ``|ratio - 1| > clip_eps``).
    """
    actor_params, critic_params = _split(params)
    dist = apply_actor(actor_params, batch.obs)
    values = apply_critic(critic_params, batch.obs)

    new_log_probs = dists.gaussian_log_prob(dist, batch.raw_actions)
    log_ratio = new_log_probs - batch.old_log_probs
    ratio = jnp.exp(log_ratio)

    adv = batch.advantages
    if normalize_advantages:
        adv = (adv - jnp.mean(adv)) / (jnp.std(adv) + ADV_EPS)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    policy_loss = -jnp.mean(surrogate)

    sq_err = jnp.square(values - batch.returns)
    if batch.old_values is not None:
        # A traced range (a coefficient carried in the train state) cannot pick a branch at trace
        # time, so both are computed and 0 selects the unclipped one.
        clipped = batch.old_values + jnp.clip(values - batch.old_values, -value_clip, value_clip)
        sq_err = jnp.where(value_clip > 0, jnp.maximum(sq_err, jnp.square(clipped - batch.returns)), sq_err)
    elif not (isinstance(value_clip, (int, float)) and value_clip == 0):
        raise ValueError("value_clip needs batch.old_values")
    value_loss = 0.5 * jnp.mean(sq_err)

    entropy = jnp.mean(dists.entropy_fn(entropy_kind)(dist))
    excess = jax.nn.relu(jnp.abs(dist.loc) - jnp.arctanh(action_bound))
    bound_loss = jnp.mean(jnp.sum(jnp.square(excess), axis=-1))
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy + bound_coef * bound_loss

    approx_kl = jnp.mean((ratio - 1.0) - log_ratio)
    clip_fraction = jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))
    metrics = {
        "total_loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "scale": jax.lax.stop_gradient(jnp.mean(dist.scale)),
        "bound_loss": bound_loss,
        "approx_kl": jax.lax.stop_gradient(approx_kl),
        "clip_fraction": jax.lax.stop_gradient(clip_fraction),
    }
    return loss, metrics


__all__ = ["ADV_EPS", "ActorCriticParams", "PPOBatch", "ppo_loss"]

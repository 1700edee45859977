"""The tanh-squashed diagonal Gaussian action distribution.

Actions live in ``[-1, 1]``: ``action = tanh(raw)`` with ``raw ~ N(loc, scale²)``
per action dimension. A :class:`TanhGaussian` stores the parameters of the
*pre-squash* Gaussian; every function here is a pure function of it, works on
any leading batch shape ``[...]`` and reduces over the trailing action axis
``A``.

Conventions worth knowing:

* Rollouts store ``raw_action`` (pre-squash). Inverting ``tanh`` on a stored
  squashed action is ill-conditioned near ``±1``; keeping ``raw`` avoids it.
* :func:`log_prob` is the log-density of the *squashed* action, including the
  tanh Jacobian. :func:`gaussian_log_prob` omits the Jacobian. The Jacobian
  term depends only on ``raw``, so in a PPO ratio ``p_new(a) / p_old(a)`` of the
  same ``raw`` it cancels exactly; the PPO loss therefore uses
  :func:`gaussian_log_prob` and the rollout must store the same quantity.
* :func:`entropy` is the entropy of the *pre-squash* Gaussian, which is what
  both the PPO entropy bonus and the distillation entropy bonus use. The
  entropy of the squashed distribution has no closed form (it equals the
  Gaussian entropy plus ``E[log(1 - tanh(raw)²)]``, an expectation that needs
  sampling); the Gaussian entropy is a deterministic, smooth, monotone-in-scale
  surrogate that keeps exploration noise from collapsing.
* :func:`kl` is the exact KL between the pre-squash Gaussians. KL divergence is
  invariant under a shared bijection, so it equals the KL between the squashed
  distributions too.

Standard-deviation parameterisation (used by :mod:`distill_jax.networks`): the
actor emits an unconstrained ``x`` per action dimension and
``scale = softplus(x) + min_std`` (:func:`scale_from_raw`). It is state
dependent (a network head, not a free ``log_std`` vector) so a student can match
the teacher's per-state confidence during distillation; softplus grows only
linearly, so the scale cannot explode the way ``exp(log_std)`` can, and
``min_std`` keeps log-probabilities finite when the policy becomes confident.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)

DEFAULT_MIN_STD = 1e-3
# |tanh(loc)| at or beyond this is "saturated": the mean action sits at the bound and its
# pre-squash mean can be arbitrarily large (the distillation mask's default threshold).
SATURATION_LIMIT = 0.99


class TanhGaussian(NamedTuple):
    """A diagonal Gaussian over ``raw`` actions, squashed by ``tanh``.

    Attributes:
      loc: ``[..., A]`` mean of the pre-squash Gaussian.
      scale: ``[..., A]`` standard deviation of the pre-squash Gaussian (> 0).
    """

    loc: jax.Array  # [..., A]
    scale: jax.Array  # [..., A]


def scale_from_raw(x: jax.Array, min_std: float = DEFAULT_MIN_STD) -> jax.Array:
    """Maps an unconstrained network output to a standard deviation.

    ``scale = softplus(x) + min_std``: positive, smooth, linear for large ``x``
    and bounded below by ``min_std``.

    Args:
      x: ``[..., A]`` unconstrained values.
      min_std: lower bound on the standard deviation (action units, pre-squash).

    Returns:
      ``[..., A]`` standard deviations.
    """
    return jax.nn.softplus(x) + min_std


def raw_for_scale(scale: float, min_std: float = DEFAULT_MIN_STD) -> float:
    """The inverse of :func:`scale_from_raw` for a Python float (used for bias init).

    Args:
      scale: a target standard deviation, strictly above ``min_std``.
      min_std: the same lower bound as in :func:`scale_from_raw`.

    Returns:
      ``x`` with ``softplus(x) + min_std == scale``.
    """
    y = float(scale) - float(min_std)
    if y <= 0.0:
        raise ValueError(f"scale {scale} must exceed min_std {min_std}")
    # softplus^{-1}(y) = log(expm1(y)), written stably for large y.
    return y + math.log(-math.expm1(-y))


def sample(dist: TanhGaussian, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Draws one action per batch element.

    Args:
      dist: distribution with ``[..., A]`` parameters.
      key: PRNG key.

    Returns:
      ``(action, raw_action)``, both ``[..., A]``; ``action = tanh(raw_action)``
      lies in ``(-1, 1)``.
    """
    noise = jax.random.normal(key, jnp.shape(dist.loc), dtype=jnp.result_type(dist.loc))
    raw = dist.loc + dist.scale * noise
    return jnp.tanh(raw), raw


def gaussian_log_prob(dist: TanhGaussian, raw_action: jax.Array) -> jax.Array:
    """Log-density of ``raw_action`` under the pre-squash Gaussian (no Jacobian).

    Args:
      dist: distribution with ``[..., A]`` parameters.
      raw_action: ``[..., A]`` pre-squash actions.

    Returns:
      ``[...]`` log-densities (nats), summed over the action axis.
    """
    z = (raw_action - dist.loc) / dist.scale
    per_dim = -0.5 * jnp.square(z) - jnp.log(dist.scale) - 0.5 * _LOG_2PI
    return jnp.sum(per_dim, axis=-1)


def log_det_jacobian(raw_action: jax.Array) -> jax.Array:
    """``sum_A log(d tanh(raw)/d raw) = sum_A log(1 - tanh(raw)²)``, computed stably.

    Uses ``log(1 - tanh(x)²) = 2 (log 2 - x - softplus(-2x))``, which stays finite
    where ``1 - tanh(x)²`` underflows to zero.

    Args:
      raw_action: ``[..., A]`` pre-squash actions.

    Returns:
      ``[...]`` log-Jacobian determinants.
    """
    x = raw_action
    return jnp.sum(2.0 * (_LOG_2 - x - jax.nn.softplus(-2.0 * x)), axis=-1)


def log_prob(dist: TanhGaussian, raw_action: jax.Array) -> jax.Array:
    """Log-density of the squashed action ``tanh(raw_action)``.

    ``log p(a) = log N(raw; loc, scale) - sum_A log(1 - tanh(raw)²)``.

    Args:
      dist: distribution with ``[..., A]`` parameters.
      raw_action: ``[..., A]`` pre-squash actions.

    Returns:
      ``[...]`` log-densities (nats) of the squashed actions.
    """
    return gaussian_log_prob(dist, raw_action) - log_det_jacobian(raw_action)


def entropy(dist: TanhGaussian) -> jax.Array:
    """Entropy of the pre-squash Gaussian, summed over the action axis.

    ``H = sum_A (0.5 + 0.5 log(2π) + log scale)``. This is the entropy the PPO
    and distillation entropy bonuses use; see the module docstring for why the
    squashed entropy (no closed form) is not used.

    Args:
      dist: distribution with ``[..., A]`` parameters.

    Returns:
      ``[...]`` entropies (nats).
    """
    return jnp.sum(0.5 + 0.5 * _LOG_2PI + jnp.log(dist.scale), axis=-1)


def mode(dist: TanhGaussian) -> jax.Array:
    """The deterministic action ``tanh(loc)`` (``[..., A]``), used at evaluation/export."""
    return jnp.tanh(dist.loc)


def kl(p: TanhGaussian, q: TanhGaussian) -> jax.Array:
    """Exact ``KL(p || q)`` summed over the action axis.

    Computed between the pre-squash diagonal Gaussians; since KL is invariant
    under the shared bijection ``tanh`` this is also the KL of the squashed
    distributions.

    ``KL = sum_A [log(s_q/s_p) + (s_p² + (m_p - m_q)²) / (2 s_q²) - 1/2]``.

    Args:
      p: distribution with ``[..., A]`` parameters.
      q: distribution with ``[..., A]`` parameters (broadcastable with ``p``).

    Returns:
      ``[...]`` KL divergences (nats), ``>= 0``.
    """
    var_ratio = jnp.square(p.scale / q.scale)
    mean_term = jnp.square((p.loc - q.loc) / q.scale)
    per_dim = 0.5 * (var_ratio + mean_term - 1.0 - jnp.log(var_ratio))
    return jnp.sum(per_dim, axis=-1)


__all__ = [
    "DEFAULT_MIN_STD",
    "TanhGaussian",
    "entropy",
    "gaussian_log_prob",
    "kl",
    "log_det_jacobian",
    "log_prob",
    "mode",
    "raw_for_scale",
    "sample",
    "scale_from_raw",
]


def saturated(loc: jax.Array, limit: float = SATURATION_LIMIT) -> jax.Array:
    """1.0 where any dimension of the mean action ``tanh(loc)`` (``[..., A]``) is at or beyond ``limit``.

    Returns ``[...]`` float32.
    """
    return jnp.any(jnp.abs(jnp.tanh(loc)) >= limit, axis=-1).astype(jnp.float32)

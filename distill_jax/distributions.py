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
* :func:`entropy` is the entropy of the *pre-squash* Gaussian (closed form,
  the default of both the PPO and the distillation entropy bonus). It grows
  without bound in ``scale``, although once ``scale`` is well past 1 the
  squashed action is only a coin flip between the bounds: with an entropy
  bonus and a weak policy gradient (a small, noisy batch) nothing stops the
  scale from running away (``experiments/results/entropy_runaway_cpu.md``).
  :func:`squashed_entropy` is the entropy of the *squashed* action, the
  Gaussian entropy plus ``E[log(1 - tanh(raw)²)]``; the expectation has no
  closed form, so it is taken by Gauss–Hermite quadrature (deterministic and
  differentiable, no key). It is bounded by ``A log 2`` (the uniform
  distribution on ``[-1, 1]``) and peaks at ``loc = 0, scale ≈ 0.87``, so an
  entropy bonus built on it pulls a runaway scale back.
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
import numpy as np

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)

DEFAULT_MIN_STD = 1e-3
# |tanh(loc)| at or beyond this is "saturated": the mean action sits at the bound and its
# pre-squash mean can be arbitrarily large (the distillation mask's default threshold).
SATURATION_LIMIT = 0.99
# Probabilists' Gauss-Hermite rule for E[f(eps)], eps ~ N(0, 1). Against adaptive quadrature, 16
# nodes give E[log(1 - tanh²)] to 1e-4 nats for scale <= 1, and to 0.6 %, 2.4 %, 2.6 % at scale
# 3, 10, 300 (the integrand's bend at raw = 0 narrows as 1/scale); ample for an entropy bonus.
_GH_NODES, _GH_WEIGHTS = (np.asarray(v, np.float32) for v in np.polynomial.hermite_e.hermegauss(16))
_GH_WEIGHTS = _GH_WEIGHTS / np.float32(math.sqrt(2.0 * math.pi))


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
    return jnp.sum(_log_tanh_slope(raw_action), axis=-1)


def _log_tanh_slope(x: jax.Array) -> jax.Array:
    """Elementwise ``log(1 - tanh(x)²) = 2 (log 2 - x - softplus(-2x))``."""
    return 2.0 * (_LOG_2 - x - jax.nn.softplus(-2.0 * x))


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

    ``H = sum_A (0.5 + 0.5 log(2π) + log scale)``, unbounded in ``scale``; the
    default entropy of the PPO and distillation bonuses (see the module
    docstring, and :func:`squashed_entropy`).

    Args:
      dist: distribution with ``[..., A]`` parameters.

    Returns:
      ``[...]`` entropies (nats).
    """
    return jnp.sum(0.5 + 0.5 * _LOG_2PI + jnp.log(dist.scale), axis=-1)


def squashed_entropy(dist: TanhGaussian) -> jax.Array:
    """Entropy of the squashed action ``tanh(raw)``, summed over the action axis.

    ``H[tanh(raw)] = sum_A (0.5 + 0.5 log(2π) + log scale + E[log(1 - tanh(loc + scale·ε)²)])``
    with ``ε ~ N(0, 1)``; the expectation by 16-node Gauss–Hermite quadrature.
    At most ``A log 2``; per dimension it peaks at ``loc = 0``, ``scale ≈ 0.87``
    (0.684 nats) and falls for larger scales.

    Args:
      dist: distribution with ``[..., A]`` parameters.

    Returns:
      ``[...]`` entropies (nats).
    """
    raw = dist.loc[..., None] + dist.scale[..., None] * _GH_NODES  # [..., A, 16]
    expected_log_slope = jnp.sum(_GH_WEIGHTS * _log_tanh_slope(raw), axis=-1)  # [..., A]
    return jnp.sum(0.5 + 0.5 * _LOG_2PI + jnp.log(dist.scale) + expected_log_slope, axis=-1)


ENTROPIES = {"gaussian": entropy, "squashed": squashed_entropy}


def entropy_fn(kind: str):
    """The entropy of ``kind`` (a key of :data:`ENTROPIES`), as used by the PPO and distillation bonuses.

    Raises:
      ValueError: an unknown kind, named with the valid ones.
    """
    if kind not in ENTROPIES:
        raise ValueError(f"entropy_kind={kind!r}: must be one of {sorted(ENTROPIES)}")
    return ENTROPIES[kind]


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


def saturated(loc: jax.Array, limit: float = SATURATION_LIMIT) -> jax.Array:
    """1.0 where any dimension of the mean action ``tanh(loc)`` (``[..., A]``) is at or beyond ``limit``.

    Returns ``[...]`` float32.
    """
    return jnp.any(jnp.abs(jnp.tanh(loc)) >= limit, axis=-1).astype(jnp.float32)


__all__ = [
    "DEFAULT_MIN_STD",
    "ENTROPIES",
    "SATURATION_LIMIT",
    "TanhGaussian",
    "entropy",
    "entropy_fn",
    "gaussian_log_prob",
    "kl",
    "log_det_jacobian",
    "log_prob",
    "mode",
    "raw_for_scale",
    "sample",
    "saturated",
    "scale_from_raw",
    "squashed_entropy",
]

"""Distillation objectives: masked KL with an entropy bonus, action MSE, latent matching.

All losses are module-level pure functions over batches with any leading
shape ``[...]`` (typically ``[T, B]`` or a flat minibatch ``[N]``) and a
``valid`` mask of the same leading shape (1.0 = a valid imitation target,
0.0 = masked). A masked mean over zero valid steps is defined as 0 (not NaN),
and so are its gradients.

The teacher is treated as a constant: every loss applies ``stop_gradient`` to
the teacher's outputs, so no gradient can reach the teacher's parameters even
if a caller differentiates through them.

Sign convention: the entropy term is a *bonus*. The distillation loss is

    L = masked_mean(KL) - ent_coef * masked_mean(H(student))

so minimising ``L`` with ``ent_coef > 0`` *raises* the student's entropy
(``ent_coef`` is the ε of ``KL(student || teacher) + ε·entropy``).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from distill_jax import distributions
from distill_jax.distributions import TanhGaussian

KLDirection = Literal["reverse", "forward"]


def masked_mean(x: jax.Array, valid: jax.Array) -> jax.Array:
    """``sum(x * valid) / sum(valid)``, and 0 when no step is valid. Shapes ``[...]``."""
    valid = valid.astype(x.dtype)
    total = jnp.sum(valid)
    return jnp.sum(x * valid) / jnp.maximum(total, 1.0) * (total > 0)


def _frozen(dist: TanhGaussian) -> TanhGaussian:
    return TanhGaussian(jax.lax.stop_gradient(dist.loc), jax.lax.stop_gradient(dist.scale))


def kl_per_step(student: TanhGaussian, teacher: TanhGaussian, direction: KLDirection = "reverse") -> jax.Array:
    """Exact per-step KL between the pre-squash Gaussians, ``[...]``.

    ``"reverse"`` (default) is ``KL(student || teacher)``, the objective of the
    design (mode-seeking: the student concentrates where the teacher is
    confident rather than spreading over what it cannot disambiguate from its
    own sensors); ``"forward"`` is ``KL(teacher || student)`` (mode-covering,
    the classic policy-distillation choice). KL is invariant under the shared
    tanh bijection, so this is also the KL between the squashed distributions.

    Per step, the reverse KL weights the squared mean error by ``1/σ_teacher²``,
    the forward KL by ``1/σ_student²``. When the teacher's confidence varies a
    lot between states (a converged teacher that is unsure only far from its
    own trajectories), the reverse direction discounts exactly the recovery
    states a student needs; see experiments/results/pipeline_cartpole.md.
    """
    teacher = _frozen(teacher)
    if direction == "reverse":
        return distributions.kl(student, teacher)
    if direction == "forward":
        return distributions.kl(teacher, student)
    raise ValueError(f"unknown KL direction {direction!r}; expected 'reverse' or 'forward'")


def kl_distillation_loss(
    student: TanhGaussian,
    teacher: TanhGaussian,
    valid: jax.Array,
    *,
    ent_coef: float = 0.0,
    direction: KLDirection = "reverse",
    entropy_kind: str = "gaussian",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``masked_mean(KL) - ent_coef * masked_mean(H(student))``.

    Args:
      student: the student's action distribution, loc/scale ``[..., A]``.
      teacher: the frozen teacher's distribution on the same states.
      valid: ``[...]`` 1.0 where the teacher's step is a valid target.
      ent_coef: entropy bonus coefficient ε >= 0.
      direction: see :func:`kl_per_step`.
      entropy_kind: ``"gaussian"`` (pre-squash, grows without bound in the scale) or
        ``"squashed"`` (of the tanh action, bounded), as for PPO's bonus
        (:func:`distill_jax.distributions.entropy_fn`).

    Returns:
      ``(loss, metrics)`` with metrics ``kl``, ``entropy``, ``valid_fraction``.
    """
    kl = kl_per_step(student, teacher, direction)
    entropy = distributions.entropy_fn(entropy_kind)(student)
    kl_mean = masked_mean(kl, valid)
    ent_mean = masked_mean(entropy, valid)
    loss = kl_mean - ent_coef * ent_mean
    return loss, {"kl": kl_mean, "entropy": ent_mean, "valid_fraction": jnp.mean(valid.astype(kl.dtype))}


def action_mse_loss(
    student_actions: jax.Array, teacher_actions: jax.Array, valid: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked action matching: ``sum_i err_i * valid_i / sum_i valid_i``.

    ``err_i`` is the squared error averaged over the action axis (the seed's
    formula). Actions ``[..., A]``, ``valid`` ``[...]``.

    Returns:
      ``(loss, {"per_step_error": [...], "valid_fraction": scalar})``.
    """
    error = jnp.mean(jnp.square(student_actions - jax.lax.stop_gradient(teacher_actions)), axis=-1)
    return masked_mean(error, valid), {
        "per_step_error": error,
        "valid_fraction": jnp.mean(valid.astype(error.dtype)),
    }


def latent_matching_loss(
    student_latent: jax.Array, teacher_latent: jax.Array, valid: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked regression of the teacher's privileged latent (RMA-style), ``[..., Z]``."""
    error = jnp.mean(jnp.square(student_latent - jax.lax.stop_gradient(teacher_latent)), axis=-1)
    return masked_mean(error, valid), {"latent_error": masked_mean(error, valid)}

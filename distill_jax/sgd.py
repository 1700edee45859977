"""Epochs × shuffled minibatches of gradient steps, inside ``lax.scan``.

Shared by the PPO update and the distillation update: both hand a loss
``loss_fn(params, minibatch) -> (scalar, metrics)`` and a flat batch whose
leaves have a leading sample axis ``[N, ...]``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[Any, Any], tuple[jax.Array, dict[str, jax.Array]]]


def make_optimizer(learning_rate: float, max_grad_norm: float, anneal_steps: int = 0) -> optax.GradientTransformation:
    """Adam after global-norm gradient clipping (both phases use it).

    ``anneal_steps`` > 0: the rate falls linearly from ``learning_rate`` to 0 over that many
    gradient steps (counted in the optimiser's state, so a resumed run continues the schedule).
    ``learning_rate`` may be traced (a sweep member's).
    """
    if anneal_steps > 0:
        rate = lambda count: learning_rate * jnp.maximum(1.0 - count / anneal_steps, 0.0)  # noqa: E731
        return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(rate))
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


def shuffled_minibatches(batch: Any, key: jax.Array, num_minibatches: int) -> Any:
    """Permutes the leading axis ``N`` and splits it: ``[N, ...] -> [M, N // M, ...]``."""
    n = jax.tree.leaves(batch)[0].shape[0]
    perm = jax.random.permutation(key, n)
    return jax.tree.map(
        lambda x: jnp.take(x, perm, axis=0).reshape((num_minibatches, n // num_minibatches) + x.shape[1:]),
        batch,
    )


def sgd_epochs(
    params: Any,
    opt_state: optax.OptState,
    batch: Any,
    key: jax.Array,
    *,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    num_epochs: int,
    num_minibatches: int,
    unroll: int = 1,
) -> tuple[Any, optax.OptState, dict[str, jax.Array]]:
    """Runs ``num_epochs`` passes of ``num_minibatches`` gradient steps.

    Args:
      params: the parameters being optimised (only these receive gradients).
      opt_state: ``optimizer``'s state for ``params``.
      batch: pytree with leaves ``[N, ...]``; ``N`` divisible by ``num_minibatches``.
      key: PRNG key for the shuffles.
      loss_fn: ``(params, minibatch) -> (loss, metrics)``.
      unroll: minibatch steps per iteration of the compiled loop over minibatches
        (``lax.scan``'s ``unroll``). The arithmetic is the same; more steps per
        iteration means fewer loop-condition checks and longer compiles.

    Returns:
      ``(params, opt_state, metrics)`` with metrics averaged over all steps
      (plus ``grad_norm``).
    """

    def gradient_step(carry, minibatch):
        p, s = carry
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, minibatch)
        updates, s = optimizer.update(grads, s, p)
        p = optax.apply_updates(p, updates)
        return (p, s), {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}

    def epoch(carry, epoch_key):
        minibatches = shuffled_minibatches(batch, epoch_key, num_minibatches)
        return jax.lax.scan(gradient_step, carry, minibatches, unroll=unroll)

    (params, opt_state), metrics = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(key, num_epochs)
    )
    return params, opt_state, jax.tree.map(jnp.mean, metrics)

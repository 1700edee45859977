"""Per-field running observation normalisation, as a pure pytree.

:class:`RunningStats` holds a running mean and (population) variance for each
named observation field plus one shared sample count. It is a NamedTuple of
dicts, so it jits, vmaps (e.g. one normaliser per seed), and checkpoints like
any other pytree.

Batches are merged with the parallel algorithm of Chan, Golub & LeVeque (1979):
for the running ``(n_a, mean_a, var_a)`` and a batch's ``(n_b, mean_b, var_b)``::

    n     = n_a + n_b
    delta = mean_b - mean_a
    mean  = mean_a + delta * n_b / n
    var   = (n_a var_a + n_b var_b + delta² n_a n_b / n) / n

which is exact (up to rounding) for any sequence of batch sizes and does not
suffer the cancellation of the naive ``E[x²] - E[x]²``.

The count is a float32 scalar: beyond 2**24 samples it is no longer an exact
integer, but only the ratio ``n_b / n`` enters the update, whose relative error
stays at float32 precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from distill_jax.schema import FieldSpec

DEFAULT_CLIP = 10.0
DEFAULT_EPS = 1e-8


class RunningStats(NamedTuple):
    """Running per-field statistics.

    Attributes:
      mean: ``{field: [*field_shape]}`` running means (float32).
      var: ``{field: [*field_shape]}`` running population variances (float32).
      count: ``[]`` float32 number of samples merged so far (shared by all fields).
    """

    mean: dict[str, jax.Array]  # {field: [*field_shape]}
    var: dict[str, jax.Array]  # {field: [*field_shape]}
    count: jax.Array  # []


def _field_shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, FieldSpec):
        return value.shape
    if isinstance(value, tuple):
        return tuple(int(d) for d in value)
    return tuple(jnp.shape(value))


def init_stats(fields: Mapping[str, Any]) -> RunningStats:
    """Empty statistics (mean 0, variance 1, count 0) for the given fields.

    With count 0, :func:`normalize` is the identity (up to clipping), and the
    first :func:`update_stats` replaces mean and variance by the batch's.

    Args:
      fields: ``{name: FieldSpec}`` (e.g. ``schema.field_specs``), ``{name: shape
        tuple}``, or an *unbatched* example observation ``{name: [*field_shape]}``.

    Returns:
      A :class:`RunningStats` over exactly those fields.
    """
    shapes = {name: _field_shape(v) for name, v in fields.items()}
    return RunningStats(
        mean={k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()},
        var={k: jnp.ones(s, jnp.float32) for k, s in shapes.items()},
        count=jnp.zeros((), jnp.float32),
    )


def _batch_axes(x: jax.Array, field_rank: int) -> tuple[int, ...]:
    return tuple(range(x.ndim - field_rank))


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def update_stats(
    stats: RunningStats,
    obs_batch: Mapping[str, jax.Array],
    mask: jax.Array | None = None,
) -> RunningStats:
    """Merges a batch of observations into the running statistics.

    Every field of ``stats`` must be present in ``obs_batch``; extra fields are
    ignored. All fields must share the same leading batch shape ``[*L]`` (any
    number of axes, e.g. ``[B]`` or ``[T, B]``).

    Args:
      stats: the running statistics.
      obs_batch: ``{field: [*L, *field_shape]}``.
      mask: optional ``[*L]`` 0/1 weights; samples with weight 0 are ignored
        (e.g. padded or invalid steps). ``None`` counts every sample.

    Returns:
      The updated :class:`RunningStats`. A batch whose mask is all zero leaves
      the statistics unchanged.

    Raises:
      KeyError: if a field of ``stats`` is missing from ``obs_batch``.
      ValueError: if a field's trailing shape differs from its statistics', or
        the fields' leading batch shapes disagree.
    """
    missing = [k for k in stats.mean if k not in obs_batch]
    if missing:
        raise KeyError(f"update_stats: observation batch lacks field(s) {missing}")

    lead_shape = None
    batch_count = None
    new_mean, new_var = {}, {}
    for name, mean_a in stats.mean.items():
        x = jnp.asarray(obs_batch[name], jnp.float32)
        if x.ndim < mean_a.ndim or x.shape[x.ndim - mean_a.ndim :] != mean_a.shape:
            raise ValueError(
                f"update_stats: field {name!r} has shape {x.shape}; expected (..., *{mean_a.shape})"
            )
        axes = _batch_axes(x, mean_a.ndim)
        lead = x.shape[: len(axes)]
        if lead_shape is None:
            lead_shape = lead
        elif lead != lead_shape:
            raise ValueError(
                f"update_stats: field {name!r} has batch shape {lead}, other fields {lead_shape}"
            )
        if mask is None:
            n_b = jnp.asarray(_prod(lead), jnp.float32)
            mean_b = jnp.mean(x, axis=axes) if axes else x
            var_b = jnp.var(x, axis=axes) if axes else jnp.zeros_like(x)
        else:
            w = jnp.asarray(mask, jnp.float32).reshape(lead + (1,) * mean_a.ndim)
            n_b = jnp.sum(w)
            safe_n = jnp.maximum(n_b, 1.0)
            mean_b = jnp.sum(w * x, axis=axes) / safe_n
            var_b = jnp.sum(w * jnp.square(x - mean_b), axis=axes) / safe_n
        batch_count = n_b
        n_a = stats.count
        n = n_a + n_b
        # With n == 0 (empty stats, fully masked batch) keep the old values.
        frac_b = jnp.where(n > 0, n_b / jnp.maximum(n, 1e-30), 0.0)
        frac_a = 1.0 - frac_b
        delta = mean_b - mean_a
        new_mean[name] = mean_a + delta * frac_b
        new_var[name] = frac_a * stats.var[name] + frac_b * var_b + jnp.square(delta) * frac_a * frac_b

    if batch_count is None:  # no fields at all
        return stats
    return RunningStats(mean=new_mean, var=new_var, count=stats.count + batch_count)


def normalize(
    stats: RunningStats,
    obs: Mapping[str, jax.Array],
    clip: float | None = DEFAULT_CLIP,
    eps: float = DEFAULT_EPS,
) -> dict[str, jax.Array]:
    """Standardises the fields of ``obs`` that ``stats`` tracks.

    ``out = clip((x - mean) / sqrt(var + eps), -clip, clip)`` per field;
    fields of ``obs`` that ``stats`` does not track pass through unchanged.

    Args:
      stats: running statistics.
      obs: ``{field: [*L, *field_shape]}`` with any leading batch shape.
      clip: symmetric bound on the normalised values (``None``: no clipping).
      eps: added to the variance before the square root.

    Returns:
      A new dict with the same keys as ``obs``.
    """
    out = dict(obs)
    for name, mean in stats.mean.items():
        if name not in obs:
            continue
        x = jnp.asarray(obs[name], jnp.float32)
        z = (x - mean) / jnp.sqrt(stats.var[name] + eps)
        if clip is not None:
            z = jnp.clip(z, -clip, clip)
        out[name] = z
    return out


def denormalize(
    stats: RunningStats, obs: Mapping[str, jax.Array], eps: float = DEFAULT_EPS
) -> dict[str, jax.Array]:
    """The inverse of :func:`normalize` without clipping: ``x = z sqrt(var + eps) + mean``."""
    out = dict(obs)
    for name, mean in stats.mean.items():
        if name in obs:
            out[name] = jnp.asarray(obs[name], jnp.float32) * jnp.sqrt(stats.var[name] + eps) + mean
    return out


__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_EPS",
    "RunningStats",
    "denormalize",
    "init_stats",
    "normalize",
    "update_stats",
]

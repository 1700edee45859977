"""Float coefficients as data: the traced values a train state carries.

Every config dataclass names its float coefficients in ``TRACED`` (learning rate, clipping,
entropy and bound weights, discounting, the β schedule's ends ...). :func:`coefficients` turns
them into float32 scalars shaped like the config (nested sections that have any become nested
dicts), and the update steps read them from ``state.hparams`` instead of the config. So:

* changing a coefficient (``--set``, ``--resume``, ``--from``) runs the same compiled program;
* a sweep is one more ``vmap`` axis: :func:`member_coefficients` stacks one set per member of a
  ``grid × seeds`` population, and the phase vmaps over it as it does over seeds.

Shape-fixing settings stay static in the config; so do the switches that decide a program's
structure (``distill.ppo_term.enabled``, ``distill.student.latent_head``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from distill_jax.config import traced_paths, with_value

Hyperparams = dict[str, Any]  # {name: f32 scalar, section: {...}} mirroring the config's traced fields


def coefficients(config: Any) -> Hyperparams:
    """``config``'s traced fields as float32 scalars: ``{name: []}``, nested sections as nested dicts."""
    out: Hyperparams = {name: jnp.asarray(getattr(config, name), jnp.float32) for name in config.TRACED}
    for f in dataclasses.fields(config):
        section = getattr(config, f.name)
        if dataclasses.is_dataclass(section) and traced_paths(section):
            out[f.name] = coefficients(section)
    return out


def member_coefficients(config: Any, points: list[dict[str, float]], num_seeds: int) -> Hyperparams:
    """One set of :func:`coefficients` per member, stacked on a leading axis ``[G * K]``.

    ``points`` are the sweep's grid points as ``{dotted path relative to config: value}``
    (``[{}]`` without a sweep); member ``g * K + k`` is grid point ``g`` with seed index ``k``.
    """
    sets = []
    for point in points:
        swept = config
        for path, value in point.items():
            swept = with_value(swept, path, float(value))
        sets += [coefficients(swept)] * num_seeds
    return jax.tree.map(lambda *xs: jnp.stack(xs), *sets)

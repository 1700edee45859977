"""Named invalid-step rules: which teacher steps must never be imitation targets.

A rule maps a :class:`MaskInputs` batch (time-major ``[T, B]``) to a *valid*
mask (1.0 = keep). The rules in force and their thresholds come from the
config's ``distill.mask``, else from the env schema's declared ``mask_rule`` /
``mask_thresholds``, else from the library default (:func:`in_force`); the combined mask is the product of the
rules' masks, and each update reports the fraction each rule masked.

Rules:

* ``falls`` – the step that ended in a termination (a fall), and the
  ``fall_horizon - 1`` steps before it within the same unroll: the teacher's
  actions there led into the failure.
* ``timeouts`` – the step cut by the time limit (its successor is not the
  dynamics' successor).
* ``resets`` – the first step of an episode (observation histories are still
  padding; the reset distribution is not the task's state distribution).
* ``saturated_actions`` – any teacher mean action ``|tanh(loc)|`` at or above
  ``saturation`` (default 0.99): a saturated target is uninformative and its
  pre-squash mean can be arbitrarily large.
* ``nonfinite_teacher`` – teacher loc or scale is NaN/Inf.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from distill_jax.config import DEFAULT_MASK_RULE, DEFAULT_MASK_THRESHOLDS
from distill_jax.distributions import SATURATION_LIMIT, saturated


class MaskInputs(NamedTuple):
    """What the rules read, leaves ``[T, B]`` (teacher params ``[T, B, A]``)."""

    terminated: jax.Array
    truncated: jax.Array
    first: jax.Array
    teacher_loc: jax.Array
    teacher_scale: jax.Array


DEFAULT_THRESHOLDS: dict[str, float] = {"saturation": SATURATION_LIMIT, "fall_horizon": 1.0}


def steps_before_termination(terminated: jax.Array, horizon: jax.Array) -> jax.Array:
    """1.0 where a termination happens within ``horizon`` steps from here (this step included);
    ``terminated`` is time-major ``[T, ...]``."""

    def back(countdown, term_t):
        # countdown: steps left in the invalid window that a later termination opened.
        countdown = jnp.where(term_t > 0, horizon, countdown - 1.0)
        return countdown, (countdown > 0).astype(term_t.dtype)

    _, flagged = jax.lax.scan(back, jnp.zeros_like(terminated[0]), terminated, reverse=True)
    return flagged


def falls(inputs: MaskInputs, thresholds: Mapping[str, float]) -> jax.Array:
    horizon = jnp.asarray(thresholds.get("fall_horizon", DEFAULT_THRESHOLDS["fall_horizon"]), jnp.float32)
    return 1.0 - steps_before_termination(inputs.terminated, horizon)


def timeouts(inputs: MaskInputs, thresholds: Mapping[str, float]) -> jax.Array:
    del thresholds
    return 1.0 - inputs.truncated


def resets(inputs: MaskInputs, thresholds: Mapping[str, float]) -> jax.Array:
    del thresholds
    return 1.0 - inputs.first


def saturated_actions(inputs: MaskInputs, thresholds: Mapping[str, float]) -> jax.Array:
    return 1.0 - saturated(inputs.teacher_loc, thresholds.get("saturation", DEFAULT_THRESHOLDS["saturation"]))


def nonfinite_teacher(inputs: MaskInputs, thresholds: Mapping[str, float]) -> jax.Array:
    del thresholds
    ok = jnp.all(jnp.isfinite(inputs.teacher_loc) & jnp.isfinite(inputs.teacher_scale), axis=-1)
    return ok.astype(jnp.float32)


RULES: dict[str, Callable[[MaskInputs, Mapping[str, float]], jax.Array]] = {
    "falls": falls,
    "timeouts": timeouts,
    "resets": resets,
    "saturated_actions": saturated_actions,
    "nonfinite_teacher": nonfinite_teacher,
}


def check_rules(names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise ValueError(f"unknown mask rule(s) {unknown}; available: {sorted(RULES)}")


def valid_mask(
    names: tuple[str, ...], inputs: MaskInputs, thresholds: Mapping[str, float] | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The product of the named rules' masks and the fraction each one masked.

    Returns:
      ``(valid [T, B], {"masked/<rule>": fraction of steps that rule masks,
      "masked/any": fraction masked by at least one rule})``.
    """
    check_rules(names)
    thresholds = {**DEFAULT_THRESHOLDS, **dict(thresholds or {})}
    valid = jnp.ones_like(inputs.terminated, dtype=jnp.float32)
    fractions = {}
    for name in names:
        rule_valid = RULES[name](inputs, thresholds).astype(jnp.float32)
        fractions[f"masked/{name}"] = jnp.mean(1.0 - rule_valid)  # exact 0 when nothing is masked
        valid = valid * rule_valid
    fractions["masked/any"] = jnp.mean(1.0 - valid)
    return valid, fractions


def in_force(mask: Any, schema: Any) -> tuple[tuple[str, ...], dict[str, float]]:
    """The rule and thresholds in force: the config's ``distill.mask`` (a ``MaskConfig``) where it
    names them, else what the env's schema declares, else the library default
    (``config.DEFAULT_MASK_RULE`` / ``DEFAULT_MASK_THRESHOLDS``)."""
    rule = mask.rule if mask.rule is not None else (schema.mask_rule or DEFAULT_MASK_RULE)
    thresholds = mask.thresholds if mask.thresholds is not None else (schema.mask_thresholds or DEFAULT_MASK_THRESHOLDS)
    return tuple(rule), dict(thresholds)


def schema_in_force(schema: Any, config: Any) -> Any:
    """``schema`` (an ``ObservationSchema``) with the mask rule and thresholds in force under
    ``config`` (a ``DistillConfig``) recorded in it: what a run's ``schema.json`` and checkpoints carry."""
    rule, thresholds = in_force(config.mask, schema)
    return dataclasses.replace(schema, mask_rule=rule, mask_thresholds=tuple(thresholds.items()))

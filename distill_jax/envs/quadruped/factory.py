"""The ``"quadruped_rough"`` registry entry: the task with its default wrapper stack.

:func:`make_quadruped_rough` wraps :class:`RoughTerrainQuadruped` in
``DomainRandomization`` (:func:`default_ranges`: foot friction, trunk mass,
motor strength; adds the teacher-only ``dyn_params``) -> ``SensorNoise``
(:data:`NOISE_STD`) -> ``ObservationHistory`` (8 rows of :data:`HISTORY_FIELDS`
+ actions; adds the student field ``history``) -> ``TimeLimit`` (1000 steps =
20 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distill_jax.envs.base import Env
from distill_jax.envs.quadruped.config import config_from_overrides, default_ranges
from distill_jax.envs.quadruped.task import RoughTerrainQuadruped
from distill_jax.envs.registry import wrap_task

# Overrides of the default wrapper stack (documented in distill_jax.envs.registry).
STACK_DEFAULTS: dict[str, Any] = {
    "episode_length": 1000,  # 20 s at dt = 0.02
    "randomize": True,
    "ranges": None,  # None: default_ranges(config)
    "noise_std": None,  # None: NOISE_STD; a float: that std on every NOISE_STD field
    "history_length": 8,
    "history_fields": None,  # None: HISTORY_FIELDS
    "history_actions": True,
    "history_fill": "first",
    "max_action_delay": 0,  # control steps; > 0 adds ActionLatency (privileged "action_latency")
}
# Per-field sensor noise (legged_gym's levels, in SI units).
NOISE_STD: dict[str, float] = {
    "joint_pos": 0.01,
    "joint_vel": 1.5,
    "base_ang_vel": 0.2,
    "projected_gravity": 0.05,
}
HISTORY_FIELDS = ("joint_pos", "joint_vel", "base_ang_vel", "projected_gravity")


def make_quadruped_rough(**overrides: Any) -> Env:
    """The rough-terrain quadruped with the default wrapper stack.

    ``task -> DomainRandomization -> SensorNoise -> ObservationHistory -> TimeLimit``
    (see :func:`distill_jax.envs.registry.wrap_task`). Task options are
    :class:`QuadrupedConfig` fields, ``reward_<term>`` and ``terrain_<field>``
    (:func:`config_from_overrides`); stack options are the keys of
    :data:`STACK_DEFAULTS`.

    Raises:
      ValueError: naming any unknown option.
    """
    return make_with_stack(RoughTerrainQuadruped, config_from_overrides, overrides)


def make_with_stack(task_cls: Callable[[Any], Any], parse: Callable[[dict[str, Any]], Any],
                    overrides: dict[str, Any]) -> Env:
    """``task_cls(parse(task options))`` in the quadruped's default wrapper stack.

    ``overrides`` holds task options (handed to ``parse``, which returns the task's config) and
    stack options (the keys of :data:`STACK_DEFAULTS`); shared by the quadruped's registry entries.

    Raises:
      ValueError: naming any unknown option.
    """
    stack = dict(STACK_DEFAULTS)
    task_opts = {}
    for key, value in overrides.items():
        if key in STACK_DEFAULTS:
            stack[key] = value
        else:
            task_opts[key] = value
    try:
        config = parse(task_opts)
    except ValueError as e:
        raise ValueError(f"{e}; or a stack option {sorted(STACK_DEFAULTS)}") from None
    task = task_cls(config)
    ranges = None
    if stack["randomize"]:
        ranges = default_ranges(config) if stack["ranges"] is None else tuple(stack["ranges"])
    noise = stack["noise_std"]
    if noise is None:
        noise = dict(NOISE_STD)
    elif not isinstance(noise, dict):
        noise = {name: float(noise) for name in NOISE_STD}
    return wrap_task(
        task,
        episode_length=int(stack["episode_length"]),
        ranges=ranges,
        noise_std=noise,
        history_length=int(stack["history_length"]),
        history_fields=tuple(stack["history_fields"] or HISTORY_FIELDS),
        history_actions=bool(stack["history_actions"]),
        history_fill=stack["history_fill"],
        max_action_delay=int(stack["max_action_delay"]),
    )

"""Rough-terrain quadruped velocity tracking on MJX: the privileged-distillation workload.

One job per module:

* :mod:`~distill_jax.envs.quadruped.config`: ``QuadrupedConfig`` (with ``RewardWeights``),
  the override parser ``config_from_overrides``, the domain-randomisation
  ranges ``default_ranges`` and the names shared by the others (legs, reward
  terms, observation fields by role);
* :mod:`~distill_jax.envs.quadruped.mjcf`: ``build_mjcf``, the shipped MJCF
  edited for one config (solver, trunk colliders, per-foot contact planes);
* :mod:`~distill_jax.envs.quadruped.task`: ``RoughTerrainQuadruped``, the
  single-instance task (observations, rewards, terminations: see its docstring);
* :mod:`~distill_jax.envs.quadruped.factory`: ``make_quadruped_rough``, the task
  with its default wrapper stack (the ``"quadruped_rough"`` registry entry).

The public names of all four are importable from this package.
"""

from distill_jax.envs.quadruped.config import (
    CRITIC_FIELDS,
    FOOT_CONTACTS,
    JOINTS_PER_LEG,
    LEGS,
    REWARD_TERMS,
    SCAN_POINTS,
    STUDENT_FIELDS,
    TEACHER_FIELDS,
    TRUNK_SPHERES,
    QuadrupedConfig,
    RewardWeights,
    config_from_overrides,
    default_ranges,
)
from distill_jax.envs.quadruped.factory import HISTORY_FIELDS, NOISE_STD, STACK_DEFAULTS, make_quadruped_rough
from distill_jax.envs.quadruped.mjcf import build_mjcf
from distill_jax.envs.quadruped.task import RoughTerrainQuadruped

__all__ = [
    "CRITIC_FIELDS",
    "FOOT_CONTACTS",
    "HISTORY_FIELDS",
    "JOINTS_PER_LEG",
    "LEGS",
    "NOISE_STD",
    "REWARD_TERMS",
    "SCAN_POINTS",
    "STACK_DEFAULTS",
    "STUDENT_FIELDS",
    "TEACHER_FIELDS",
    "TRUNK_SPHERES",
    "QuadrupedConfig",
    "RewardWeights",
    "RoughTerrainQuadruped",
    "build_mjcf",
    "config_from_overrides",
    "default_ranges",
    "make_quadruped_rough",
]

"""The quadruped's MJCF: the shipped ``assets/quadruped.xml`` edited for one :class:`QuadrupedConfig`.

The solver settings, whether the trunk spheres collide, the per-foot contact
planes (``foot_contact="tangent_plane"``) and the height field's size are set
by :func:`distill_jax.quadruped_mjcf.edit_quadruped_mjcf` (JAX-free, shared with the C
sim-to-sim); the height values themselves are written into the compiled model by
:class:`~distill_jax.envs.quadruped.task.RoughTerrainQuadruped`.
"""

from __future__ import annotations

from distill_jax.envs.mjx_env import load_asset
from distill_jax.envs.quadruped.config import QuadrupedConfig
from distill_jax.quadruped_mjcf import edit_quadruped_mjcf


def build_mjcf(cfg: QuadrupedConfig, max_height: float) -> str:
    """The shipped MJCF with the solver, trunk colliders and height field set from ``cfg``."""
    t = cfg.terrain
    return edit_quadruped_mjcf(load_asset("quadruped.xml"), solver_iterations=cfg.solver_iterations,
                               solver_ls_iterations=cfg.solver_ls_iterations, trunk_collision=cfg.trunk_collision,
                               foot_contact=cfg.foot_contact, nrow=t.nrow, ncol=t.ncol, half_x=t.half_x,
                               half_y=t.half_y, max_height=max_height)

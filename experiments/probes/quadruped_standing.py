"""Standing and landing of the rough-terrain quadruped under different solver settings.

4 envs, 100 control steps (2 s) of zero actions from the spawn pose (pushes every
1 s, at most 40 N, as in tests/test_quadruped.py), for the version-2 default
(1 Newton iteration / 5 line-search steps) and 4/8, 2/5, 1/8, and for the
feet on per-foot tangent planes (``foot_contact="tangent_plane"``). Prints the lowest
sole clearance (m, negative = sunk into the terrain) per 10 steps, the trunk
height range over the second second, and the mean total foot load then (N).

Usage: python experiments/probes/quadruped_standing.py
Cited by: experiments/results/quadruped_physics_cpu.md
"""

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.envs import quadruped as quad

B, T = 4, 100
for kw in ({}, dict(solver_iterations=4, solver_ls_iterations=8), dict(solver_iterations=2, solver_ls_iterations=5),
           dict(solver_iterations=1, solver_ls_iterations=8), dict(foot_contact="tangent_plane")):
    env = quad.RoughTerrainQuadruped(quad.QuadrupedConfig(push_interval_s=1.0, push_force_max=40.0, **kw))
    reset = jax.jit(jax.vmap(env.reset))

    @jax.jit
    def run(state, actions):
        def body(s, a):
            s = jax.vmap(env.step)(s, a)
            return s, (s.obs["terrain_heights"][..., 4], s.metrics["base_height"], s.obs["foot_contact_forces"].sum(-1))

        return jax.lax.scan(body, state, actions)

    _, (sole, height, load) = run(reset(jax.random.split(jax.random.PRNGKey(0), B)), jnp.zeros((T, B, 12)))
    sole, height, load = np.asarray(sole), np.asarray(height), np.asarray(load)
    print(kw or "default (1/5)", "lowest sole per 10 steps", sole.min(axis=(1, 2)).reshape(10, 10).min(1).round(4),
          "height, 2nd second", height[50:].min().round(3), "to", height[50:].max().round(3),
          "load", load[50:].mean().round(1))

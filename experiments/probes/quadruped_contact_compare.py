"""The feet on per-foot tangent planes against MJX's height-field contact: same states, same step.

``foot_contact="tangent_plane"`` replaces MJX's sphere-height-field collision
(4 contact slots per foot, a convex collision per triangular prism) with one
plane per foot, placed on the terrain's tangent plane under the foot before
every physics step. This probe measures what that changes:

1. **One physics step from the same states.** States come from a rollout of
   the height-field task under random actions (B envs, T control steps,
   Gaussian actions of std ``ACTION_STD`` resampled every control step, so the
   feet slide, stamp and swing over steps and slopes). Every ``EVERY``-th
   state is stepped once in each mode (the tangent-plane data gets the same
   ``qpos``, ``qvel``, ``ctrl`` and solver warm start) and the per-foot normal
   forces and the trunk's resulting velocity are compared.
2. **Rollout statistics.** Each mode runs its own rollout from the same resets
   and actions; the share of envs that fell, the lowest sole clearance (sole height above
   the terrain under the foot centre), the mean foot load and the trunk height.
3. **Cost.** A jitted scan of 20 control steps of ``vmap(env.step)`` per mode,
   best of 5, in env-steps/s.

Usage: python experiments/probes/quadruped_contact_compare.py [B] [T]   (default 64 250)
Cited by: experiments/results/quadruped_physics_cpu.md; distill_jax/envs/quadruped/task.py
"""

import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mujoco import mjx  # noqa: E402

from distill_jax.envs.quadruped import QuadrupedConfig, RoughTerrainQuadruped  # noqa: E402

ACTION_STD = 0.5
EVERY = 5


def rollout(env: RoughTerrainQuadruped, keys: jax.Array, actions: jax.Array):
    """Per control step: physics data, falls, sole clearance [B, 4], foot loads [B, 4], base height."""

    @jax.jit
    def run(keys, actions):
        def body(s, a):
            s = jax.vmap(env.step)(s, a)
            # Falls are not reset: a fallen env keeps being stepped; its rows are masked below.
            return s, (s.physics, s.terminated, s.obs["terrain_heights"][..., 4],
                       s.obs["foot_contact_forces"], s.metrics["base_height"])

        return jax.lax.scan(body, jax.vmap(env.reset)(keys), actions)[1]

    return run(keys, actions)


def one_step_forces(env: RoughTerrainQuadruped, data: mjx.Data) -> tuple[jax.Array, jax.Array]:
    """Per-foot normal forces [4] (N) and trunk linear velocity [3] (m/s) after one physics step."""
    d = env.before_physics_step(env.mjx_model, data)
    d = mjx.step(env.mjx_model, d)
    return env._kinematics(env.mjx_model, d)["foot_forces"], d.qvel[:3]


def transplant(target_env: RoughTerrainQuadruped, data: mjx.Data) -> mjx.Data:
    """``data``'s state in ``target_env``'s model.

    The joints are the same; the plane model appends 4 mocap bodies and their
    geoms after the robot's, so per-body and per-geom arrays are copied into
    their leading rows.
    """
    d0 = target_env._data0
    return d0.replace(
        qpos=data.qpos, qvel=data.qvel, ctrl=data.ctrl, qacc_warmstart=data.qacc_warmstart,
        xfrc_applied=d0.xfrc_applied.at[: data.xfrc_applied.shape[0]].set(data.xfrc_applied),
        geom_xpos=d0.geom_xpos.at[: data.geom_xpos.shape[0]].set(data.geom_xpos))


def steps_per_s(env: RoughTerrainQuadruped, keys: jax.Array) -> float:
    states = jax.vmap(env.reset)(keys)
    zeros = jnp.zeros((20, keys.shape[0], 12))
    run = jax.jit(lambda s: jax.lax.scan(lambda s, a: (jax.vmap(env.step)(s, a), None), s, zeros)[0])
    states = jax.block_until_ready(run(states))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        states = jax.block_until_ready(run(states))
        best = min(best, time.perf_counter() - t0)
    return 20 * keys.shape[0] / best


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    horizon = int(sys.argv[2]) if len(sys.argv) > 2 else 250
    hfield = RoughTerrainQuadruped(QuadrupedConfig())
    planes = RoughTerrainQuadruped(QuadrupedConfig(foot_contact="tangent_plane"))
    solver48 = RoughTerrainQuadruped(QuadrupedConfig(solver_iterations=4, solver_ls_iterations=8))
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    actions = ACTION_STD * jax.random.normal(jax.random.PRNGKey(1), (horizon, batch, 12))
    print(f"devices: {jax.devices()}; B={batch}, T={horizon} control steps, actions N(0, {ACTION_STD}^2)")

    # 1. One step from the same (height-field) states, alive ones only. Version 1's
    # solver (4 Newton iterations / 8 line-search steps) on the same height field is
    # the yardstick: the size of a change the task already accepted (version 2's 1/5).
    physics, fell, *_ = rollout(hfield, keys, actions)
    alive = np.asarray(jnp.cumsum(fell, axis=0) == 0)[::EVERY].reshape(-1)
    n_states = alive.size  # explicit: some data leaves have a zero-sized axis
    states = jax.tree.map(lambda x: x[::EVERY].reshape((n_states,) + x.shape[2:]), physics)
    v_before = np.asarray(states.qvel[:, :3])[alive]
    f_h, v_h = jax.tree.map(lambda x: np.asarray(x)[alive], jax.jit(jax.vmap(lambda d: one_step_forces(hfield, d)))(states))
    print(f"one step from {alive.sum()} states, {(f_h > 1.0).sum()} loaded feet; the step itself changes the trunk "
          f"velocity by a median {1e3 * np.median(np.linalg.norm(v_h - v_before, axis=-1)):.2f} mm/s")
    for name, other in (("tangent_plane", planes), ("hfield, solver 4/8", solver48)):
        step = jax.jit(jax.vmap(lambda d, e=other: one_step_forces(e, transplant(e, d))))
        f_o, v_o = jax.tree.map(lambda x: np.asarray(x)[alive], step(states))
        loaded = f_h > 1.0
        force_diff = np.abs(f_o - f_h)[loaded]
        total_h, total_o = f_h.sum(-1), f_o.sum(-1)
        rel_total = np.abs(total_o - total_h) / np.maximum(total_h, 1.0)
        dv = 1e3 * np.linalg.norm(v_o - v_h, axis=-1)
        print(f"  {name} against the default:")
        print(f"    per-foot normal force |diff| (N), loaded feet: median {np.median(force_diff):.2f}, "
              f"p95 {np.percentile(force_diff, 95):.2f} (mean load {f_h[loaded].mean():.1f})")
        print(f"    feet loaded in one and not the other: {np.mean(loaded != (f_o > 1.0)):.4f} of feet")
        print(f"    total foot force, relative |diff|: median {np.median(rel_total):.4f}, p95 {np.percentile(rel_total, 95):.4f}")
        print(f"    trunk velocity after the step |diff| (mm/s): median {np.median(dv):.3f}, p95 {np.percentile(dv, 95):.3f}")

    # 2. Each mode's own rollout.
    for name, env in (("hfield", hfield), ("tangent_plane", planes), ("hfield, solver 4/8", solver48)):
        _, fell, sole, load, height = jax.tree.map(np.asarray, rollout(env, keys, actions))
        up = np.cumsum(fell, axis=0) == 0
        print(f"{name:18s} rollout: envs fallen {fell.max(0).mean():.3f}, lowest sole {1e3 * sole[up].min():.1f} mm, "
              f"sole p1 {1e3 * np.percentile(sole[up], 1):.1f} mm, foot load {load.sum(-1)[up].mean():.1f} N, "
              f"base height {height[up].mean():.3f} m")

    # 3. Cost.
    for _ in range(2):
        for name, env in (("hfield", hfield), ("tangent_plane", planes)):
            print(f"{name:18s} {steps_per_s(env, keys):9.0f} env-steps/s (bare task, B={batch})")


if __name__ == "__main__":
    main()

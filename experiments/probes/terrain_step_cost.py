"""What the tile terrain and the height scan cost per env step, next to today's quadruped (bare tasks, no wrappers).

Three programs, each a jitted ``lax.scan`` of ``T`` control steps of ``vmap(step)`` over ``B`` envs
with zero actions, best of ``REPEATS`` calls after the compiling one
(the two tasks: best of ``2 * REPEATS`` interleaved rounds):

* ``quadruped_rough``: the rough quadruped on its 16 m map (today's task);
* ``quadruped_terrain``: the tile-map quadruped with the default 11 x 7 height scan (the default 10 x 7
  tiles of 5 m at 5 cm);
* ``scan only``: the scan's exact lookup plus its imperfections (``exact_scan`` + ``scan_step``) for the
  same ``B`` bases, without physics: the scan's own share;
* with ``--curriculum``, also the wrapped ``quadruped_terrain`` stack with 1-step episodes (every env
  restarts at every step) batched by plain ``VmapAutoReset`` and by ``TerrainCurriculumAutoReset``:
  the difference is the curriculum's relocation at its worst (every env relocated every step).

Usage: python experiments/probes/terrain_step_cost.py [B] [T] [--curriculum]   (default 64 20)
"""

import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from distill_jax.envs.height_scan import exact_scan, scan_reset, scan_step  # noqa: E402
from distill_jax.envs.quadruped import RoughTerrainQuadruped  # noqa: E402
from distill_jax.envs.quadruped.terrain_task import TerrainQuadruped  # noqa: E402

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
B = int(ARGS[0]) if len(ARGS) > 0 else 64
T = int(ARGS[1]) if len(ARGS) > 1 else 20
CURRICULUM = "--curriculum" in sys.argv
REPEATS = 3


def timed(fn, *args) -> tuple[float, float]:
    """(compile + first call s, best later call s)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return first, best


def env_program(env):
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), B))

    @jax.jit
    def run(state):
        def body(s, _):
            return jax.vmap(env.step)(s, jnp.zeros((B, env.action_size))), None
        return jax.lax.scan(body, state, None, length=T)[0].reward

    return run, state


def main() -> None:
    print(f"B={B} envs, T={T} control steps per call, best of {REPEATS}; {jax.devices()[0].platform}")
    programs, firsts = {}, {}
    for name, env in (("quadruped_rough", RoughTerrainQuadruped()), ("quadruped_terrain", TerrainQuadruped())):
        programs[name] = env_program(env)
        t = time.perf_counter()
        jax.block_until_ready(programs[name][0](programs[name][1]))
        firsts[name] = time.perf_counter() - t
    # Interleaved rounds: the two programs see the same machine load (the cores may be shared).
    rows = {name: float("inf") for name in programs}
    for _ in range(2 * REPEATS):
        for name, (run, state) in programs.items():
            t = time.perf_counter()
            jax.block_until_ready(run(state))
            rows[name] = min(rows[name], time.perf_counter() - t)
    for name, best in rows.items():
        print(f"{name:18s} compile+first {firsts[name]:6.1f} s   {1e3 * best / T:8.2f} ms/step   "
              f"{B * T / best:10,.0f} env-steps/s")

    task = TerrainQuadruped()
    cfg, t = task.config.height_scan, task.config.terrain
    heights = task._heights
    base = jnp.stack([jnp.linspace(-5, 5, B), jnp.linspace(-5, 5, B), jnp.full(B, 0.6)], -1)
    yaw = jnp.linspace(-3, 3, B)
    keys = jax.random.split(jax.random.PRNGKey(1), B)
    states, _ = jax.vmap(lambda k, p, y: scan_reset(cfg, k, exact_scan(cfg, heights, t.half_x, t.half_y, p, y)))(
        keys, base, yaw)

    @jax.jit
    def scan_only(states, base):
        def body(carry, k):
            s, p = carry
            ks = jax.random.split(k, B)
            s, out = jax.vmap(lambda st, kk, pp, yy: scan_step(
                cfg, st, kk, exact_scan(cfg, heights, t.half_x, t.half_y, pp, yy)))(s, ks, p, yaw)
            return (s, p + 1e-3), out[..., 0].sum()
        return jax.lax.scan(body, (states, base), jax.random.split(jax.random.PRNGKey(2), T))[1]

    first, best = timed(scan_only, states, base)
    print(f"{'scan only':18s} compile+first {first:6.1f} s   {1e3 * best / T:8.2f} ms/step   {B * T / best:10,.0f} env-steps/s")
    print(f"terrain / rough step time: {rows['quadruped_terrain'] / rows['quadruped_rough']:.2f}; "
          f"scan / rough: {best / rows['quadruped_rough']:.2f}")
    if CURRICULUM:
        batched_rows()


def batched_rows() -> None:
    from distill_jax.envs import VmapAutoReset, get_env
    from distill_jax.envs.quadruped.terrain_curriculum import TerrainCurriculumAutoReset

    env = get_env("quadruped_terrain", episode_length=1)
    times = {}
    for name, batched in (("VmapAutoReset", VmapAutoReset(env, B)),
                          ("TerrainCurriculumAutoReset", TerrainCurriculumAutoReset(env, B))):
        state = jax.jit(batched.reset)(jax.random.PRNGKey(0))

        @jax.jit
        def run(state, batched=batched):
            def body(s, _):
                return batched.step(s, jnp.zeros((B, 12))), None
            return jax.lax.scan(body, state, None, length=T)[0].reward

        first, best = timed(run, state)
        times[name] = best
        print(f"wrapped, 1-step episodes, {name:27s} compile+first {first:6.1f} s   {1e3 * best / T:8.2f} ms/step")
    print(f"curriculum / plain (every env relocated every step): "
          f"{times['TerrainCurriculumAutoReset'] / times['VmapAutoReset']:.2f}")


if __name__ == "__main__":
    main()

"""Raw step throughput of the bare rough-terrain quadruped (jit + vmap + scan).

Usage: python experiments/bench_quadruped.py [num_envs ...]   (default 64 256)

Times ``jax.jit(scan(vmap(step)))`` over ``--steps`` control steps with random
actions (compile excluded) and prints env-steps per second.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from distill_jax.envs.quadruped import RoughTerrainQuadruped


def bench(num_envs: int, steps: int) -> dict[str, float]:
    env = RoughTerrainQuadruped()
    reset = jax.jit(jax.vmap(env.reset))

    @jax.jit
    def run(state, key):
        def body(s, k):
            a = jax.random.uniform(k, (num_envs, env.action_size), minval=-1, maxval=1)
            return jax.vmap(env.step)(s, a), None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, steps))
        return state

    state = reset(jax.random.split(jax.random.PRNGKey(0), num_envs))
    t0 = time.perf_counter()
    jax.block_until_ready(run(state, jax.random.PRNGKey(1)))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(run(state, jax.random.PRNGKey(2)))
    run_s = time.perf_counter() - t0
    assert bool(jnp.all(jnp.isfinite(out.reward)))
    return {"num_envs": num_envs, "steps": steps, "compile_s": compile_s, "run_s": run_s,
            "env_steps_per_s": num_envs * steps / run_s,
            "physics_steps_per_s": num_envs * steps * env.n_substeps / run_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("num_envs", nargs="*", type=int, default=[64, 256])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    for n in args.num_envs:
        r = bench(n, args.steps)
        print(f"{r['num_envs']:5d} envs x {r['steps']} steps: compile {r['compile_s']:.1f} s, "
              f"run {r['run_s']:.2f} s -> {r['env_steps_per_s']:.0f} env-steps/s "
              f"({r['physics_steps_per_s']:.0f} physics steps/s)")


if __name__ == "__main__":
    main()

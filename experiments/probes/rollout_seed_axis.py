"""What a size-1 seed ``vmap`` does to a rollout: random actions, unbatched against seed-vmapped.

A 16-step rollout of uniform random actions on ``brax_inverted_pendulum`` (bench.py's task, no
randomisation) at B envs, jitted once as it is and once under a ``vmap`` over a seed axis of size
1 (how ``run_phase`` runs every phase): best of 3, in env-steps/s. With ``--profile``, a
``jax.profiler`` trace of each call summed per op (``trace_summary.py``): the ``ynn_fusion`` rows
that showed YNNPACK's fused reductions 3× slower under the seed axis.

The probe compiles with whatever ``XLA_FLAGS`` the process has: prefix
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` for the figures without YNNPACK fusions.

Usage: PYTHONPATH=experiments python experiments/probes/rollout_seed_axis.py [B] [--profile]   (default B 1024)
Cited by: experiments/results/bench_cpu.md
"""

import sys

import jax

import bench
import benchlib
from distill_jax.envs import VmapAutoReset
from trace_summary import print_summary, trace_ops

STEPS = 16


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1024
    env = bench.build_env("brax_inverted_pendulum", plain=True)
    batched = VmapAutoReset(env, batch)
    key = jax.random.PRNGKey(0)
    state = jax.jit(batched.reset)(key)

    def rollout(state, key):
        def body(carry, step_key):
            actions = jax.random.uniform(step_key, (batch, env.action_size), minval=-1, maxval=1)
            return batched.step(carry, actions), None

        return jax.lax.scan(body, state, jax.random.split(key, STEPS))[0]

    one_seed = jax.tree.map(lambda x: x[None], state)
    for name, fn, start in [("single", jax.jit(rollout), state),
                            ("seed-vmapped", jax.jit(jax.vmap(rollout, in_axes=(0, None))), one_seed)]:
        best = benchlib.best_seconds(fn, start, key, repeats=3)
        print(name, batch, f"{batch * STEPS / best:,.0f} env-steps/s", flush=True)
        if "--profile" in sys.argv:
            print_summary(name, *trace_ops(fn, start, key), top=20)


if __name__ == "__main__":
    main()

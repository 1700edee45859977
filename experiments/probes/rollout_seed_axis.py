"""Rollout of random actions at B envs (default 1024), unbatched and under a size-1 seed vmap: env-steps/s,
then a jax.profiler trace of each summed per op (``trace_summary.py``; the ynn_fusion rows in bench_cpu.md).

Usage: python experiments/probes/rollout_seed_axis.py [B] [--profile]
Prefix XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= for the figures without YNNPACK fusions.
"""
import sys
import jax
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench
import benchlib
from trace_summary import print_summary, trace_ops
from distill_jax.envs import VmapAutoReset
B = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1024
env = bench.build_env("brax_inverted_pendulum", plain=True)
batched = VmapAutoReset(env, B)
key = jax.random.PRNGKey(0)
s = jax.jit(batched.reset)(key)
def run(s, k):
    def body(c, k):
        a = jax.random.uniform(k, (B, env.action_size), minval=-1, maxval=1)
        return batched.step(c, a), None
    return jax.lax.scan(body, s, jax.random.split(k, 16))[0]
s1 = jax.tree.map(lambda x: x[None], s)
for name, f, arg in [("single", jax.jit(run), s), ("seed-vmapped", jax.jit(jax.vmap(run, in_axes=(0, None))), s1)]:
    best = benchlib.best_seconds(f, arg, key, repeats=3)
    print(name, B, f"{B * 16 / best:,.0f} env-steps/s", flush=True)
    if "--profile" in sys.argv:
        print_summary(name, *trace_ops(f, arg, key), top=20)

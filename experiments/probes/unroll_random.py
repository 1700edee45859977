"""Rollout-only env-steps/s at 1024 envs with random actions, reset chunk B/16 vs B; used for bench_cpu.md."""
import sys, time, jax, jax.numpy as jnp
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench
from distill_jax.envs import VmapAutoReset
from distill_jax.rollout import PolicyStep, unroll
env = bench.build_env("brax_inverted_pendulum", plain=True)
B, T = 1024, 16
for chunk in (None, B):
    batched = VmapAutoReset(env, B) if chunk is None else VmapAutoReset(env, B, reset_chunk=chunk)
    def policy(carry, obs, first, key):
        a = jax.random.uniform(key, (first.shape[0], batched.action_size), minval=-1, maxval=1)
        return carry, PolicyStep(a, a, jnp.zeros(first.shape), a, jnp.ones_like(a))
    f = jax.jit(lambda s, k: unroll(batched, s, policy, None, k, T)[0])
    s = jax.jit(batched.reset)(jax.random.PRNGKey(0))
    s = jax.block_until_ready(f(s, jax.random.PRNGKey(1)))
    best = 1e9
    for i in range(5):
        t0 = time.perf_counter(); s = jax.block_until_ready(f(s, jax.random.PRNGKey(i + 2))); best = min(best, time.perf_counter() - t0)
    print("reset_chunk", chunk or "B/16", "unroll random policy env-steps/s", round(B * T / best), flush=True)

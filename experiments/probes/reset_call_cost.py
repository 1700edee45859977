"""What one batched reset call costs against one batched step, on the CPU.

Times jitted ``vmap(reset)`` of ``brax_inverted_pendulum`` (the bare Brax
adapter and the registry stack) at 1, 4, 16, 64 and 256 envs, next to a
jitted ``vmap(step)`` of the adapter at the same size: best of 5 repeats of
200 calls each, dispatch included. Shows that a reset call's cost is mostly
fixed (many small ops, an ``mjx.forward``), which is why ``VmapAutoReset``'s
pooled restarts refill in batches every few steps.

Usage: python experiments/probes/reset_call_cost.py
Cited by: experiments/results/envs_cpu.md
"""

import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from distill_jax.envs import get_env  # noqa: E402


def best_call_us(fn, *args, calls: int = 200, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


full = get_env("brax_inverted_pendulum")
task = full.unwrapped
for batch in (1, 4, 16, 64, 256):
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    reset_task, reset_stack = jax.jit(jax.vmap(task.reset)), jax.jit(jax.vmap(full.reset))
    state = reset_task(keys)
    step = jax.jit(jax.vmap(task.step))
    actions = jnp.zeros((batch, task.action_size))
    print(f"B={batch:4d}  adapter reset {best_call_us(reset_task, keys):7.0f} us  "
          f"stack reset {best_call_us(reset_stack, keys):7.0f} us  "
          f"adapter step {best_call_us(step, state, actions):7.0f} us", flush=True)

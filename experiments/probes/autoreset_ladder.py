"""Where the inverted pendulum's wrapper overhead goes: auto-reset variants against raw physics.

Times 100-step scans of random actions for ``brax_inverted_pendulum`` at B envs,
each variant against raw ``mjx.step`` restarted every 6 steps (as
``bench_envs.py`` does), interleaved for ``ROUNDS`` rounds (env var, default
15). Prints the overhead from the best times, the median per-round ratio and
the median per-round CPU-time ratio. Variants: the bare Brax adapter with
fresh resets, the registry stack with fresh and with pooled restarts (the
default, B/16 fresh states every 4 steps; B/64 every step, one refill call
per step; never refilled, the floor of the pool), and Brax's own env with
stored-state restarts.

Usage: PYTHONPATH=experiments python experiments/probes/autoreset_ladder.py [B]   (default 256)
Cited by: experiments/results/envs_cpu.md
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench_envs import make_brax_cached, make_raw, make_wrapped_runner, time_interleaved  # noqa: E402
from distill_jax.envs import VmapAutoReset, get_env  # noqa: E402

B = int(sys.argv[1]) if len(sys.argv) > 1 else 256
STEPS = 100
full = get_env("brax_inverted_pendulum")
task = full.unwrapped
variants = {
    "adapter, fresh resets": VmapAutoReset(task, B),
    "stack, fresh resets": VmapAutoReset(full, B),
    "stack, pooled": VmapAutoReset(full, B, reset_pool=True),
    "stack, pooled, B/64 every step": VmapAutoReset(full, B, reset_pool=True, reset_chunk=max(1, B // 64),
                                                    refill_every=1),
    "stack, pooled, never refilled": VmapAutoReset(full, B, reset_pool=True, refill_every=10**9),
}
key = jax.random.PRNGKey(1)
runs = {}
for name, venv in variants.items():
    state = jax.jit(venv.reset)(jax.random.PRNGKey(0))
    runs[name] = (jax.jit(make_wrapped_runner(venv, STEPS)).lower(state, key).compile(), state)
for name, (init, run) in {"Brax env, stored-state restarts": make_brax_cached(task, B, STEPS),
                          "raw": make_raw(task, B, STEPS, restart_every=6)}.items():
    state = jax.jit(init)(jax.random.PRNGKey(0))
    runs[name] = (jax.jit(run).lower(state, key).compile(), state)

wall, cpu = time_interleaved(runs, int(os.environ.get("ROUNDS", 15)))
raw_w, raw_c = np.asarray(wall["raw"]), np.asarray(cpu["raw"])
for name in runs:
    w, c = np.asarray(wall[name]), np.asarray(cpu[name])
    print(f"{name:32s} {B * STEPS / w.min():9,.0f} env-steps/s  overhead: best {w.min() / raw_w.min() - 1:+.1%}, "
          f"median of rounds {np.median(w / raw_w) - 1:+.1%}, CPU time {np.median(c / raw_c) - 1:+.1%}", flush=True)

"""Forward + backward of a small SiLU MLP in float32 and in bfloat16, best of 20 (issue #48 item 1).

Whether the learner's matrix products gain from ``bf16`` on this machine: on a CPU without native
bfloat16 arithmetic (AVX2 only; no AVX-512-BF16 or AMX) XLA converts around every product, so it is
expected to lose. Sizes: the teacher's 16-128-128-64 torso on one 4096-sample minibatch.

Usage: python experiments/probes/bf16_mlp.py [samples]   (default 4096)
Cited by: experiments/results/bench_cpu.md.
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

SAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
SHAPES = [(16, 128), (128, 128), (128, 64)]


def loss(params, x):
    for w in params:
        x = jax.nn.silu(x @ w)
    return jnp.sum(jnp.square(x.astype(jnp.float32)))


def best_ms(f, *args, repeats: int = 20) -> float:
    jax.block_until_ready(f(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


rng = np.random.default_rng(0)
for dtype in (jnp.float32, jnp.bfloat16):
    params = [jnp.asarray(rng.normal(size=s) * 0.1, dtype) for s in SHAPES]
    x = jnp.asarray(rng.normal(size=(SAMPLES, SHAPES[0][0])), dtype)
    ms = best_ms(jax.jit(jax.grad(loss)), params, x)
    print(f"{jnp.dtype(dtype).name:9s} {ms:7.2f} ms per forward + backward, {SAMPLES} samples, "
          f"{'-'.join(str(s[0]) for s in SHAPES)}-{SHAPES[-1][1]} SiLU MLP", flush=True)

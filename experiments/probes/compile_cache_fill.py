"""What filling an empty persistent compilation cache costs: one small ``train_teacher`` call.

Prints the call's wall seconds; with ``--profile``, the cumulative seconds of XLA compilation
(``backend_compile_and_load``) and of the cache writes (``_cache_write``). Run each mode in a
fresh process, so nothing is cached in memory.

Usage: python experiments/probes/compile_cache_fill.py off|cold [--profile]
       (off: no persistent cache; cold: an empty cache directory)
Cited by: experiments/results/compile_cache_cpu.md
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time

import jax

from distill_jax.config import PPOConfig
from distill_jax.envs import get_env
from distill_jax.ppo.teacher import train_teacher

# The tests' tiny teacher config (tests/test_teacher.py): the cost is compilation, not training.
TINY = PPOConfig(num_envs=16, unroll_length=8, num_minibatches=2, num_epochs=2, total_env_steps=16 * 8 * 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("off", "cold"))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.mode == "cold":
        jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="xla_cache_"))
    env = get_env("cartpole")
    profiler = cProfile.Profile() if args.profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    train_teacher(env, TINY, seed=3)
    if profiler:
        profiler.disable()
    print(f"{args.mode}: train_teacher {time.perf_counter() - start:.1f} s")
    if profiler:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
        stats.print_stats(r"backend_compile_and_load|\(_cache_write\)")
        for line in text.getvalue().splitlines():
            if "compiler.py" in line:
                print(line.strip())


if __name__ == "__main__":
    main()

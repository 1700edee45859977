"""Our PPO teacher vs Brax PPO on ``inverted_pendulum`` (MJX), same machine, same run.

Both trainers get the same task (Brax's ``inverted_pendulum``, MJX backend,
episode length 1000, no randomisation or noise), the same number of envs,
unroll length, minibatches, epochs, learning rate, network sizes and env-step
budget. Reported per trainer:

* training env-steps/s after compilation (ours: timed compiled calls after the
  first; Brax: its own ``training/sps``),
* env steps at which the deterministic evaluation return first reaches 950
  (both evaluated on fresh episodes at the same env-step marks),
* final evaluation return,
* our training SPS as a fraction of raw env-step SPS of the same batched env.

Brax's trainer calls ``jax.device_put_replicated``, which jax >= 0.10 removed;
the compatibility shim for it lives in this script only.

Usage::

    python experiments/bench_teacher.py --num-envs 256 --steps 1000000 --out experiments/results/teacher_vs_brax_cpu
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchlib import add_argument_xla_default, commit, hardware, set_process_xla_options, versions


def install_brax_shim() -> None:
    """``jax.device_put_replicated`` for Brax's pmap-based trainer on jax >= 0.10."""
    if hasattr(jax, "device_put_replicated"):
        return
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    def device_put_replicated(x, devices):
        sharding = NamedSharding(Mesh(np.asarray(devices), ("d",)), PartitionSpec("d"))
        return jax.tree.map(lambda a: jax.device_put(jnp.stack([jnp.asarray(a)] * len(devices)), sharding), x)

    jax.device_put_replicated = device_put_replicated


def first_reaching(points: list[tuple[int, float]], threshold: float) -> int | None:
    return next((steps for steps, ret in points if ret >= threshold), None)


def run_ours(args) -> dict:
    from distill_jax.config import NetworkConfig, PPOConfig
    from distill_jax.distill.update import FrozenTeacher
    from distill_jax.envs import VmapAutoReset, get_env
    from distill_jax.evaluate import Panel, make_teacher_evaluator
    from distill_jax.ppo.teacher import train_teacher
    from distill_jax.treeops import first_seed

    env = get_env("brax_inverted_pendulum", randomize=False, history_length=0, noise_std=0.0)
    config = PPOConfig(
        num_envs=args.num_envs, unroll_length=args.unroll_length, num_minibatches=args.num_minibatches,
        num_epochs=args.num_epochs, learning_rate=args.learning_rate, total_env_steps=args.steps,
        ent_coef=args.ent_coef, reward_scale=args.reward_scale, gamma=args.gamma,
        network=NetworkConfig(actor_hidden=args.policy_hidden, critic_hidden=args.value_hidden, activation="swish"),
    )
    evaluator = None
    curve: list[tuple[int, float]] = []
    rates: list[float] = []
    chunk_env_steps = config.num_updates // args.num_evals * config.batch_size
    train_clock = {"start": time.perf_counter(), "eval_seconds": 0.0}

    def on_chunk(state, updates):
        nonlocal evaluator
        t0 = time.perf_counter()
        if evaluator is None:
            evaluator = make_teacher_evaluator(env, result_nets["actor"], Panel(tuple(range(10**6, 10**6 + args.eval_episodes))))
        teacher = FrozenTeacher(first_seed(state.params["actor"]), first_seed(state.obs_stats))
        curve.append((updates * config.batch_size, evaluator(teacher)["return_mean"]))
        train_clock["eval_seconds"] += time.perf_counter() - t0

    def log(row):
        if "seconds" in row and row["update"] > chunk_env_steps // config.batch_size:  # skip the compiling call
            rates.append(row["env_steps_per_second"])

    from distill_jax.networks import make_teacher_networks

    result_nets = {"actor": make_teacher_networks(env.schema, env.action_size, config.network).actor}
    start = time.perf_counter()
    train_teacher(env, config, seed=args.seed, updates_per_call=config.num_updates // args.num_evals,
                  log_fn=log, on_chunk=on_chunk)
    wall = time.perf_counter() - start

    # Raw env-step throughput of the same batched env (zero actions, same scan structure).
    batched = VmapAutoReset(env, config.num_envs)

    @jax.jit
    def raw(state):
        def body(s, _):
            return batched.step(s, jnp.zeros((config.num_envs, env.action_size))), None

        return jax.lax.scan(body, state, None, length=config.unroll_length * 16)[0]

    state = batched.reset(jax.random.PRNGKey(0))
    for _ in range(2):  # compile (twice: the stepped state's pytree may differ in weak types from reset's)
        state = jax.block_until_ready(raw(state))
    t0 = time.perf_counter()
    jax.block_until_ready(raw(state))
    raw_sps = config.num_envs * config.unroll_length * 16 / (time.perf_counter() - t0)
    return {
        "train_sps": float(np.median(rates)) if rates else float("nan"),
        "raw_env_sps": raw_sps,
        "steps_to_950": first_reaching(curve, 950.0),
        "final_return": curve[-1][1] if curve else float("nan"),
        "curve": curve,
        "wall_seconds": wall,
    }


def run_brax(args) -> dict:
    install_brax_shim()
    from brax import envs
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    env = envs.get_environment("inverted_pendulum", backend="mjx")
    curve: list[tuple[int, float]] = []
    sps: list[float] = []

    def progress(steps, metrics):
        if "eval/episode_reward" in metrics:
            curve.append((int(steps), float(metrics["eval/episode_reward"])))
        if "training/sps" in metrics:
            sps.append(float(metrics["training/sps"]))

    start = time.perf_counter()
    ppo.train(
        environment=env,
        num_timesteps=args.steps,
        episode_length=1000,
        num_envs=args.num_envs,
        batch_size=args.num_envs // args.num_minibatches,
        num_minibatches=args.num_minibatches,
        unroll_length=args.unroll_length,
        num_updates_per_batch=args.num_epochs,
        learning_rate=args.learning_rate,
        entropy_cost=args.ent_coef,
        discounting=args.gamma,
        reward_scaling=args.reward_scale,
        normalize_observations=True,
        num_evals=args.num_evals + 1,
        num_eval_envs=args.eval_episodes,
        seed=args.seed,
        progress_fn=progress,
        network_factory=functools.partial(
            ppo_networks.make_ppo_networks,
            policy_hidden_layer_sizes=args.policy_hidden,
            value_hidden_layer_sizes=args.value_hidden,
        ),
    )
    wall = time.perf_counter() - start
    return {
        "train_sps": float(np.median(sps[1:] if len(sps) > 1 else sps)) if sps else float("nan"),
        "steps_to_950": first_reaching(curve[1:], 950.0),
        "final_return": curve[-1][1] if curve else float("nan"),
        "curve": curve,
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--unroll-length", type=int, default=32)
    parser.add_argument("--num-minibatches", type=int, default=4)
    parser.add_argument("--num-epochs", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--ent-coef", type=float, default=1e-2)
    parser.add_argument("--gamma", type=float, default=0.97)
    parser.add_argument("--reward-scale", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--num-evals", type=int, default=10)
    parser.add_argument("--eval-episodes", type=int, default=16)
    parser.add_argument("--policy-hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--value-hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["ours", "brax"], default=None)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write OUT.md and OUT.json")
    add_argument_xla_default(parser)
    args = parser.parse_args()
    xla_flags = set_process_xla_options(args.xla_default)
    args.policy_hidden, args.value_hidden = tuple(args.policy_hidden), tuple(args.value_hidden)

    results = {}
    if args.only in (None, "ours"):
        results["ours"] = run_ours(args)
        print("ours", json.dumps({k: v for k, v in results["ours"].items() if k != "curve"}), flush=True)
    if args.only in (None, "brax"):
        results["brax"] = run_brax(args)
        print("brax", json.dumps({k: v for k, v in results["brax"].items() if k != "curve"}), flush=True)

    meta = {"hardware": hardware(), "versions": versions(), "commit": commit(), "platform": platform.platform(),
            "xla_flags": xla_flags,
            "command": "python experiments/bench_teacher.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, tuple) else v}"
                for k, v in vars(args).items() if v is not None and k not in ("out", "only", "xla_default")),
            "args": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, pathlib.Path) else v)
                     for k, v in vars(args).items()}}
    lines = [
        "# Teacher PPO vs Brax PPO — inverted_pendulum (MJX)\n",
        f"Hardware: {meta['hardware']}  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}  ",
        f"Commit: {meta['commit']}  ",
        f"XLA_FLAGS: `{meta['xla_flags'] or '(none)'}`  ",
        f"Command: `{meta['command']}`\n",
        "| trainer | training env-steps/s | env steps to return 950 | final eval return | wall (s, incl. compile) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['train_sps']:,.0f} | {r['steps_to_950'] if r['steps_to_950'] is not None else 'not reached'} "
                     f"| {r['final_return']:.1f} | {r['wall_seconds']:.0f} |")
    if "ours" in results and "brax" in results:
        ratio = results["ours"]["train_sps"] / results["brax"]["train_sps"]
        lines.append(f"\nThroughput ratio ours / Brax: **{ratio:.2f}** (target ≥ 1.2).")
    if "ours" in results:
        r = results["ours"]
        lines.append(f"Our training SPS / raw env-step SPS of the same batched env: "
                     f"{r['train_sps']:,.0f} / {r['raw_env_sps']:,.0f} = **{r['train_sps'] / r['raw_env_sps']:.2f}**.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({**meta, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()

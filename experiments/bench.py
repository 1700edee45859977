"""The pipeline's throughput against its physics limit and against Brax PPO, in one process and one run.

For one task and several batch sizes B (environments per seed) this measures

* ``raw``: B environments stepping raw ``mjx.step`` on the task's nominal model
  with random actions, restarting every R steps (R = the wrapped env's mean
  episode length under random actions): the physics limit (``bench_envs.make_raw``);
* ``teacher``: our PPO teacher's training env-steps/s;
* ``brax``: ``brax.training.agents.ppo.train`` with the same number of envs,
  unroll length, minibatches, epochs, learning rate and network sizes (Brax tasks only);
* ``distill``: distillation env-steps/s with the same sizes (DAgger collection,
  MLP student, the teacher just trained frozen);

and, at one batch size, the teacher with K = 1, 4, 16 seeds in one program
(``vmap``), as total env-steps/s over all seeds. A Brax task runs without
randomisation, noise or history (the task Brax's trainer sees); any other task
runs with the registry's default stack. Training rates are the median
over compiled calls after the first (which compiles); Brax's are its own
``training/sps`` after its first epoch. Memory is the device's peak allocation
on GPU and the process's peak RSS on CPU, read after each row (so it only grows).

Writes ``OUT.md``, ``OUT.json`` and ``OUT_scaling.png`` (env-steps/s against B), rewritten
after every measurement, so a run stopped by a lent machine's time limit keeps what it finished;
``--time-budget S`` starts no row after S seconds and names the rows it left out.

Usage::

    python experiments/bench.py --task brax_inverted_pendulum --num-envs 64,128,256,512,1024,2048 \\
        --out experiments/results/bench_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any

import jax
import numpy as np

import benchlib
from bench_envs import make_raw, make_wrapped_runner, mean_episode_length


def build_env(task: str, plain: bool):
    """``plain``: no randomisation, noise or history, i.e. the task Brax's trainer sees."""
    from distill_jax.envs import get_env

    return get_env(task, randomize=False, history_length=0, noise_std=0.0) if plain else get_env(task)


def raw_sps(env, num_envs: int, steps: int = 100, repeats: int = 3) -> float:
    """Env-steps/s of raw ``mjx.step`` physics (best of ``repeats`` compiled scans)."""
    from distill_jax.envs import VmapAutoReset

    key = jax.random.PRNGKey(0)
    batched = VmapAutoReset(env, num_envs)
    restart = mean_episode_length(jax.jit(make_wrapped_runner(batched, steps)), jax.jit(batched.reset)(key), key)
    init, run = make_raw(env.unwrapped, num_envs, steps, None, restart)
    run = jax.jit(run)
    state = jax.block_until_ready(jax.jit(init)(key))
    return num_envs * steps / benchlib.best_seconds(run, state, key, repeats=repeats)


def _timed_rate(rows: list[dict[str, Any]]) -> float:
    rates = [row["env_steps_per_second"] for row in rows if "seconds" in row][1:]
    return float(np.median(rates)) if rates else float("nan")


def ppo_config(args, num_envs: int):
    from distill_jax.config import NetworkConfig, PPOConfig

    return PPOConfig(
        num_envs=num_envs, unroll_length=args.unroll_length, num_minibatches=args.num_minibatches,
        num_epochs=args.num_epochs, learning_rate=args.learning_rate, ent_coef=args.ent_coef,
        total_env_steps=args.calls * args.updates_per_call * num_envs * args.unroll_length,
        network=NetworkConfig(actor_hidden=args.policy_hidden, critic_hidden=args.value_hidden, activation="swish"),
    )


def teacher_sps(env, config, args, num_seeds: int = 1):
    """``(total env-steps/s over all seeds, TeacherResult)``."""
    from distill_jax.ppo.teacher import train_teacher

    rows: list[dict[str, Any]] = []
    result = train_teacher(env, config, seed=args.seed, num_seeds=num_seeds,
                           updates_per_call=args.updates_per_call, log_fn=rows.append)
    return _timed_rate(rows), result


def distill_config(config):
    """The distillation settings bench.py measures beside PPO ``config``: the same sizes, an MLP student."""
    from distill_jax.config import DistillConfig

    return DistillConfig(num_envs=config.num_envs, unroll_length=config.unroll_length,
                         num_minibatches=config.num_minibatches, num_epochs=config.num_epochs,
                         learning_rate=config.learning_rate, total_env_steps=config.total_env_steps)


def distill_sps(env, teacher_result, config, args) -> float:
    from distill_jax.distill.phase import distill_student
    from distill_jax.distill.update import FrozenTeacher

    distill = distill_config(config)
    frozen = FrozenTeacher(teacher_result.state.params["actor"], teacher_result.state.obs_stats)
    rows: list[dict[str, Any]] = []
    distill_student(env, teacher_result.nets.actor, frozen, distill, seed=args.seed + 100,
                    updates_per_call=args.updates_per_call, log_fn=rows.append)
    return _timed_rate(rows)


def brax_sps(task: str, config, args) -> float:
    """Brax PPO's ``training/sps`` after its first (compiling) epoch, same sizes as ``config``."""
    import functools

    from bench_teacher import install_brax_shim

    install_brax_shim()
    from brax import envs
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    rates: list[float] = []
    ppo.train(
        environment=envs.get_environment(task.removeprefix("brax_"), backend="mjx"),
        num_timesteps=config.total_env_steps, episode_length=1000, num_envs=config.num_envs,
        batch_size=config.num_envs // config.num_minibatches, num_minibatches=config.num_minibatches,
        unroll_length=config.unroll_length, num_updates_per_batch=config.num_epochs,
        learning_rate=config.learning_rate, entropy_cost=config.ent_coef, discounting=config.gamma,
        normalize_observations=True, num_evals=args.calls + 1, num_eval_envs=16, seed=args.seed,
        progress_fn=lambda _, metrics: rates.append(float(metrics["training/sps"])) if "training/sps" in metrics else None,
        network_factory=functools.partial(ppo_networks.make_ppo_networks,
                                          policy_hidden_layer_sizes=config.network.actor_hidden,
                                          value_hidden_layer_sizes=config.network.critic_hidden),
    )
    return float(np.median(rates[1:])) if len(rates) > 1 else float("nan")


def within_budget(items, deadline: float | None, skipped: list, clock=time.perf_counter):
    """Yield ``items`` while ``clock() < deadline``; the rest go to ``skipped``, in order.

    A lent GPU machine's time is capped per call: a row that would start after the deadline is
    left out (and the table says so) rather than cut off half-measured by the caller's ``timeout``.
    """
    for item in items:
        if deadline is not None and clock() >= deadline:
            skipped.append(item)
        else:
            yield item


def measure(args, save=lambda results: None) -> dict[str, Any]:
    """Measure every row; ``save(results)`` after each measurement, so a run stopped early keeps them."""
    deadline = None if args.time_budget is None else time.perf_counter() + args.time_budget
    results: dict[str, Any] = {"rows": [], "multiseed": [], "skipped": {"num_envs": [], "num_seeds": []},
                               "memory_kind": benchlib.peak_memory_bytes()[1]}
    env = build_env(args.task, plain=args.task.startswith("brax_"))
    for num_envs in within_budget(args.num_envs, deadline, results["skipped"]["num_envs"]):
        config = ppo_config(args, num_envs)
        # The row is filled in column by column and saved after each one ("n/a" until measured).
        row: dict[str, Any] = {"num_envs": num_envs,
                               **dict.fromkeys(("raw", "teacher", "brax", "distill", "memory_bytes"))}
        results["rows"].append(row)
        row["raw"] = raw_sps(env, num_envs)
        save(results)
        row["teacher"], result = teacher_sps(env, config, args)
        save(results)
        if args.task.startswith("brax_") and not args.no_brax:
            row["brax"] = brax_sps(args.task, config, args)
            save(results)
        row["distill"] = distill_sps(env, result, config, args)
        row["memory_bytes"] = benchlib.peak_memory_bytes()[0]
        print(json.dumps(row), flush=True)
        save(results)

    multiseed_env = build_env(args.multiseed_task, plain=False) if args.seeds else None
    for k in within_budget(args.seeds, deadline, results["skipped"]["num_seeds"]):
        rate, _ = teacher_sps(multiseed_env, ppo_config(args, args.multiseed_envs), args, num_seeds=k)
        results["multiseed"].append({"num_seeds": k, "teacher": rate, "memory_bytes": benchlib.peak_memory_bytes()[0]})
        print(json.dumps(results["multiseed"][-1]), flush=True)
        save(results)
    return results


def _ratio(a, b) -> str:
    return "n/a" if a is None or b is None or not b else f"{a / b:.2f}"


def _rate(x) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _mib(x) -> str:
    return "n/a" if x is None else f"{x / 2**20:,.0f} MiB"


def markdown(results: dict[str, Any], meta: dict[str, Any], args) -> str:
    rows, multiseed = results["rows"], results["multiseed"]
    on_gpu = jax.default_backend() != "cpu"
    lines = [
        f"# Pipeline throughput on {meta['hardware']}: `{args.task}`",
        "",
        f"- command: `{meta['command']}`",
        f"- versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}; commit {meta['commit']}",
        f"- XLA_FLAGS (every program of the run, Brax's and raw physics' included): `{meta['xla_flags'] or '(none)'}`",
        f"- PPO sizes (ours and Brax): unroll {args.unroll_length}, {args.num_minibatches} minibatches, "
        f"{args.num_epochs} epochs, lr {args.learning_rate}, policy {args.policy_hidden}, value {args.value_hidden}; "
        f"{args.updates_per_call} updates per compiled call, median of calls 2-{args.calls}",
        f"- memory: {results['memory_kind']}, read after each row",
        "",
        "| envs | raw physics | teacher | teacher / raw | Brax PPO | teacher / Brax | distill | distill / teacher "
        "| memory |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_envs']} | {_rate(r['raw'])} | {_rate(r['teacher'])} | {_ratio(r['teacher'], r['raw'])} "
            f"| {_rate(r['brax'])} | {_ratio(r['teacher'], r['brax'])} | {_rate(r['distill'])} "
            f"| {_ratio(r['distill'], r['teacher'])} | {_mib(r['memory_bytes'])} |"
        )
    one = multiseed[0]["teacher"] if multiseed and multiseed[0]["num_seeds"] == 1 else None
    if args.seeds:
        lines += [
            "",
            f"Multi-seed teacher (`{args.multiseed_task}`, {args.multiseed_envs} envs per seed, one program):",
            "",
            "| seeds K | total env-steps/s | × one seed | memory |",
            "| ---: | ---: | ---: | ---: |",
        ]
    for m in multiseed:
        lines.append(f"| {m['num_seeds']} | {_rate(m['teacher'])} | {_ratio(m['teacher'], one)} "
                     f"| {_mib(m['memory_bytes'])} |")
    raw_target = 0.8 if on_gpu else 0.6
    k16 = next((m["teacher"] for m in multiseed if m["num_seeds"] == 16), None)
    largest = (f"({rows[-1]['num_envs']}): {_ratio(rows[-1]['teacher'], rows[-1]['raw'])}" if rows
               else "(no row measured): n/a")
    lines += [
        "",
        "Targets (issue 8), measured ratio:",
        "",
        "- teacher / Brax ≥ 1.2: " + ", ".join(f"{_ratio(r['teacher'], r['brax'])} at {r['num_envs']}" for r in rows),
        f"- teacher / raw ≥ {raw_target} at the largest batch {largest}",
        "- distill / teacher ≥ 0.9: " + ", ".join(f"{_ratio(r['distill'], r['teacher'])} at {r['num_envs']}"
                                                 for r in rows),
        f"- K = 16 ≥ 8 × one seed{'' if on_gpu else ' (a GPU target)'}: {_ratio(k16, one)}",
        "",
    ]
    skipped = results["skipped"]
    if skipped["num_envs"] or skipped["num_seeds"]:
        lines += [f"Not measured: the time budget (`--time-budget {args.time_budget:g}` s) was spent before "
                  f"envs {skipped['num_envs'] or 'none'} and seeds K {skipped['num_seeds'] or 'none'} could start.", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label in (("raw", "raw mjx.step (physics limit)"), ("teacher", "our PPO teacher"),
                       ("brax", "Brax PPO"), ("distill", "our distillation")):
        points = [(r["num_envs"], r[key]) for r in rows if r[key] is not None]
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("environments")
    ax.set_ylabel("env-steps / s")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="brax_inverted_pendulum", help="registry name (default: %(default)s)")
    p.add_argument("--num-envs", type=ints, default=[64, 256, 1024], help="comma-separated (default: 64,256,1024)")
    p.add_argument("--unroll-length", type=int, default=16)
    p.add_argument("--num-minibatches", type=int, default=8)
    p.add_argument("--num-epochs", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--ent-coef", type=float, default=1e-2)
    p.add_argument("--policy-hidden", type=ints, default=(64, 64))
    p.add_argument("--value-hidden", type=ints, default=(128, 128))
    p.add_argument("--updates-per-call", type=int, default=4)
    p.add_argument("--calls", type=int, default=3,
                   help="compiled calls per training row: the first compiles, the median of the rest is reported "
                        "(default: %(default)s)")
    p.add_argument("--seeds", type=ints, default=[1, 4, 16],
                   help="K for the multi-seed rows; '' for none (default: 1,4,16)")
    p.add_argument("--multiseed-task", default="cartpole")
    p.add_argument("--multiseed-envs", type=int, default=256)
    p.add_argument("--no-brax", action="store_true", help="skip the Brax PPO column")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=None, help="path prefix: OUT.md, OUT.json, OUT_scaling.png")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds after which no new row starts; the files are rewritten after every "
                        "measurement, so a run cut short keeps what it measured (default: no budget)")
    benchlib.add_argument_xla_default(p)
    args = p.parse_args(argv)
    if args.time_budget is not None and args.time_budget < 0:
        p.error(f"--time-budget must be >= 0 seconds, got {args.time_budget}")
    if args.calls < 2:
        p.error(f"--calls must be at least 2 (the first call compiles and is not timed), got {args.calls}")
    args.policy_hidden, args.value_hidden = tuple(args.policy_hidden), tuple(args.value_hidden)
    return args


def write(results: dict[str, Any], meta: dict[str, Any], args) -> str:
    """Render the table; with ``--out``, (re)write ``OUT.md``, ``OUT.json`` and ``OUT_scaling.png``."""
    text = markdown(results, meta, args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({**meta, **results, "args": {
            k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, pathlib.Path) else v)
            for k, v in vars(args).items()}}, indent=2))
        plot(results, args.out.parent / f"{args.out.name}_scaling.png", f"{args.task} on {meta['hardware']}")
    return text


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    xla_flags = benchlib.set_process_xla_options(args.xla_default)
    start = time.perf_counter()
    meta = {"hardware": benchlib.hardware(), "versions": benchlib.versions(), "commit": benchlib.commit(),
            "xla_flags": xla_flags,
            "command": "python " + " ".join([os.path.relpath(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])])}

    def save(results: dict[str, Any]) -> str:
        return write(results, {**meta, "wall_seconds": time.perf_counter() - start}, args)

    print(save(measure(args, save)))
    if args.out:
        print(f"wrote {args.out}.md, .json and _scaling.png")


if __name__ == "__main__":
    main()

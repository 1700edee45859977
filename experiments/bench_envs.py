"""Throughput of the fully wrapped batched envs against raw ``mjx.step`` on the same model.

For each task and batch size B this times a jitted ``lax.scan`` of ``--steps``
control steps with uniform random actions of

* ``wrapped``: ``VmapAutoReset(get_env(task), B)`` (task + domain randomisation
  + sensor noise + history + TimeLimit + auto-reset with episode bookkeeping);
* ``wrapped, pooled restarts``: the same with ``reset_pool=True`` (finished envs
  restart from stored initial states, ``B // 64`` fresh resets per step on average);
* ``raw``: ``vmap`` over B copies of ``n_substeps`` ``mjx.step`` calls of the
  task's nominal model, i.e. the same number of physics steps per control step,
  with the same random-action generation and nothing else (but the task's
  ``before_physics_step`` hook, which is part of its physics: the quadruped
  places its feet's planes there).

Timings are the minimum over ``--rounds`` interleaved repetitions (raw and
wrapped alternate, so background load hits both alike), of wall-clock time and
separately of process CPU time; compile time is excluded. ``overhead = t_wrapped / t_raw - 1``,
also reported as the median over rounds of the per-round ratio (robust to load
that drifts during a run). Memory is XLA's own estimate
for the compiled scan (arguments + outputs + temporaries; CPU has no device
memory counters) and the process's peak RSS at the end.

Usage::

    python experiments/bench_envs.py --tasks cartpole,brax_inverted_pendulum \\
        --batch-sizes 256,1024,4096 --out experiments/results/envs_cpu

``--ablation 1024`` adds, at that batch size, variants that locate the
overhead: the bare task with TimeLimit and auto-reset only, and auto-reset
with a single reset chunk of B envs, and for Brax tasks Brax's own env stepped
alone with Brax-style stored-state restarts. ``raw, per-env randomised models``
steps raw MJX with each env's own domain-randomised model: the share of the
overhead that is the cost of randomised physics rather than of the wrappers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from mujoco import mjx

from benchlib import add_argument_xla_default, cpu_model, set_process_xla_options, versions
from distill_jax.envs import DomainRandomization, TimeLimit, VmapAutoReset, get_env
from distill_jax.treeops import select_rows


def _memory_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def make_wrapped_runner(venv, steps: int) -> Callable:
    """``(state, key) -> (state, episodes completed, their summed length)`` over
    ``steps`` wrapped steps with random actions."""
    b, a = venv.num_envs, venv.action_size

    def run(state, key):
        def body(c, k):
            s, n, total = c
            act = jax.random.uniform(k, (b, a), minval=-1.0, maxval=1.0)
            s = venv.step(s, act)
            n = n + jnp.sum(s.info["episode_completed"])
            total = total + jnp.sum(s.info["episode_length_completed"])
            return (s, n, total), None

        zero = jnp.zeros((), jnp.float32)
        (state, n, total), _ = jax.lax.scan(body, (state, zero, zero), jax.random.split(key, steps))
        return state, n, total

    return run


def _find_dr(env):
    while env is not None and not isinstance(env, DomainRandomization):
        env = getattr(env, "env", None)
    return env


def mean_episode_length(compiled_runner, state, key) -> int | None:
    """Mean episode length (control steps) in one run of a wrapped runner; the raw restart period."""
    _, n_done, total = jax.device_get(compiled_runner(state, key))
    return max(1, int(round(total / n_done))) if n_done > 0 else None


def make_raw(task, batch: int, steps: int, randomizer=None, restart_every: int | None = None):
    """Initial batched ``mjx.Data`` and a runner stepping it like the task does.

    With ``randomizer`` (a ``ModelRandomizer``) every env simulates its own
    randomised model, its parameter values carried in the scan like the
    wrapped env carries ``state.params``. With ``restart_every = R`` all envs
    go back to their initial state every R control steps (one ``lax.cond``, no
    per-step select), so that raw physics visits states like the wrapped env,
    whose episodes end and restart: with joint limits or contacts MJX's solver
    iterates until converged, so a pendulum lying on its joint limit costs more
    than one near its start.
    """
    model = task.mjx_model
    n_sub = int(task.n_substeps)
    nu = int(task.mj_model.nu)
    lo = jnp.asarray(task.mj_model.actuator_ctrlrange[:, 0])
    hi = jnp.asarray(task.mj_model.actuator_ctrlrange[:, 1])
    d0 = mjx.make_data(model)
    # Part of the physics for some tasks (the quadruped's per-foot planes are placed before every step).
    before_step = getattr(task, "before_physics_step", lambda m, d: d)

    def init(key):
        def one(k):
            return mjx.forward(model, d0.replace(qpos=d0.qpos + 0.01 * jax.random.normal(k, d0.qpos.shape)))

        values = None
        if randomizer is not None:
            values = jax.vmap(randomizer.sample)(jax.random.split(jax.random.fold_in(key, 1), batch))
        data = jax.vmap(one)(jax.random.split(key, batch))
        return data, values, data

    def run(carry, key):
        def physics(d, u, v):
            m = model if v is None else randomizer.apply(model, v)
            d = d.replace(ctrl=lo + (u + 1.0) * 0.5 * (hi - lo))
            return jax.lax.scan(lambda x, _: (mjx.step(m, before_step(m, x)), None), d, None, length=n_sub)[0]

        def body(c, xs):
            ds, values, start = c
            k, t = xs
            u = jax.random.uniform(k, (batch, nu), minval=-1.0, maxval=1.0)
            ds = jax.vmap(physics)(ds, u, values)
            if values is not None:
                # Keep the values loop-variant, as the wrapped env's params are (they
                # change at resets); otherwise XLA hoists the model out of the loop.
                values = values + 0.0 * ds.qpos[:, :1]
            if restart_every:
                ds = jax.lax.cond((t + 1) % restart_every == 0, lambda: start, lambda: ds)
            return (ds, values, start), None

        carry, _ = jax.lax.scan(body, carry, (jax.random.split(key, steps), jnp.arange(steps)))
        return carry

    return init, run


def make_brax_cached(task, batch: int, steps: int):
    """Brax's own env on the nominal model, restarted as Brax's auto-reset does.

    ``vmap(brax_env.step)`` with random actions; a finished env goes back to
    its first state (``jnp.where``, no reset computed), as in Brax's
    ``AutoResetWrapper``. The reference for a Brax task's own step code (its
    pipeline state, observation and reward) with free restarts: the gap
    between this row and ``raw`` is Brax's, the gap to ``wrapped`` is ours.
    """
    brax_env, action_size = task.brax_env, task.action_size

    def init(key):
        first = jax.vmap(brax_env.reset)(jax.random.split(key, batch))
        return first, first

    def run(carry, key):
        def body(c, k):
            state, first = c
            act = jax.random.uniform(k, (batch, action_size), minval=-1.0, maxval=1.0)
            state = jax.vmap(brax_env.step)(state, act)
            done = state.done > 0
            state = select_rows(done, first, state)
            return (state, first), None

        return jax.lax.scan(body, carry, jax.random.split(key, steps))[0]

    return init, run


def _compile(fn, *args):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_interleaved(runners: dict[str, tuple[Callable, Any]], rounds: int
                     ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of each compiled ``fn(state, key)`` in ``runners``, per round.

    Every round calls each runner once, back to back (round 0 warms up and is not kept), so
    per-round ratios between runners cancel slow drifts in machine load.
    """
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds + 1):
        for name, (fn, state) in runners.items():
            k = jax.random.PRNGKey(r + 1)
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(state, k))
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if r > 0:
                wall[name].append(dt)
                cpu[name].append(dc)
    return wall, cpu


def bench_case(task_name: str, batch: int, steps: int, rounds: int, ablation: bool) -> list[dict[str, Any]]:
    env = get_env(task_name)
    task = env.unwrapped
    dr = _find_dr(env)
    variants: dict[str, Any] = {
        "wrapped": VmapAutoReset(env, batch),
        "wrapped, pooled restarts": VmapAutoReset(env, batch, reset_pool=True),
    }
    if ablation:
        variants["wrapped, reset_chunk=B"] = VmapAutoReset(env, batch, reset_chunk=batch)
        variants["task + TimeLimit + auto-reset"] = VmapAutoReset(TimeLimit(task, env.episode_length), batch)

    key = jax.random.PRNGKey(0)
    runners: dict[str, tuple[Callable, Any]] = {}
    compile_s: dict[str, float] = {}
    memory: dict[str, int | None] = {}

    for name, venv in variants.items():
        state = jax.block_until_ready(jax.jit(venv.reset)(key))
        compiled, compile_s[name] = _compile(make_wrapped_runner(venv, steps), state, key)
        runners[name] = (compiled, state)
        memory[name] = _memory_bytes(compiled)
    # Pilot run of the wrapped env: its mean episode length sets the raw restart period.
    restart = mean_episode_length(*runners["wrapped"], key)

    raws = {"raw": None}
    if dr is not None:
        raws["raw, per-env randomised models"] = dr.randomizer
    references = {name: make_raw(task, batch, steps, randomizer, restart) for name, randomizer in raws.items()}
    if ablation and hasattr(task, "brax_env"):
        references["Brax env alone, stored-state restarts"] = make_brax_cached(task, batch, steps)
    for name, (init, raw_run) in references.items():
        raw_state = jax.block_until_ready(jax.jit(init)(key))
        compiled, compile_s[name] = _compile(raw_run, raw_state, key)
        runners[name] = (compiled, raw_state)
        memory[name] = _memory_bytes(compiled)
    runners = {n: runners[n] for n in [*references, *variants]}

    wall, cpu = time_interleaved(runners, rounds)
    best = {name: min(ts) for name, ts in wall.items()}
    best_cpu = {name: min(ts) for name, ts in cpu.items()}
    # Each round times raw and every variant back to back, so the per-round
    # ratio cancels slow changes in machine load that best-of-N does not.
    median_ratio = {name: float(np.median(np.asarray(wall[name]) / np.asarray(wall["raw"]))) for name in runners}

    rows = []
    for name in runners:
        sps = batch * steps / best[name]
        rows.append(
            {
                "task": task_name,
                "batch": batch,
                "variant": name,
                "env_steps_per_s": sps,
                "physics_steps_per_s": sps * task.n_substeps,
                "seconds": best[name],
                "cpu_seconds": best_cpu[name],
                "overhead_pct": 100.0 * (best[name] / best["raw"] - 1.0),
                "cpu_overhead_pct": 100.0 * (best_cpu[name] / best_cpu["raw"] - 1.0),
                "median_round_overhead_pct": 100.0 * (median_ratio[name] - 1.0),
                "xla_memory_bytes": memory[name],
                "compile_s": compile_s[name],
                "raw_restart_every": restart,
            }
        )
        print(
            f"{task_name:24s} B={batch:5d} {name:32s} {sps:11.0f} env-steps/s "
            f"overhead {rows[-1]['overhead_pct']:6.1f}% (cpu-time {rows[-1]['cpu_overhead_pct']:6.1f}%, "
            f"median of rounds {rows[-1]['median_round_overhead_pct']:6.1f}%)  mem {_fmt_mb(memory[name])}  compile {compile_s[name]:.1f}s"
            f"  (raw restarts every {restart} steps)",
            flush=True,
        )
    return rows


def _fmt_mb(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f} MiB"


def write_markdown(path: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    lines = [
        f"# Environment throughput on {meta.get('device_kind', meta['backend'])} (jax backend `{meta['backend']}`): "
        "wrapped batched envs vs raw `mjx.step`",
        "",
        f"- command: `{meta['command']}`",
        f"- hardware: {meta['cpu_model']}, {meta['cpu_count']} cores visible to the process "
        f"(`os.sched_getaffinity`), jax backend `{meta['backend']}`",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- XLA_FLAGS: `{meta.get('xla_flags') or '(none)'}`",
        f"- {meta['steps']} control steps per timed scan, best of {meta['rounds']} interleaved rounds, compile excluded",
        f"- peak RSS of the benchmark process: {meta['peak_rss_mib']:.0f} MiB",
        "",
        "`raw` = vmap over the batch of `n_substeps` x `mjx.step` (after the task's `before_physics_step`) on the task's nominal model "
        "(same physics steps per control step, same random-action generation); every R control steps "
        "(R = the wrapped run's mean episode length, column R) all raw envs restart from their initial "
        "state, so raw physics visits states like the wrapped env, whose episodes end and restart "
        "(with joint limits or contacts MJX's solver iterates until converged, so state matters). "
        "`raw, per-env randomised models` is the same with each env simulating its own "
        "domain-randomised model: the part of the overhead that is randomised physics, not wrapper code. "
        "`wrapped` = `VmapAutoReset(get_env(task), B)` with the registry's default stack, every finished env "
        "reset afresh; `wrapped, pooled restarts` = the same with `reset_pool=True` (finished envs restart "
        "from stored initial states with new keys; every 4 steps up to B/16 used states are replaced by "
        "fresh resets in one call). "
        "overhead = wrapped time / raw time - 1: from the best wall-clock time of each, from the best CPU "
        "time of the process (less sensitive to other processes sharing the cores), and the median over "
        "rounds of the ratio within a round (raw and wrapped run back to back in every round, so slow "
        "changes in machine load cancel). Memory = XLA's estimate "
        "for the compiled scan (arguments + outputs + temporaries).",
        "",
        "| task | B | variant | env-steps/s | physics steps/s | overhead (wall) | overhead (CPU time) "
        "| overhead (median of rounds) | XLA memory | compile | R |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['batch']} | {r['variant']} | {r['env_steps_per_s']:,.0f} | "
            f"{r['physics_steps_per_s']:,.0f} | {r['overhead_pct']:+.1f}% | {r['cpu_overhead_pct']:+.1f}% | "
            f"{r['median_round_overhead_pct']:+.1f}% | "
            f"{_fmt_mb(r['xla_memory_bytes'])} | "
            f"{r['compile_s']:.0f} s | {r['raw_restart_every'] or '-'} |"
        )
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="cartpole,brax_inverted_pendulum")
    p.add_argument("--batch-sizes", default="256,1024,4096", help="comma-separated, for every task")
    p.add_argument(
        "--task-batch-sizes",
        action="append",
        default=[],
        metavar="TASK=SIZES",
        help="batch sizes for one task, e.g. brax_ant=64,256 (repeatable)",
    )
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ablation", default="", help="comma-separated batch sizes at which to add ablation variants")
    p.add_argument("--out", default=None, help="path prefix: writes PREFIX.md and PREFIX.json")
    add_argument_xla_default(p)
    args = p.parse_args(argv)
    xla_flags = set_process_xla_options(args.xla_default)

    rows: list[dict[str, Any]] = []
    per_task = dict(item.split("=", 1) for item in args.task_batch_sizes)
    for task_name in args.tasks.split(","):
        for batch in [int(b) for b in per_task.get(task_name, args.batch_sizes).split(",")]:
            ablate = str(batch) in args.ablation.split(",")
            rows += bench_case(task_name, batch, args.steps, args.rounds, ablate)

    meta = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]) if argv is None else str(argv),
        "cpu_model": cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "backend": jax.default_backend(),
        "device_kind": f"{jax.device_count()} × {jax.devices()[0].device_kind}",
        "versions": versions(),
        "xla_flags": xla_flags,
        "steps": args.steps,
        "rounds": args.rounds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        write_markdown(args.out + ".md", rows, meta)
        with open(args.out + ".json", "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
        print(f"wrote {args.out}.md and {args.out}.json")


if __name__ == "__main__":
    main()

"""Single-observation latency of the exported student on one CPU core: ONNX Runtime vs the JAX export.

For each task and student kind this builds the student at the size a preset trains (untrained
parameters: latency does not depend on their values), exports it both ways
(:func:`distill_jax.export.export_student`, StableHLO; :func:`distill_jax.export.export_onnx`) and
times one control step for one observation, ``--calls`` times per round over ``--rounds``
interleaved rounds (so background load hits both runtimes alike):

* ``onnxruntime``: ``InferenceSession.run`` on prepared float32 inputs, one intra-op thread,
  sequential execution;
* ``onnx + checks``: :meth:`distill_jax.deploy.runtime.OnnxStudent.step` (field guard, shape
  and finiteness checks, then the same ``run``);
* ``jax export``: the deserialised ``jax.export`` program under ``jax.jit`` on arrays already
  on the device, blocking on the result;
* ``jax export + checks``: :meth:`distill_jax.export.DeployedStudent.step` (what a user calls).

The process is pinned to one core (``sched_setaffinity``) and XLA to one thread
(``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, set before JAX is
imported). Reported: median and 99th percentile of the per-call wall time over all rounds, in
microseconds, and the best round's median.

Usage::

    python experiments/bench_deploy.py --out experiments/results/deploy_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from distill_jax.deploy.contract import CARRY_INPUT  # noqa: E402
from distill_jax.deploy.runtime import OnnxStudent, import_onnxruntime  # noqa: E402
from distill_jax.distill.student import make_student  # noqa: E402
from distill_jax.envs import get_env  # noqa: E402
from distill_jax.export import export_onnx, export_student, load_student  # noqa: E402
from distill_jax.normalization import init_stats  # noqa: E402

# (task, kind, hidden, gru_size): the default preset's cart-pole student (and its GRU variant at the
# DistillConfig defaults), the quadruped GPU preset's GRU student and an MLP of the default size.
STUDENTS = (
    ("cartpole", "mlp", (128, 128), 64),
    ("cartpole", "gru", (128, 128), 64),
    ("quadruped_rough", "mlp", (128, 128), 64),
    ("quadruped_rough", "gru", (256, 128), 128),
)


def callers(task: str, kind: str, hidden: tuple[int, ...], gru_size: int, directory: pathlib.Path):
    """``{runtime: zero-argument callable doing one control step}`` and the student's parameter count."""
    env = get_env(task)
    student = make_student(env.schema, env.action_size, kind=kind, hidden=hidden, gru_size=gru_size)
    obs = student.schema.select(jax.device_get(env.reset(jax.random.PRNGKey(0)).obs), "student")
    params = student.init(jax.random.PRNGKey(1), obs)
    stats = init_stats(obs)
    export_student(directory, student, params, stats)
    onnx_path = export_onnx(directory, student, params, stats, env)
    obs = {name: np.asarray(value, np.float32) for name, value in obs.items()}

    onnx = OnnxStudent(onnx_path, threads=1)
    feed = {name: value[None] for name, value in obs.items()}
    carry = onnx.initial_carry(1)
    if carry is not None:
        feed[CARRY_INPUT] = carry
    session = onnx.session

    deployed = load_student(directory)
    call = deployed._call  # the jitted jax.export program
    j_carry = deployed.initial_carry(1)
    j_obs = {name: jax.device_put(value[None]) for name, value in obs.items()}
    j_first = jax.device_put(np.zeros((1,), np.float32))
    first = np.zeros((1,), np.float32)
    size = sum(int(np.prod(np.shape(p))) for p in jax.tree.leaves(params))
    return {
        "onnxruntime": lambda: session.run(None, feed),
        "onnx + checks": lambda: onnx.step(carry, obs),
        "jax export": lambda: jax.block_until_ready(call(deployed.variables, j_carry, j_obs, j_first)),
        "jax export + checks": lambda: jax.block_until_ready(deployed.step(j_carry, obs, first)),
    }, size


def time_calls(fn, calls: int) -> np.ndarray:
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - start
    return out / 1e3  # microseconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per runtime per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--core", type=int, default=0, help="the CPU core to pin to")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.core})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, kind, hidden, gru_size in STUDENTS:
            fns, size = callers(task, kind, hidden, gru_size, pathlib.Path(tmp) / f"{task}_{kind}")
            for fn in fns.values():
                for _ in range(args.warmup):
                    fn()
            samples = {name: [] for name in fns}
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    samples[name].append(time_calls(fn, args.calls))
            for name, rounds in samples.items():
                pooled = np.concatenate(rounds)
                rows.append({"task": task, "kind": kind, "hidden": list(hidden), "gru_size": gru_size if kind == "gru" else None,
                             "parameters": size, "runtime": name, "median_us": float(np.median(pooled)),
                             "p99_us": float(np.percentile(pooled, 99)),
                             "best_round_median_us": float(min(np.median(r) for r in rounds)), "calls": int(pooled.size)})
                print(f"{task:16s} {kind:3s} {name:20s} median {rows[-1]['median_us']:8.1f} us  "
                      f"p99 {rows[-1]['p99_us']:8.1f} us", flush=True)
    meta = {"cpu": platform.processor() or platform.machine(), "python": sys.version.split()[0],
            "jax": jax.__version__, "onnxruntime": import_onnxruntime().__version__, "numpy": np.__version__,
            "pinned_core": args.core, "xla_flags": os.environ["XLA_FLAGS"], "calls": args.calls,
            "rounds": args.rounds, "load_average": os.getloadavg(), "command": " ".join(["python", *sys.argv])}
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        meta["cpu"] = model
    except (OSError, StopIteration):
        pass
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

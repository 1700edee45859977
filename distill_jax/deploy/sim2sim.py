"""Sim-to-sim: the exported ONNX student in MuJoCo's C engine, scored next to the MJX panel. No JAX.

``python -m distill_jax.sim2sim RUN_DIR [--episodes N] [--contact hfield|tangent_plane]`` reads

* ``RUN_DIR/export/student.onnx`` — the student and its deployment contract, from which the
  observations are built (:mod:`distill_jax.deploy.observations`);
* the panel's env fingerprint (``eval.json``, else ``env_fingerprint.json``) — the task's reset
  distribution, randomisation ranges, reward terms and termination
  (:mod:`distill_jax.deploy.physics`);
* ``RUN_DIR/eval.json`` — the MJX panel's student figures,

runs held-out episodes (the panel's seed numbers, drawn with NumPy's generator, so the
episodes are new ones from the same distribution), prints a table and writes
``RUN_DIR/sim2sim.json``. "Agree" means the two 95 % intervals overlap: for the mean return,
mean ± 1.96 std / sqrt(n); for rates, Wilson intervals (as ``eval.json`` reports them). A
tracking task's episode-mean tracking error is shown beside the panel's (which keeps no spread
for it, so no agreement is claimed). For the quadruped the feet meet MuJoCo's own height field
(``contact: hfield``), not training's per-foot tangent planes (``tangent_plane``, which
``--contact tangent_plane`` reproduces in C); the report states both.

A bad run directory (missing, no export, an export without ``student.onnx``, an unsupported
task) gets one line ``error: ...`` and exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from typing import Any

import mujoco
import numpy as np

from distill_jax.deploy.command import run_dir_parser
from distill_jax.deploy.contract import ONNX_FILE, ContractError
from distill_jax.deploy.observations import ActionDelay, ObservationBuilder
from distill_jax.deploy.physics import SimError, make_sim
from distill_jax.deploy.runtime import OnnxStudent, import_onnxruntime

SIM2SIM_FILE = "sim2sim.json"
Z95 = 1.96
# Per-step task metrics averaged over each episode, as distill_jax.evaluate.EPISODE_MEAN_METRICS
# (the quadruped's xy velocity tracking error, m/s).
EPISODE_MEAN_METRICS = ("tracking_error",)


class Sim2SimError(Exception):
    """A run directory sim2sim cannot use; the message is the one line printed."""


def wilson_interval(count: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of the proportion ``count / n`` (as ``eval.json``'s ``*_ci95``)."""
    p, z2 = count / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(mean: float, std: float, n: int) -> list[float]:
    """Normal-approximation 95 % interval of a mean from ``n`` samples with population std ``std``
    (``eval.json``'s ``return_std``): the standard error is ``std * sqrt(n / (n - 1)) / sqrt(n)``."""
    half = Z95 * std / math.sqrt(max(n - 1, 1))
    return [mean - half, mean + half]


def run_episode(sim: Any, student: Any, rng: np.random.Generator, max_steps: int) -> dict[str, float]:
    """One episode of the deployed ``student`` in ``sim``: return, length, fall, success."""
    contract = student.contract
    delay = ActionDelay(contract.latency, student.action_size)
    builder = ObservationBuilder(contract, rng)
    obs = builder.reset(sim.reset(rng))
    delay.reset(rng)
    carry = student.initial_carry(1)
    total, fall, metrics, steps = 0.0, False, {"success": 0.0}, 0
    sums = dict.fromkeys(EPISODE_MEAN_METRICS, 0.0)
    for steps in range(1, max_steps + 1):
        carry, action = student.step(carry, obs)
        task_obs, reward, fall, metrics = sim.step(delay(action))
        total += reward
        for name in sums:
            sums[name] += metrics.get(name, math.nan)
        if fall:
            break
        obs = builder.step(task_obs, action)
    out = {"return": total, "length": float(steps), "fall": float(fall),
           "success": 0.0 if fall else float(metrics["success"])}
    # Per-step metrics averaged over the episode, the terminal step included (as the panel does).
    out.update({name: value / steps for name, value in sums.items() if not math.isnan(value)})
    return out


def summarize(episodes: list[dict[str, float]]) -> dict[str, Any]:
    """Panel statistics in ``eval.json``'s keys, plus ``return_mean_ci95``."""
    returns = np.array([e["return"] for e in episodes])
    n = len(episodes)
    out: dict[str, Any] = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
                           "episode_length_mean": float(np.mean([e["length"] for e in episodes])), "episodes": n}
    out["return_mean_ci95"] = mean_interval(out["return_mean"], out["return_std"], n)
    for rate, key in (("success_rate", "success"), ("fall_rate", "fall")):
        count = float(sum(e[key] for e in episodes))
        out[rate], out[f"{rate}_ci95"] = count / n, list(wilson_interval(count, n))
    for name in EPISODE_MEAN_METRICS:
        if all(name in e for e in episodes):
            values = np.array([e[name] for e in episodes])
            out[f"{name}_mean"], out[f"{name}_std"] = float(values.mean()), float(values.std())
            out[f"{name}_mean_ci95"] = mean_interval(out[f"{name}_mean"], out[f"{name}_std"], n)
    return out


def compare(mjx: dict[str, Any], sim: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per metric: both figures, both 95 % intervals, and whether the intervals overlap."""
    rows = {}
    mjx_return_ci = mean_interval(mjx["return_mean"], mjx["return_std"], mjx["episodes"])
    for metric, mjx_ci, sim_ci in (
        ("return_mean", mjx_return_ci, sim["return_mean_ci95"]),
        ("success_rate", mjx["success_rate_ci95"], sim["success_rate_ci95"]),
        ("fall_rate", mjx["fall_rate_ci95"], sim["fall_rate_ci95"]),
    ):
        rows[metric] = {"mjx": mjx[metric], "mjx_ci95": list(mjx_ci), "mujoco_c": sim[metric],
                        "mujoco_c_ci95": list(sim_ci), "agree": bool(mjx_ci[0] <= sim_ci[1] and sim_ci[0] <= mjx_ci[1])}
    return rows


def format_table(report: dict[str, Any]) -> str:
    """The printed comparison (markdown)."""
    sim, mjx = report["mujoco_c"], report.get("mjx_panel")
    head = (f"sim2sim: {report['env']} student ({report['student_kind']}, {ONNX_FILE}) in MuJoCo C "
            f"{report['versions']['mujoco']}, {sim['episodes']} held-out episodes")
    contact = (f"\nContact: MuJoCo C `{report['contact']['sim2sim']}`, MJX training `{report['contact']['training']}`."
               if report.get("contact") else "")
    if mjx is None:
        extra = "".join(f", {name.replace('_', ' ')} {sim[f'{name}_mean']:.3f}" for name in EPISODE_MEAN_METRICS
                        if f"{name}_mean" in sim)
        return head + f"\nreturn {sim['return_mean']:.1f} ± {sim['return_std']:.1f}, success rate " \
                      f"{sim['success_rate']:.2f}, fall rate {sim['fall_rate']:.2f}{extra} (no eval.json to compare with)" \
                      + contact

    def cell(value: float, ci: list[float], digits: int) -> str:
        return f"{value:.{digits}f} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"

    lines = [head + f" vs the MJX panel's {mjx['episodes']}", "",
             "| metric | MJX panel (95 % CI) | MuJoCo C + ONNX (95 % CI) | agree |", "|---|---|---|---|"]
    for metric, row in report["agreement"].items():
        digits = 1 if metric == "return_mean" else 2
        lines.append(f"| {metric.replace('_', ' ')} | {cell(row['mjx'], row['mjx_ci95'], digits)} | "
                     f"{cell(row['mujoco_c'], row['mujoco_c_ci95'], digits)} | {'yes' if row['agree'] else 'NO'} |")
    lines.append(f"| episode length | {mjx['episode_length_mean']:.1f} | {sim['episode_length_mean']:.1f} | |")
    for name in EPISODE_MEAN_METRICS:  # eval.json keeps no per-episode spread for these: no MJX interval
        if f"{name}_mean" in sim and f"{name}_mean" in mjx:
            lines.append(f"| {name.replace('_', ' ')} (episode mean) | {mjx[f'{name}_mean']:.3f} | "
                         f"{cell(sim[f'{name}_mean'], sim[f'{name}_mean_ci95'], 3)} | |")
    return "\n".join(lines) + ("\n" + contact if contact else "")  # a blank line: the sentence is not a table row


def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise Sim2SimError(f"{path}: not valid JSON ({e})") from None


def locate_onnx(run_dir: pathlib.Path) -> pathlib.Path:
    """``RUN_DIR/export/student.onnx``, or a :class:`Sim2SimError` saying what is missing and how to make it."""
    if not run_dir.is_dir():
        raise Sim2SimError(f"{run_dir}: no such run directory")
    export = run_dir / "export"
    remedy = f"python -m distill_jax.train --phase export --from {run_dir}"
    if not export.is_dir():
        raise Sim2SimError(f"{run_dir}: the run has no exported student ({export} is missing); export it with: {remedy}")
    if not (export / ONNX_FILE).is_file():
        raise Sim2SimError(f"{export}: no {ONNX_FILE} (exported before ONNX export existed); re-export with: {remedy}")
    return export / ONNX_FILE


def sim2sim(run_dir: pathlib.Path | str, episodes: int | None = None, contact: str | None = None) -> dict[str, Any]:
    """Runs the sim-to-sim check on ``run_dir`` and writes ``sim2sim.json``; returns the report.

    Args:
      run_dir: a run directory with ``export/student.onnx``.
      episodes: held-out episodes (default: as many as the MJX panel, else 64).
      contact: for a terrain task, the foot contact model in MuJoCo C: ``"hfield"`` (MuJoCo's
        own, the default) or ``"tangent_plane"`` (training's approximation, reproduced).

    Raises:
      Sim2SimError: a run directory or model sim2sim cannot use (nothing is written then).
    """
    run_dir = pathlib.Path(run_dir)
    path = locate_onnx(run_dir)
    evaluation = _read_json(run_dir / "eval.json")
    fingerprint = (evaluation or {}).get("panel", {}).get("env_fingerprint") or _read_json(run_dir / "env_fingerprint.json")
    if fingerprint is None:
        raise Sim2SimError(f"{run_dir}: neither eval.json nor env_fingerprint.json describes the env")
    try:
        student = OnnxStudent(path)
        sim = make_sim(fingerprint, contact)
    except (ContractError, SimError) as e:
        raise Sim2SimError(f"{path}: {e}") from None
    mjx = (evaluation or {}).get("student")
    seeds = list((evaluation or {}).get("panel", {}).get("seeds", []))
    count = episodes or (len(seeds) if seeds else 64)
    training = set((evaluation or {}).get("panel", {}).get("training_seeds", []))
    next_seed = max(seeds, default=1_000_000 - 1) + 1
    while len(seeds) < count:  # more episodes than the panel: further held-out seed numbers
        seeds += [next_seed] if next_seed not in training else []
        next_seed += 1
    seeds = seeds[:count]
    max_steps = int(student.contract.env.get("episode_length") or fingerprint["episode_length"])
    start = time.perf_counter()
    per_episode = [run_episode(sim, student, np.random.default_rng(seed), max_steps) for seed in seeds]
    seconds = time.perf_counter() - start
    summary = summarize(per_episode)
    report = {
        "env": fingerprint["name"], "student_kind": student.contract.kind, "onnx": str(path.relative_to(run_dir)),
        "engine": "mujoco.mj_step (C)", "seeds": seeds, "rng": "numpy.random.default_rng(seed) (PCG64)",
        "versions": {"mujoco": mujoco.__version__, "onnxruntime": import_onnxruntime().__version__, "numpy": np.__version__},
        "panel_distribution": (evaluation or {}).get("panel", {}).get("distribution"),
        "contact": ({"sim2sim": sim.contact, "training": sim.training_contact} if hasattr(sim, "contact") else None),
        "mujoco_c": summary, "mjx_panel": mjx, "agreement": compare(mjx, summary) if mjx else None,
        "per_episode": per_episode, "seconds": seconds,
    }
    report["table"] = format_table(report)
    (run_dir / SIM2SIM_FILE).write_text(json.dumps(report, indent=2))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = run_dir_parser(
        "sim2sim", "Run a run's exported ONNX student in MuJoCo's C engine (no JAX) over held-out episodes and "
        "compare with the MJX panel in eval.json; writes RUN_DIR/sim2sim.json.",
        "a run directory with export/student.onnx", None,
        "held-out episodes (default: as many as the MJX panel in eval.json, else 64)")
    parser.add_argument("--contact", choices=("hfield", "tangent_plane"), default=None,
                        help="terrain tasks (quadruped_rough): the feet's contact in MuJoCo C, 'hfield' (MuJoCo's "
                             "own height-field contact, the default) or 'tangent_plane' (training's per-foot plane "
                             "approximation, reproduced in C for a like-for-like check)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = sim2sim(args.run_dir, args.episodes, args.contact)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Sim2SimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report["table"])
    print(f"({report['seconds']:.1f} s; written to {args.run_dir / SIM2SIM_FILE})")
    return 0

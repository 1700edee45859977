"""Constructed failures and their verdicts on the cart-pole (issue #42's targets).

One default-preset teacher, then students built to fail in known ways, each evaluated with the
full evaluation (panel, suite, claims, diagnosis) and the deployable-only baseline and the oracle
student where the verdict needs them:

* the default student                           -> healthy
* a memoryless student (no ``history``) + oracle -> observation_insufficiency
* teacher-driven collection (the default and a tiny budget, with and without the oracle)
                                                 -> state_coverage (or what it shows as, measured)
* an under-trained teacher (the smoke preset's)  -> teacher_quality

Usage: python experiments/diagnosis_cartpole.py --out /tmp/diagnosis [--results experiments/results/diagnosis_cartpole.md]
(~15 min on 2 idle CPU cores). The default run's eval.md is copied next to the results file.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import time

import jax

from distill_jax.config import replace_fields
from distill_jax.run import pipeline
from distill_jax.run.presets import preset

CURRENT_ONLY = ["cart_pos", "pole_angle", "last_action"]  # the deployable fields without history

STUDENTS = {
    "default student": ({}, {}),
    "memoryless student (no history) + oracle": ({"student": {"fields": CURRENT_ONLY}}, {"oracle": True}),
    "teacher acts (default budget)": ({"behaviour": {"kind": "teacher"}}, {}),
    "teacher acts, 5 % budget": ({"behaviour": {"kind": "teacher"}, "total_env_steps": 20_480}, {}),
    "teacher acts, 5 % budget + oracle": ({"behaviour": {"kind": "teacher"}, "total_env_steps": 20_480},
                                          {"oracle": True}),
}


def evaluate(run, teacher, baseline, oracle_enabled: bool) -> dict:
    student = pipeline.distill_phase(run, teacher, quiet=True)
    oracle = pipeline.distill_phase(run, teacher, quiet=True, phase="oracle") if oracle_enabled else None
    pipeline.export_phase(run, student)
    return pipeline.eval_phase(run, teacher, student, baseline=baseline, oracle=oracle)["report"]


def row(name: str, report: dict, seconds: float) -> str:
    d = report["diagnosis"]["overall"]
    im, s, t = report["imitation"], report["student"], report["teacher"]
    oracle = report["claims"]["imitation"].get("oracle_return")
    return (f"| {name} | **{d['verdict']}** | {s['return_mean']:.1f} / {t['return_mean']:.1f} | "
            f"{s['fall_rate']:.0%} / {t['fall_rate']:.0%} | {im['kl']:.3f} | {im.get('student_states/kl', float('nan')):.3f} | "
            f"{'–' if oracle is None else f'{oracle:.1f}'} | {seconds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--results", type=pathlib.Path, default=None)
    args = parser.parse_args()

    # The student budget these verdicts were measured with: the cart-pole's default until it moved to 10 %
    # of the teacher's env steps (16 envs, 8 epochs; distill_budget_cartpole.md).
    base = replace_fields(preset("default", env="cartpole"), {
        "baseline": {"enabled": True}, "distill": {"total_env_steps": 163_840, "num_envs": 64, "num_epochs": 2}})
    t0 = time.perf_counter()
    teacher_run = pipeline.create_run(args.out / "teacher", base)
    teacher = pipeline.teacher_phase(teacher_run, quiet=True)
    baseline = pipeline.teacher_phase(teacher_run, quiet=True, phase="baseline")
    print(f"teacher and baseline trained in {time.perf_counter() - t0:.0f} s", flush=True)

    rows, reports = [], {}
    for i, (name, (distill, extra)) in enumerate(STUDENTS.items()):
        t0 = time.perf_counter()
        run = pipeline.fork_run(teacher_run, args.out / f"student{i}",
                                {"distill": distill, "oracle": {"enabled": bool(extra.get("oracle"))}})
        reports[name] = evaluate(run, teacher, baseline, bool(extra.get("oracle")))
        rows.append(row(name, reports[name], time.perf_counter() - t0))
        print(rows[-1], flush=True)

    t0 = time.perf_counter()
    smoke = pipeline.create_run(args.out / "undertrained", replace_fields(preset("smoke", env="cartpole"), {}))
    weak = pipeline.teacher_phase(smoke, quiet=True)
    student = pipeline.distill_phase(smoke, weak, quiet=True)
    pipeline.export_phase(smoke, student)
    reports["under-trained teacher (smoke preset)"] = pipeline.eval_phase(smoke, weak, student)["report"]
    rows.append(row("under-trained teacher (smoke preset)", reports["under-trained teacher (smoke preset)"],
                    time.perf_counter() - t0))
    print(rows[-1], flush=True)

    if args.results is None:
        return
    default = reports["default student"]
    teacher_claim = default["claims"]["teacher"]
    diff = teacher_claim["teacher_minus_baseline_return"]
    lines = [
        "# Constructed failures and their verdicts — cart-pole",
        "",
        f"Hardware: {platform.processor() or platform.machine()} ({jax.device_count()} × {jax.devices()[0].platform}); "
        f"jax {jax.__version__}; {time.strftime('%Y-%m-%d')}.  ",
        f"Command: `python experiments/diagnosis_cartpole.py --out DIR --results {args.results}`  ",
        "Teacher and deployable-only baseline: the `default` preset (baseline budget: teacher + student env steps); "
        "students: 163,840 env steps, 64 envs, 2 epochs (the cart-pole's default until 2026-12-07). "
        "Panel: 64 held-out seeds; suite: the cart-pole's 25 points.",
        "",
        "| student | verdict | return student / teacher | falls student / teacher | KL on teacher states | "
        "KL on student states | oracle return | seconds |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Teacher claim on the default run: teacher − baseline "
        f"{diff['mean']:.1f} (95 % CI [{diff['ci95'][0]:.1f}, {diff['ci95'][1]:.1f}]), supported: "
        f"{teacher_claim['supported']}.",
        "",
        "Reasons, as the diagnosis wrote them:",
        "",
        *[f"* {name}: {r['diagnosis']['overall']['reason']}" for name, r in reports.items()],
        "",
        "The default run's full `eval.md`: [`eval_cartpole_default.md`](eval_cartpole_default.md).",
    ]
    args.results.write_text("\n".join(lines) + "\n")
    shutil.copy(args.out / "student0" / "eval.md", args.results.parent / "eval_cartpole_default.md")
    (args.results.with_suffix(".json")).write_text(json.dumps(
        {name: r["diagnosis"] for name, r in reports.items()}, indent=2, default=str))


if __name__ == "__main__":
    main()

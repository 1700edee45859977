"""Which student, which collection policy? One teacher, several students, one panel each.

Trains one teacher with the chosen preset, then distils each variant from that same
teacher (``pipeline.fork_run``: the teacher checkpoints are copied) and evaluates it on
the same held-out seeds. Variants: what the student sees (stacked history, nothing but
the current deployable fields, a GRU over them) and who acts while collecting
(DAgger: the student; the teacher; a β-mixture), plus the MSE baseline.

    python experiments/student_variants.py --out /tmp/variants \\
        --results experiments/results/student_variants_cpu.md
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax

from distill_jax.run import pipeline
from distill_jax.config import replace_fields
from distill_jax.run.presets import preset

CURRENT_ONLY = ["cart_pos", "pole_angle", "last_action"]  # cartpole's deployable fields without history

VARIANTS: dict[str, dict] = {
    "MLP + history, DAgger (default)": {},
    "MLP, no history (memoryless), DAgger": {"student": {"fields": CURRENT_ONLY}},
    "GRU, no history, DAgger": {"student": {"kind": "gru", "fields": CURRENT_ONLY}},
    "MLP + history, teacher acts": {"behaviour": {"kind": "teacher"}},
    "MLP + history, β-mixture 1→0 over 10 updates": {"behaviour": {"kind": "mixture"}},
    "MLP + history, DAgger, action MSE": {"objective": {"kind": "mse"}},
    "MLP + history, DAgger + 0.1·PPO": {"ppo_term": {"enabled": True, "coef": 0.1}},
    # Budget: ~10 % and ~5 % of the default teacher's 409,600 env steps, with fewer envs so the
    # student still gets 20 / 10 updates.
    "MLP + history, DAgger, 40,960 steps (64 envs)": {"total_env_steps": 40_960, "num_envs": 64},
    "MLP + history, DAgger, 20,480 steps (64 envs)": {"total_env_steps": 20_480, "num_envs": 64},
}


def mean_steady_sps(history: list[dict]) -> float:
    """Mean env-steps/s over the compiled calls after the first (which includes compilation)."""
    timed = [r["env_steps_per_second"] for r in history if "env_steps_per_second" in r][1:]
    return sum(timed) / len(timed) if timed else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--env", default="cartpole")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="directory for the run directories")
    parser.add_argument("--results", type=pathlib.Path, default=None, help="markdown file to write")
    parser.add_argument("--set", dest="overrides", default="{}", help="JSON object of config fields")
    args = parser.parse_args()

    config = replace_fields(preset(args.preset, args.env), json.loads(args.overrides))
    t0 = time.perf_counter()
    teacher_run = pipeline.create_run(args.out / "teacher", config)
    teacher = pipeline.teacher_phase(teacher_run, quiet=True)
    teacher_seconds = time.perf_counter() - t0
    teacher_sps = mean_steady_sps(teacher.history)
    print(f"teacher trained in {teacher_seconds:.0f} s ({teacher_sps:,.0f} env-steps/s)", flush=True)

    rows = []
    for name, changes in VARIANTS.items():
        t0 = time.perf_counter()
        run = pipeline.fork_run(teacher_run, args.out / f"variant{len(rows)}", {"distill": changes})
        student = pipeline.distill_phase(run, teacher, quiet=True)
        distill_seconds = time.perf_counter() - t0
        sps = mean_steady_sps(student.history)
        report = pipeline.eval_phase(run, teacher, student)["report"]
        rows.append((name, report, distill_seconds, sps))
        s, t = report["student"], report["teacher"]
        print(f"{name}: student {s['return_mean']:.1f} ± {s['return_std']:.1f} / teacher {t['return_mean']:.1f}",
              flush=True)

    teacher_report = rows[0][1]["teacher"]
    lines = [
        f"# Student variants from one teacher — {args.env}, preset `{args.preset}`",
        "",
        f"Hardware: {platform.processor() or platform.machine()}, {jax.device_count()} × {jax.devices()[0].device_kind} "
        f"({jax.default_backend()}); jax {jax.__version__}; {time.strftime('%Y-%m-%d')}.  ",
        f"Command: `python experiments/student_variants.py --preset {args.preset} --env {args.env} --out DIR`  ",
        f"Teacher: {config.ppo.total_env_steps:,} env steps ({teacher_seconds:.0f} s incl. compile); every student: "
        f"{config.distill.total_env_steps:,} env steps. Panel: {config.eval_episodes} held-out seeds, deterministic "
        f"actions, first episode of each seed.  ",
        f"Teacher training throughput on this machine: {teacher_sps:,.0f} env-steps/s (after the first, compiling "
        f"call); the distillation column includes teacher inference on every step.",
        "",
        f"Teacher on the panel: {teacher_report['return_mean']:.1f} ± {teacher_report['return_std']:.1f} "
        f"(fall rate {teacher_report['fall_rate']:.2f}).",
        "",
        "| student | distill env steps (% of teacher) | return (mean ± std) | student / teacher | fall rate | "
        "success rate | imitation KL (valid steps) | distill env-steps/s (× teacher) | wall (s, incl. compile) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, report, seconds, sps in rows:
        s = report["student"]
        ratio = s["return_mean"] / teacher_report["return_mean"]
        steps = report["config"]["distill"]["total_env_steps"]
        lines.append(
            f"| {name} | {steps:,} ({100 * steps / config.ppo.total_env_steps:.0f} %) | "
            f"{s['return_mean']:.1f} ± {s['return_std']:.1f} | {ratio:.3f} | {s['fall_rate']:.2f} | "
            f"{s['success_rate']:.2f} | {report['imitation']['kl']:.3f} | {sps:,.0f} ({sps / teacher_sps:.2f}×) | "
            f"{seconds:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results is not None:
        args.results.write_text(text)


if __name__ == "__main__":
    main()

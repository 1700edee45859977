"""How few env steps does distillation need? Students at 10 % of the teacher's budget (issue #48 item 3).

Default-preset cart-pole teachers (``--seeds``, 5 unless told, in one program), then students
distilled from them at 40 % of the teacher's env steps (the preset's budget until 2026-12-07) and at
10 % with more SGD per collected sample: more epochs over each batch, or fewer environments and so
more updates for the same env steps (the preset's since). Each student is scored on the 64-episode
held-out panel against its own teacher; the table gives student / teacher return over the seeds
(mean, 95 % t-interval, per seed) and falls (mean, and the most in one seed: a fall is a tail event).
Target: >= 0.97 of the teacher with <= 10 % of its env steps.

Usage: python experiments/distill_budget_cartpole.py [--seeds 10] --out /tmp/budget [--results FILE.md] [--only NAME ...]
(ten seeds and four variants: about 6 min on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax

from distill_jax.config import replace_fields
from distill_jax.run import pipeline
from distill_jax.run.presets import preset

SEEDS = 5
TEACHER_STEPS = preset("default", env="cartpole").ppo.total_env_steps  # 409,600
TENTH = TEACHER_STEPS // 10  # 40,960

# name -> distill overrides of the cart-pole's default preset (each sets its envs and epochs: the preset's
# own student is the last row since 2026-12-07; before, the first). 32 steps per update, 4 minibatches.
VARIANTS = {
    "40 %, 2 epochs (the preset until 2026-12-07)": {"total_env_steps": 4 * TENTH, "num_envs": 64, "num_epochs": 2},
    "10 %, 2 epochs": {"total_env_steps": TENTH, "num_envs": 64, "num_epochs": 2},
    "10 %, 4 epochs": {"total_env_steps": TENTH, "num_envs": 64, "num_epochs": 4},
    "10 %, 8 epochs": {"total_env_steps": TENTH, "num_envs": 64, "num_epochs": 8},
    "10 %, 16 envs, 4 epochs": {"total_env_steps": TENTH, "num_envs": 16, "num_epochs": 4},
    "10 %, 16 envs, 8 epochs (the preset)": {"total_env_steps": TENTH, "num_envs": 16, "num_epochs": 8},
}


def summary(report: dict) -> dict:
    group = report["across_seeds"][0]
    ratio = group["student_over_teacher_return"]
    falls = group["student"]["fall_rate"]
    return {"ratio_mean": ratio["mean"], "ratio_ci95": ratio["ci95"], "ratio_per_seed": ratio["per_seed"],
            "student_fall_rate_mean": falls["mean"], "student_fall_rate_per_seed": falls["per_seed"],
            "teacher_return_mean": group["teacher"]["return_mean"]["mean"], "kl_mean": group["imitation"]["kl"]["mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--results", type=pathlib.Path, default=None)
    parser.add_argument("--only", action="append", help="run only these variants (by name)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"teachers (and students) in one program (default {SEEDS})")
    args = parser.parse_args()

    base = replace_fields(preset("default", env="cartpole"), {"num_seeds": args.seeds, "suite": {"enabled": False}})
    t0 = time.perf_counter()
    teacher_run = pipeline.create_run(args.out / "teacher", base)
    teacher = pipeline.teacher_phase(teacher_run, quiet=True)
    print(f"{args.seeds} teachers trained in {time.perf_counter() - t0:.0f} s", flush=True)

    rows, results = [], {}
    for i, (name, distill) in enumerate(VARIANTS.items()):
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        run = pipeline.fork_run(teacher_run, args.out / f"student{i}", {"distill": distill})
        student = pipeline.distill_phase(run, teacher, quiet=True)
        seconds = time.perf_counter() - t0
        report = pipeline.eval_phase(run, teacher, student)["report"]
        cfg = run.config.distill
        s = {**summary(report), "env_steps": cfg.total_env_steps, "share": cfg.total_env_steps / TEACHER_STEPS,
             "updates": cfg.num_updates, "sgd_steps": cfg.num_updates * cfg.num_epochs * cfg.num_minibatches,
             "distill_seconds": seconds}
        results[name] = s
        lo, hi = s["ratio_ci95"] or (float("nan"), float("nan"))
        rows.append(f"| {name} | {s['env_steps']:,} ({s['share']:.0%}) | {s['updates']} | {s['sgd_steps']:,} | "
                    f"**{s['ratio_mean']:.3f}** [{lo:.3f}, {hi:.3f}] | "
                    f"{' / '.join(f'{r:.3f}' for r in s['ratio_per_seed'])} | {s['student_fall_rate_mean']:.1%} "
                    f"(most {max(s['student_fall_rate_per_seed']):.0%}) | "
                    f"{s['kl_mean']:.3f} | {seconds:.0f} |")
        print(rows[-1], flush=True)

    if args.results is None:
        return
    teacher_returns = next(iter(results.values()))["teacher_return_mean"]
    lines = [
        f"# Distillation budget — cart-pole, {args.seeds} seeds",
        "",
        f"Hardware: {platform.processor() or platform.machine()} ({jax.device_count()} × {jax.devices()[0].platform}, "
        f"2 cores shared with other work); jax {jax.__version__}; {time.strftime('%Y-%m-%d')}.  ",
        f"Command: `python experiments/distill_budget_cartpole.py --seeds {args.seeds} --out DIR --results {args.results}`  ",
        f"Teachers: the cart-pole's `default` preset, {args.seeds} seeds in one program ({TEACHER_STEPS:,} env steps each; "
        f"mean panel return {teacher_returns:.1f}). Students: the preset's history MLP, DAgger, reverse KL; "
        f"each scored against its own teacher on 64 held-out episodes. Seconds: distillation of all {args.seeds} "
        f"students (one program), compile included, on a shared machine.",
        "",
        "| student | env steps (share of the teacher's) | updates | SGD steps | student / teacher return, mean [95 % CI] "
        "| per seed | student falls, mean (most in one seed) | KL | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    args.results.write_text("\n".join(lines) + "\n")
    args.results.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()

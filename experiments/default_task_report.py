"""Teacher, deployable-only baseline and student of one multi-seed run: table and learning curves.

Reads a finished run directory trained with the baseline (``--set baseline.enabled=true``) and K
seeds (``--num-seeds K``): ``eval.json`` (each seed's teacher, student and baseline on the held-out
panel) and ``metrics.jsonl`` (training curves). Writes

* a markdown table: per seed and aggregated (mean and 95 % t-interval over seeds) return and fall
  rate of the teacher, the baseline (trained with the teacher's plus the student's env steps) and
  the student; teacher / baseline and student / teacher ratios; the first env-step count at which
  the student's training return reaches the baseline's final one (teacher steps included);
* a PNG: mean training-episode return (stochastic policies, over seeds, band = min..max) against
  env steps, for the teacher, the baseline and the student (the student's curve starts where the
  teacher's ends: its env steps count the teacher's).

Usage: python experiments/default_task_report.py RUN --md OUT.md --png OUT.png
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from distill_jax.evaluate import t_interval


def curves(run: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{phase: (env_steps [U], episode_return [U, K])}`` from ``metrics.jsonl`` (training episodes)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = {}
    for phase in ("teacher", "baseline", "distill"):
        mine = [r for r in rows if r.get("phase") == phase and "episode_return" in r]
        if mine:
            out[phase] = (np.array([r["env_steps"] for r in mine], float),
                          np.array([np.atleast_1d(r["episode_return"]) for r in mine], float))
    return out


def fmt(ci: dict) -> str:
    low, high = ci["ci95"] or (float("nan"), float("nan"))
    return f"{ci['mean']:.1f} [{low:.1f}, {high:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=pathlib.Path)
    parser.add_argument("--md", type=pathlib.Path, required=True)
    parser.add_argument("--png", type=pathlib.Path, required=True)
    args = parser.parse_args()

    report = json.loads((args.run / "eval.json").read_text())
    config = report["config"]
    members = report["members"]
    baseline = report["references"]["baseline"]
    teacher_steps = config["ppo"]["total_env_steps"]
    student_steps = config["distill"]["total_env_steps"]
    baseline_steps = config["baseline"]["total_env_steps"] or teacher_steps + student_steps

    per = {"teacher": [m["teacher"] for m in members], "baseline": [b["summary"] for b in baseline],
           "student": [m["student"] for m in members]}
    lines = ["| seed | teacher return | teacher falls | baseline return | baseline falls | student return | "
             "student falls | teacher / baseline | student / teacher |", "|---" * 9 + "|"]
    for k, m in enumerate(members):
        t, b, s = per["teacher"][k], per["baseline"][k], per["student"][k]
        lines.append(f"| {m['seed']} | {t['return_mean']:.1f} | {t['fall_rate']:.2f} | {b['return_mean']:.1f} | "
                     f"{b['fall_rate']:.2f} | {s['return_mean']:.1f} | {s['fall_rate']:.2f} | "
                     f"{t['return_mean'] / b['return_mean']:.3f} | {s['return_mean'] / t['return_mean']:.3f} |")
    agg = {role: {"return": t_interval([x["return_mean"] for x in xs]), "fall": t_interval([x["fall_rate"] for x in xs])}
           for role, xs in per.items()}
    ratio_tb = t_interval([t["return_mean"] / b["return_mean"] for t, b in zip(per["teacher"], per["baseline"])])
    ratio_st = t_interval([s["return_mean"] / t["return_mean"] for s, t in zip(per["student"], per["teacher"])])
    lines.append(f"| **mean [95 % CI over seeds]** | {fmt(agg['teacher']['return'])} | {agg['teacher']['fall']['mean']:.2f} | "
                 f"{fmt(agg['baseline']['return'])} | {agg['baseline']['fall']['mean']:.2f} | "
                 f"{fmt(agg['student']['return'])} | {agg['student']['fall']['mean']:.2f} | "
                 f"{ratio_tb['mean']:.3f} [{ratio_tb['ci95'][0]:.3f}, {ratio_tb['ci95'][1]:.3f}] | "
                 f"{ratio_st['mean']:.3f} [{ratio_st['ci95'][0]:.3f}, {ratio_st['ci95'][1]:.3f}] |")

    c = curves(args.run)
    reach = None
    if "baseline" in c and "distill" in c:
        final = float(np.mean(c["baseline"][1][-5:]))  # the baseline's last five updates, mean over seeds
        steps, ret = c["distill"]
        above = np.nonzero(ret.mean(axis=1) >= final)[0]
        reach = (final, None if above.size == 0 else int(teacher_steps + steps[above[0]]))
    text = [f"Env steps: teacher {teacher_steps:,}, student {student_steps:,}, baseline {baseline_steps:,} "
            f"(= teacher + student unless set). Panel: {len(report['panel']['seeds'])} held-out episodes per seed, "
            "deterministic actions.", "", *lines, ""]
    if reach:
        where = "never" if reach[1] is None else f"at {reach[1]:,} env steps ({reach[1] / baseline_steps:.0%} of the baseline's)"
        text.append(f"Training-episode return: the baseline ends at {reach[0]:.1f} (mean of its last five updates over "
                    f"seeds); the student's training return (teacher steps included) reaches it {where}.")
    args.md.write_text("\n".join(text) + "\n")
    print("\n".join(text))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels = {"teacher": "teacher (privileged PPO)", "baseline": "baseline (PPO, deployable fields only)",
              "distill": "student (DAgger from the teacher; x: teacher + student steps)"}
    for phase, (steps, ret) in c.items():
        x = steps + (teacher_steps if phase == "distill" else 0)
        ax.plot(x, ret.mean(axis=1), label=labels[phase])
        ax.fill_between(x, ret.min(axis=1), ret.max(axis=1), alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training episode return")
    ax.set_title(f"{config['env']}: mean over {len(members)} seeds, band min-max")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()

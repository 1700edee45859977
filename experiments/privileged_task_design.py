"""Teacher against the deployable-only baseline on one task variant (issue #49's design loop).

Trains the privileged PPO teacher and the deployable-only baseline (same PPO, its actor reads only
``student_obs``; budget: the teacher's plus the distillation's env steps unless ``--baseline-steps``)
for K seeds in one vmapped program each, and scores both on the held-out panel.

Usage: python experiments/privileged_task_design.py --env cartpole_hidden --seeds 2 \
           --override slope=0.2 --override max_action_delay=2 [--teacher-steps N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import numpy as np

from distill_jax.config import apply_override, parse_assignment, replace_fields
from distill_jax.evaluate import Panel, eval_wrapper, score_members
from distill_jax.run import pipeline
from distill_jax.run.claims import reference_members
from distill_jax.run.presets import preset


def parse_value(text: str):
    return json.loads(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cartpole_hidden")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--override", action="append", default=[], help="NAME=JSON env override")
    parser.add_argument("--teacher-steps", type=int, default=0)
    parser.add_argument("--baseline-steps", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--distill", action="store_true", help="also distil a student and score it")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--set", action="append", default=[], dest="sets",
                        help="PATH=VALUE config override, as the CLI's --set (e.g. distill.num_epochs=4)")
    parser.add_argument("--from-run", type=pathlib.Path, default=None,
                        help="reuse this design run's teachers (no teacher or baseline training); distil a student "
                             "with the --set changes and score it")
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()

    overrides = [[k, parse_value(v)] for k, v in (o.split("=", 1) for o in args.override)]
    base = preset("default", args.env)  # the task's own preset (cartpole_hidden: masked action MSE, 8 epochs)
    changes = {"env": args.env, "num_seeds": args.seeds, "env_overrides": overrides, "eval_episodes": args.episodes,
               "baseline": {"enabled": True, "total_env_steps": args.baseline_steps}}
    if args.teacher_steps:
        changes["ppo"] = {"total_env_steps": args.teacher_steps}
    out = pathlib.Path(tempfile.mkdtemp(prefix="design_"))
    if args.from_run:
        changes = {}  # the --set assignments as nested dicts, for fork_run
        for assignment in args.sets:
            parts, value = parse_assignment(assignment)
            node = changes
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        run = pipeline.fork_run(pipeline.open_run(args.from_run), out / "run", changes)  # copies the teachers
        config = run.config
        t0 = time.perf_counter()
        teacher = pipeline.restore_teacher(run)
        args.no_baseline, args.distill = True, True
    else:
        config = replace_fields(base, changes)
        for assignment in args.sets:
            config = apply_override(config, assignment)
        run = pipeline.create_run(out / "run", config)
        t0 = time.perf_counter()
        teacher = pipeline.teacher_phase(run, quiet=True)
    t_teacher = time.perf_counter() - t0
    args.episodes = config.eval_episodes
    panel = Panel.held_out(args.episodes)
    env = pipeline.make_env(config, for_eval=True)
    scores = {"teacher": reference_members(env, config, panel, teacher)["baseline"]}
    print(f"teacher {t_teacher:.0f} s: " + "  ".join(
        f"{m['summary']['return_mean']:.1f}/{m['summary']['fall_rate']:.2f}" for m in scores["teacher"]), flush=True)
    if not args.no_baseline:
        t0 = time.perf_counter()
        baseline = pipeline.teacher_phase(run, quiet=True, phase="baseline")
        t_base = time.perf_counter() - t0
        scores["baseline"] = reference_members(env, config, panel, baseline)["baseline"]
        print(f"baseline {t_base:.0f} s: " + "  ".join(
            f"{m['summary']['return_mean']:.1f}/{m['summary']['fall_rate']:.2f}" for m in scores["baseline"]),
            flush=True)
    if args.distill:
        t0 = time.perf_counter()
        student = pipeline.distill_phase(run, teacher, quiet=True)
        t_student = time.perf_counter() - t0
        params = (student.state.params, student.state.obs_stats)
        scores["student"] = score_members(
            env, panel, lambda p: eval_wrapper(student.student, p[0], p[1], deterministic=True), params,
            student.student.initial_carry)
        print(f"student {t_student:.0f} s: " + "  ".join(
            f"{m['summary']['return_mean']:.1f}/{m['summary']['fall_rate']:.2f}" for m in scores["student"]),
            flush=True)
    summary = {role: {"return": [m["summary"]["return_mean"] for m in ms], "fall": [m["summary"]["fall_rate"] for m in ms]}
               for role, ms in scores.items()}
    for role, s in summary.items():  # noqa: B007
        print(f"{role}: return {np.mean(s['return']):.1f} fall {np.mean(s['fall']):.2f}")
    if "baseline" in summary:
        print(f"ratio teacher/baseline {np.mean(summary['teacher']['return']) / np.mean(summary['baseline']['return']):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"overrides": overrides, "config_teacher_steps": config.ppo.total_env_steps,
                                         "summary": summary, "run": str(run.path)}, indent=1))


if __name__ == "__main__":
    main()

"""Command line: ``python -m distill_jax.train`` runs teacher → distill → eval.

With no arguments it runs the whole pipeline on the fast CPU task (``cartpole``)
with the ``default`` preset and prints the teacher-vs-student table. The run
directory receives the resolved config, the schema, the env fingerprint,
``metrics.jsonl`` and ``eval.json``/``eval.md``.

Examples::

    python -m distill_jax.train --preset smoke --out runs/smoke
    python -m distill_jax.train --set ppo.total_env_steps=200000 --set distill.behaviour=teacher
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Any

from distill_jax.config import ConfigError, DistillConfig, PPOConfig, RunConfig, apply_override, replace_fields, to_dict

PRESETS: dict[str, RunConfig] = {
    # Whole pipeline in a few minutes on 2 CPU cores; meets the distillation quality bar.
    "default": RunConfig(
        ppo=PPOConfig(num_envs=256, unroll_length=32, num_minibatches=4, num_epochs=4, learning_rate=1e-3,
                      total_env_steps=409_600),
        distill=DistillConfig(num_envs=256, unroll_length=32, num_minibatches=4, num_epochs=2,
                              total_env_steps=163_840),
        eval_episodes=64,
    ),
    # First contact and CI: every phase runs, nothing is expected to be learned.
    "smoke": RunConfig(
        ppo=PPOConfig(num_envs=16, unroll_length=8, num_minibatches=2, num_epochs=2, total_env_steps=16 * 8 * 2),
        distill=DistillConfig(num_envs=16, unroll_length=8, num_minibatches=2, num_epochs=2,
                              total_env_steps=16 * 8 * 2),
        eval_episodes=8,
    ),
}

PHASES = ("all", "teacher")


class UsageError(Exception):
    """A command-line mistake: reported in one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill_jax.train",
        description="Privileged teacher -> deployable student distillation on MJX/Brax.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--phase", default="all", choices=PHASES, help="which phases to run")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), help="base configuration")
    parser.add_argument("--config", type=pathlib.Path, default=None,
                        help="JSON file of config fields applied over the preset (e.g. experiments/configs/*.json)")
    parser.add_argument("--env", default=None, help="task name (see distill_jax.envs.list_envs()); preset's if omitted")
    parser.add_argument("--seed", type=int, default=None, help="base seed; seed index k uses seed + k")
    parser.add_argument("--num-seeds", type=int, default=None, help="independent teachers/students trained by vmap")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="run directory (default runs/<time>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field, e.g. ppo.num_envs=512 (repeatable)")
    return parser


def resolve_config(args: argparse.Namespace) -> RunConfig:
    config = PRESETS[args.preset]
    if args.config is not None:
        if not args.config.is_file():
            raise UsageError(f"--config {args.config}: no such file")
        try:
            config = replace_fields(config, json.loads(args.config.read_text()))
        except json.JSONDecodeError as e:
            raise UsageError(f"--config {args.config}: not valid JSON ({e})") from e
    for name, value in (("env", args.env), ("seed", args.seed), ("num_seeds", args.num_seeds)):
        if value is not None:
            config = dataclasses.replace(config, **{name: value})
    for assignment in args.overrides:
        config = apply_override(config, assignment)
    config.validate()
    return config


def make_env(config: RunConfig):
    from distill_jax.envs import get_env, list_envs

    if config.env not in list_envs():
        raise UsageError(f"unknown environment {config.env!r}; valid names: {list_envs()}")
    try:
        return get_env(config.env, **dict(config.env_overrides))
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from e


class MetricsLog:
    """Appends one JSON line per iteration and prints a progress line per compiled call."""

    def __init__(self, path: pathlib.Path, phase: str, total_updates: int):
        self.path, self.phase, self.total = path, phase, total_updates
        self.start = time.perf_counter()

    def __call__(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"phase": self.phase, **row}) + "\n")
        if "seconds" not in row:
            return
        ret = sum(row.get("episode_return", [0.0])) / max(len(row.get("episode_return", [0.0])), 1)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / row["update"] * (self.total - row["update"])
        print(f"[{self.phase}] update {row['update']}/{self.total}  env steps {row['env_steps']:,}  "
              f"{row['env_steps_per_second']:,.0f} steps/s  return {ret:.1f}  loss {sum(row['loss']) / len(row['loss']):.4f}  "
              f"ETA {eta:.0f}s", flush=True)


def run(config: RunConfig, phase: str, out: pathlib.Path) -> dict[str, Any]:
    """Runs the requested phases; returns the evaluation report (empty for ``teacher``)."""
    from distill_jax.distill.phase import distill_student
    from distill_jax.distill.update import FrozenTeacher
    from distill_jax.ppo.teacher import train_teacher
    from distill_jax.report import schema_in_force, write_eval

    env = make_env(config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(config), indent=2, sort_keys=True))
    (out / "schema.json").write_text(schema_in_force(env.schema, config).to_json())
    (out / "env_fingerprint.json").write_text(json.dumps(env.fingerprint(), indent=2, sort_keys=True, default=str))
    metrics = out / "metrics.jsonl"

    teacher = train_teacher(env, config.ppo, seed=config.seed, num_seeds=config.num_seeds,
                            log_fn=MetricsLog(metrics, "teacher", config.ppo.num_updates))
    if phase == "teacher":
        return {}
    frozen = FrozenTeacher(teacher.state.params["actor"], teacher.state.obs_stats)
    student = distill_student(env, teacher.nets.actor, frozen, config.distill, seed=config.seed + 100,
                              log_fn=MetricsLog(metrics, "distill", config.distill.num_updates))
    return write_eval(out, env, config, teacher, student)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args)
        out = args.out or pathlib.Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"--out {out}: directory exists and is not empty")
        start = time.perf_counter()
        report = run(config, args.phase, out)
    except (UsageError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report:
        print(report["table"])
        print(f"leak audit: {'PASSED' if report['leak_passed'] else 'FAILED'}")
    print(f"artifacts in {out}/ ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

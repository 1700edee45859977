"""Command line: ``python -m distill_jax.train`` runs teacher → distill → eval → export.

With no arguments it runs every phase on the fast CPU task (``cartpole``) with
the ``default`` preset and ends with the teacher-vs-student table, the leak
audit verdict and the artifact directory (layout: :mod:`distill_jax.run.pipeline`).

Examples::

    python -m distill_jax.train --preset smoke --out runs/smoke
    python -m distill_jax.train --phase teacher --out runs/a --set ppo.total_env_steps=200000
    python -m distill_jax.train --phase distill --from runs/a --out runs/a-gru --set distill.student.kind=gru
    python -m distill_jax.train --phase eval --from runs/a-gru
    python -m distill_jax.train --resume runs/a          # continue a killed run
    python -m distill_jax.train --resume runs/a --set ppo.total_env_steps=400000   # train it longer
    python -m distill_jax.train --sweep distill.objective.ent_coef=0,0.01,0.1     # three students, one program
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any

from distill_jax.run import compile_cache
from distill_jax.config import ConfigError, RunConfig, apply_override, parse_sweep, replace_fields, to_dict
from distill_jax.run.presets import NAMES as PRESET_NAMES
from distill_jax.run.presets import preset
from distill_jax.run.wall_clock import WALL_CLOCK_FILE, WallClock

PHASES = ("all", "teacher", "baseline", "distill", "oracle", "eval", "export")
# What --phase all runs, in order; the reference policies only where the config enables them. The
# export comes before the evaluation, whose diagnosis reads the export's check.
ALL_PHASES = ("teacher", "baseline", "distill", "oracle", "export", "eval")


class UsageError(Exception):
    """A command-line mistake: reported in one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill_jax.train",
        description="Privileged teacher -> deployable student distillation on MJX/Brax. "
        "Runs the selected phases and writes a run directory (config, schema, env fingerprint, "
        "checkpoints, metrics.jsonl, eval.json/eval.md, exported student, plots, README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--phase", default="all", choices=PHASES,
                        help="phase to run; 'all' runs teacher, distill, export and eval in order, with the "
                        "deployable-only baseline and the oracle student where the config enables them "
                        "(baseline.enabled, oracle.enabled); 'baseline' and 'oracle' train them into an "
                        "existing run (--from RUN)")
    parser.add_argument("--preset", default="default", choices=PRESET_NAMES,
                        help="base configuration: 'default' (CPU, minutes), 'smoke' (every phase, tiny), "
                        "'gpu' (one GPU, per --env)")
    parser.add_argument("--config", type=pathlib.Path, default=None,
                        help="JSON file of config fields applied over the preset (e.g. experiments/configs/*.json)")
    parser.add_argument("--env", default=None, help="task name (see distill_jax.envs.list_envs()); preset's if omitted")
    parser.add_argument("--seed", type=int, default=None, help="base seed; seed index k uses seed + k (preset's: 0)")
    parser.add_argument("--num-seeds", type=int, default=None,
                        help="independent teacher/student pairs trained in one program by vmap (preset's: 1)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="new run directory (default: runs/<date-time>, or the --from run for distill/eval/export)")
    parser.add_argument("--from", dest="source", type=pathlib.Path, default=None,
                        help="existing run directory or checkpoint (e.g. RUN/checkpoints/teacher/40) "
                        "that the distill, eval and export phases read")
    parser.add_argument("--resume", type=pathlib.Path, default=None, metavar="RUN_DIR",
                        help="continue a killed run from its newest checkpoints, with its recorded config "
                        "(--set may raise its budgets, ppo/distill.total_env_steps, or change coefficients that are "
                        "not swept)")
    parser.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="SECTION.FIELD=V1,V2,...",
                        help="train every value of a float coefficient (e.g. distill.objective.ent_coef=0,0.01,0.1) "
                        "for every seed, all in one vmapped program; repeat for a grid; the evaluation scores "
                        "every member")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field, e.g. ppo.num_envs=512 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress display (metrics.jsonl is still written)")
    parser.add_argument("--video", action="store_true",
                        help="after the phases, render the first held-out panel episode, teacher and student side "
                        "by side, to RUN/videos/ (MP4 and GIF; as python -m distill_jax.render RUN)")
    parser.add_argument("--xla-cache", default=None, metavar="DIR|off",
                        help="persistent XLA compilation cache, so a resume or a re-run does not compile again "
                        f"(if omitted: ${compile_cache.ENV_VAR}, else $XDG_CACHE_HOME or ~/.cache, then "
                        "/distill_jax/xla; a cache already set for JAX, JAX_COMPILATION_CACHE_DIR, is kept; "
                        f"capped at {compile_cache.DEFAULT_MAX_BYTES / 2**30:g} GiB, least recently used first, "
                        f"unless {compile_cache.MAX_SIZE_ENV_VAR} is set)")
    return parser


def open_xla_cache(flag: str | None) -> str | None:
    """Turns on the persistent compilation cache: ``--xla-cache``, else the default directory.

    Returns the directory in force (``None``: none). A default directory that cannot be
    created only costs the cache, with a note; one given on the command line is a usage error.
    """
    try:
        return compile_cache.enable(compile_cache.default_dir() if flag is None else flag)
    except compile_cache.CacheDirError as e:
        if flag is not None:
            raise UsageError(f"--xla-cache {flag}: {e}") from e
        print(f"note: {e}; compiling without a persistent cache", file=sys.stderr)
        return None


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--config``, ``--env``, ``--seed``, ``--num-seeds``, ``--sweep`` and ``--set`` as one nested dict."""
    changes: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise UsageError(f"--config {args.config}: no such file")
        try:
            changes = json.loads(args.config.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"--config {args.config}: not valid JSON ({e})") from e
        if not isinstance(changes, dict):
            raise UsageError(f"--config {args.config}: must hold a JSON object of config fields")
    for name, value in (("env", args.env), ("seed", args.seed), ("num_seeds", args.num_seeds)):
        if value is not None:
            changes[name] = value
    if args.sweeps:
        changes["sweep"] = [list(parse_sweep(assignment)) for assignment in args.sweeps]
    # Apply the --set assignments to an empty shell of the same shape, so they merge with --config.
    for assignment in args.overrides:
        probe = to_dict(apply_override(RunConfig(), assignment))
        path = assignment.split("=", 1)[0].strip().split(".")
        node, value = changes, probe
        for part in path[:-1]:
            node = node.setdefault(part, {})
            value = value[part]
        node[path[-1]] = value[path[-1]]
    return changes


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The config of a new run: preset (for ``--env``) + ``--config`` + flags + ``--set``."""
    config = replace_fields(preset(args.preset, args.env), config_overrides(args))
    config.validate()
    return config


def _print_result(report: dict[str, Any] | None, exported: dict[str, Any] | None, out: pathlib.Path,
                  seconds: float, clock: WallClock, xla_cache: str | None) -> None:
    if report is not None:
        print(report["table"])
        print(f"leak audit: {'PASSED' if report['leak_passed'] else 'FAILED'}")
    if exported is not None:
        print(f"exported student: {exported['directory']} (bit-identical to in-process: "
              f"{exported['bit_identical_to_in_process']})")
    print(f"wall clock: {clock.summary()} (XLA cache: {xla_cache or 'off'})")
    print(f"artifacts in {out}/ ({seconds:.0f} s):")
    for path in sorted(out.iterdir()):
        print(f"  {path.name}{'/' if path.is_dir() else ''}")


def open_target(args: argparse.Namespace):
    """The run directory the requested phases work in (created, resumed or read); raises on bad usage."""
    from distill_jax.run import pipeline

    given = [flag for flag, value in (("--config", args.config), ("--env", args.env), ("--seed", args.seed),
                                      ("--num-seeds", args.num_seeds)) if value is not None]
    if args.resume is not None:
        if args.source is not None or args.out is not None:
            raise UsageError("--resume RUN_DIR continues that directory; do not combine it with --from/--out")
        given += ["--sweep"] if args.sweeps else []
        if given or args.preset != "default":
            raise UsageError("--resume uses the run's recorded config.json (--set may raise its budgets "
                             f"{list(pipeline.BUDGET_FIELDS)} or change coefficients that are not swept); drop "
                             f"{given + (['--preset'] if args.preset != 'default' else [])}")
        if not args.resume.is_dir():
            raise UsageError(f"--resume {args.resume}: no such run directory")
        run = pipeline.open_run(args.resume)
        return pipeline.change_on_resume(run, config_overrides(args)) if args.overrides else run
    if args.phase in ("all", "teacher"):
        if args.source is not None:
            raise UsageError(f"--from is read by the distill, eval and export phases, not by --phase {args.phase}")
        config = resolve_config(args)
        out = args.out or pathlib.Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        return pipeline.create_run(out, config)
    if args.source is None:
        raise UsageError(f"--phase {args.phase} needs --from RUN_DIR (a run directory or a checkpoint in one)")
    if args.preset != "default":
        raise UsageError("--preset applies to new runs; with --from the run's recorded config is the base")
    changes = config_overrides(args)
    source = pipeline.open_run(args.source)
    if args.out is None:
        if changes:
            raise UsageError("changing settings of an existing run needs a new directory: add --out NEW_DIR")
        return source
    # A new student needs only the teacher; re-evaluating or exporting needs the student too.
    copy = (pipeline.TEACHER_DIR,) if args.phase == "distill" else (pipeline.TEACHER_DIR, pipeline.STUDENT_DIR)
    return pipeline.fork_run(source, args.out, changes, copy=copy)


def teacher_step_of(source: pathlib.Path | None) -> int | None:
    """The teacher checkpoint step named by ``--from RUN/checkpoints/teacher/<step>``, if any."""
    if source is not None and source.name.isdigit() and source.parent.name == "teacher":
        return int(source.name)
    return None


def run_phases(run, phase: str, *, resume: bool, quiet: bool, teacher_step: int | None = None,
               clock: WallClock | None = None) -> dict[str, Any]:
    """Runs ``phase`` (or all) in ``run``; returns ``{"report", "exported"}`` (either may be ``None``).

    Each stage's wall clock goes to ``clock`` (default: a new one on ``run/wall_clock.jsonl``).
    """
    from distill_jax.run import pipeline
    from distill_jax.run.plots import plot_run

    clock = clock or WallClock(run.path / WALL_CLOCK_FILE)
    enabled = {"baseline": run.config.baseline.enabled, "oracle": run.config.oracle.enabled}
    phases = tuple(p for p in ALL_PHASES if enabled.get(p, True)) if phase == "all" else (phase,)
    teacher = baseline = student = oracle = report = exported = None
    if "teacher" in phases:
        with clock.stage("teacher"):
            teacher = pipeline.teacher_phase(run, resume=resume, quiet=quiet, clock=clock)
    if "baseline" in phases:
        with clock.stage("baseline"):
            baseline = pipeline.teacher_phase(run, resume=resume, quiet=quiet, clock=clock, phase="baseline")
    if "distill" in phases:
        with clock.stage("distill"):
            if teacher is None:
                teacher = pipeline.restore_teacher(run, step=teacher_step)
            student = pipeline.distill_phase(run, teacher, resume=resume, quiet=quiet, clock=clock)
    if "oracle" in phases:
        with clock.stage("oracle"):
            teacher = teacher or pipeline.restore_teacher(run, step=teacher_step)
            oracle = pipeline.distill_phase(run, teacher, resume=resume, quiet=quiet, clock=clock, phase="oracle")
    if "export" in phases:
        with clock.stage("export"):
            student = student or pipeline.restore_student(run)
            exported = pipeline.export_phase(run, student)
    if "eval" in phases:
        with clock.stage("eval"):  # the held-out panel for every policy, the suite and the leak audit
            teacher = teacher or pipeline.restore_teacher(run)
            student = student or pipeline.restore_student(run)
            baseline = baseline or pipeline.restore_reference(run, "baseline")
            oracle = oracle or pipeline.restore_reference(run, "oracle")
            report = pipeline.eval_phase(run, teacher, student, baseline=baseline, oracle=oracle)
    with clock.stage("plots"):
        plot_run(run.path)
    pipeline.write_summary(run, report, exported, clock)
    return {"report": report, "exported": exported}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.video:  # MuJoCo reads MUJOCO_GL on import: check the GL context before the pipeline imports MuJoCo
        from distill_jax.run.render import RenderError, check_gl

        try:
            check_gl()
        except RenderError as e:
            print(f"error: --video: {e}", file=sys.stderr)
            return 2
    from distill_jax.run import checkpoint, pipeline
    from distill_jax.loop import NonFiniteError
    from distill_jax.schema import SchemaError

    start = time.perf_counter()
    try:
        xla_cache = open_xla_cache(args.xla_cache)
        run = open_target(args)
        clock = WallClock(run.path / WALL_CLOCK_FILE)
        clock.record("setup", time.perf_counter() - start)  # the config, the run directory, the env
        result = run_phases(run, args.phase, resume=args.resume is not None, quiet=args.quiet,
                            teacher_step=teacher_step_of(args.source), clock=clock)
    except (UsageError, ConfigError, pipeline.RunError, SchemaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (checkpoint.CheckpointError, NonFiniteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _print_result(result["report"], result["exported"], run.path, time.perf_counter() - start, clock, xla_cache)
    if args.video:
        from distill_jax.run.render import render_run

        try:
            with clock.stage("video"):
                video = render_run(run.path)["episodes"][0]
        except (RenderError, pipeline.RunError) as e:  # e.g. --phase teacher: no student to show yet
            print(f"error: --video: {e}", file=sys.stderr)
            return 2
        print(f"video: {run.path / 'videos' / video['mp4']} ({video['frames']} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

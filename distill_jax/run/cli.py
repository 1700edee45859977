"""Command line: ``python -m distill_jax.train`` runs teacher → distill → eval → export.

With no arguments it runs every phase on the fast CPU task where privilege matters
(``cartpole_hidden``: teacher, deployable-only baseline, student) with the ``default`` preset and
ends with the teacher-vs-student table, the leak audit verdict and the artifact directory
(layout: :mod:`distill_jax.run.pipeline`).

What it prints: a first line before JAX is imported, then each step, each compilation (or load
from the XLA cache), the training progress and a heartbeat whenever a step runs long
(:mod:`distill_jax.run.console`); third-party noise is kept out (:mod:`distill_jax.run.noise`,
``--verbose`` shows it). Every expected failure ends in one ``error: ...`` line on stderr and
exit status 2 (1 when training itself failed); Ctrl-C ends in one line naming the command that
continues the run (exit status 130).

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
import contextlib
import dataclasses
import json
import os
import pathlib
import shlex
import sys
import time
import traceback
from typing import Any, Callable, Iterator

from distill_jax.config import ConfigError, RunConfig, apply_override, parse_sweep, replace_fields, to_dict
from distill_jax.run import compile_cache, distributed, noise
from distill_jax.run.console import Console
from distill_jax.run.presets import NAMES as PRESET_NAMES
from distill_jax.run.presets import preset
from distill_jax.run.provenance import CompileClock
from distill_jax.run.wall_clock import WALL_CLOCK_FILE, WallClock
from distill_jax.schema import SchemaError

PROG = "python -m distill_jax.train"
PHASES = ("all", "teacher", "baseline", "distill", "oracle", "eval", "export")
# What --phase all runs, in order; the reference policies only where the config enables them. The
# export comes before the evaluation, whose diagnosis reads the export's check.
ALL_PHASES = ("teacher", "baseline", "distill", "oracle", "export", "eval")
TRAINING_PHASES = ("teacher", "baseline", "distill", "oracle")
EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 1, 2, 130
EXAMPLES = f"""examples:
  every phase with a tiny budget (about a minute on 2 CPU cores):
    {PROG} --preset smoke --out runs/smoke
  the teacher only, then a GRU student from it in a new directory, then its evaluation:
    {PROG} --phase teacher --out runs/a
    {PROG} --phase distill --from runs/a --out runs/a-gru --set distill.student.kind=gru
    {PROG} --phase eval --from runs/a-gru
  continue a stopped run; train a finished run's student longer:
    {PROG} --resume runs/a
    {PROG} --resume runs/a --set distill.total_env_steps=400000
  sized for one GPU; three students in one program:
    {PROG} --preset gpu --env quadruped_rough
    {PROG} --sweep distill.objective.ent_coef=0,0.01,0.1

a task of your own: register it with distill_jax.envs.register_env(name, factory, description) in a
script that then calls distill_jax.train.main(["--env", name, ...]); the factory returns an Env
(the built-in ones are in distill_jax/envs/registry.py)."""


class UsageError(Exception):
    """A command-line mistake: reported in one line, exit status 2."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and appends ``(default: X)`` where a default exists and the help
    does not already say what an omitted option means."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text or "omitted" in text:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """``--help`` lists the registered tasks (importing the registry only then); a usage mistake is one line."""

    def format_help(self) -> str:
        return super().format_help() + "\n" + tasks_text() + "\n\n" + EXAMPLES + "\n"

    def error(self, message: str) -> None:  # argparse's usage dump is longer than the mistake
        self.exit(EXIT_REFUSED, f"error: {message} (see {PROG} --help)\n")


def tasks_text() -> str:
    """The registered tasks, one per line, with their descriptions."""
    with noise.silenced():
        noise.import_mjx_quietly()
        from distill_jax.envs import describe_envs

        tasks = describe_envs()
    width = max(map(len, tasks), default=0)
    return "tasks (--env):\n" + "\n".join(f"  {name:<{width}}  {text}" for name, text in tasks.items())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Privileged teacher -> deployable student distillation on MJX/Brax. "
        "Runs the selected phases and writes a run directory (config, schema, env fingerprint, "
        "checkpoints, metrics.jsonl, eval.json/eval.md, exported student, plots, README.md).",
        formatter_class=HelpFormatter,
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
    parser.add_argument("--env", default=None, help="task name (listed below); the preset's if omitted (default: cartpole_hidden; "
                        "smoke and gpu: cartpole)")
    parser.add_argument("--seed", type=int, default=None, help="base seed; seed index k uses seed + k; 0 if omitted")
    parser.add_argument("--num-seeds", type=int, default=None,
                        help="independent teacher/student pairs trained in one program by vmap; 1 if omitted")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="new run directory; if omitted: runs/<date-time>, or the --from run for "
                        "distill/eval/export")
    parser.add_argument("--from", dest="source", type=pathlib.Path, default=None,
                        help="existing run directory, or a checkpoint in one: RUN/checkpoints/teacher/<update> for "
                        "--phase distill, RUN/checkpoints/student for eval and export")
    parser.add_argument("--resume", type=pathlib.Path, default=None, metavar="RUN_DIR",
                        help="continue a stopped run from its newest checkpoints, with its recorded config "
                        "(--set may raise its budgets, ppo/distill.total_env_steps, or change coefficients that are "
                        "not swept); a finished run says so")
    parser.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="SECTION.FIELD=V1,V2,...",
                        help="train every value of a float coefficient (e.g. distill.objective.ent_coef=0,0.01,0.1) "
                        "for every seed, all in one vmapped program; repeat for a grid; the evaluation scores "
                        "every member")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field, e.g. ppo.num_envs=512 (repeatable)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the result (no steps, progress or heartbeat; metrics.jsonl is still written)")
    parser.add_argument("--verbose", action="store_true",
                        help="show third-party warnings and the traceback of a failure")
    parser.add_argument("--video", action="store_true",
                        help="after the phases, render the first held-out panel episode, teacher and student side "
                        "by side, to RUN/videos/ (MP4 and GIF; as python -m distill_jax.render RUN)")
    group = parser.add_argument_group(
        "several processes", "one run over the devices of several processes (README.md, 'More than one machine'); "
        "process 0 writes the run directory, every process its checkpoint shards")
    group.add_argument("--local-processes", type=int, default=None, metavar="N",
                       help="start N processes of this command on this machine, on the CPU, joined through a free "
                       "local port (development and CI); process 0's output is shown, the others' go to RUN/logs/")
    group.add_argument("--devices-per-process", type=int, default=None, metavar="M",
                       help="with --local-processes: M forced CPU devices in each process; 1 if omitted")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help=f"process 0's address, where every process joins (or ${distributed.ENV_COORDINATOR})")
    group.add_argument("--num-processes", type=int, default=None, metavar="N",
                       help=f"how many processes take part (or ${distributed.ENV_NUM_PROCESSES})")
    group.add_argument("--process-id", type=int, default=None, metavar="I",
                       help=f"this process's index, 0 to N-1 (or ${distributed.ENV_PROCESS_ID})")
    group.add_argument("--distributed", action="store_true",
                       help="let JAX detect the processes (SLURM, Open MPI, Kubernetes, Cloud TPU); implied in a "
                       "SLURM or Open MPI job of several tasks")
    group.add_argument("--coordinator-timeout", type=int, default=distributed.DEFAULT_TIMEOUT_S, metavar="SECONDS",
                       help="how long to wait for the coordinator and for every process to join")
    parser.add_argument("--device-hour-price", type=float, default=None, metavar="PRICE",
                        help="price of one device-hour: the command prints, and eval.json and README.md record, "
                        "what its devices cost (device-hours are always recorded)")
    parser.add_argument("--xla-cache", default=None, metavar="DIR|off",
                        help="persistent XLA compilation cache, so a resume or a re-run does not compile again; "
                        f"if omitted: ${compile_cache.ENV_VAR}, else $XDG_CACHE_HOME or ~/.cache, then "
                        "/distill_jax/xla; a cache already set for JAX, JAX_COMPILATION_CACHE_DIR, is kept; "
                        f"capped at {compile_cache.DEFAULT_MAX_BYTES / 2**30:g} GiB, least recently used first, "
                        f"unless {compile_cache.MAX_SIZE_ENV_VAR} is set")
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
        changes.pop("provenance", None)  # a run's config.json: what produced it, not a setting
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
    """The config of a new run: preset (for the task of ``--env``, else of ``--config``) + ``--config``
    + flags + ``--set``."""
    changes = config_overrides(args)
    env = changes.get("env")  # anything but a name is refused by validate(), after the preset
    config = replace_fields(preset(args.preset, env if isinstance(env, str) else None), changes)
    config.validate()
    return config


def unusable_out_dir(path: pathlib.Path) -> str | None:
    """Why a new run directory cannot be made at ``path`` (``None``: it can); creates nothing."""
    if path.exists():
        if not path.is_dir():
            return "exists and is not a directory"
        if any(path.iterdir()):
            return "exists and is not empty (use --resume to continue a run there)"
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        return f"cannot create the run directory: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot create the run directory: {existing} is not writable"
    return None


def checkpoint_named(source: pathlib.Path | None) -> tuple[str | None, int | None]:
    """``(role, update)`` of a ``--from`` path: ``RUN/checkpoints/teacher/40`` -> ``("teacher", 40)``,
    ``RUN/checkpoints/student`` -> ``("student", None)``, a run directory -> ``(None, None)``."""
    if source is None:
        return None, None
    if source.name.isdigit() and source.parent.name in ("teacher", "student"):
        return source.parent.name, int(source.name)
    if source.name in ("teacher", "student") and source.parent.name == "checkpoints":
        return source.name, None
    return None, None


def teacher_step_of(source: pathlib.Path | None) -> int | None:
    """The teacher checkpoint step named by ``--from RUN/checkpoints/teacher/<step>``, if any."""
    role, step = checkpoint_named(source)
    return step if role == "teacher" else None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a command will do, decided before anything heavy is imported.

    Attributes:
      header: the first line printed.
      phases: the phases requested, in order.
      out: the run directory a new run or a fork creates (``None``: it works in an existing one).
      config: a new run's config (``None`` for ``--resume`` and ``--from``).
    """

    header: str
    phases: tuple[str, ...]
    out: pathlib.Path | None = None
    config: RunConfig | None = None


def plan_command(args: argparse.Namespace) -> Plan:
    """Checks what can be checked without JAX (flag combinations, the config, ``--out``) and names the run.

    Raises:
      UsageError, ConfigError: the command is refused; nothing has been written.
    """
    phases = ALL_PHASES if args.phase == "all" else (args.phase,)
    given = [flag for flag, value in (("--config", args.config), ("--env", args.env), ("--seed", args.seed),
                                      ("--num-seeds", args.num_seeds)) if value is not None]
    if args.resume is not None:
        if args.source is not None or args.out is not None:
            raise UsageError("--resume RUN_DIR continues that directory; do not combine it with --from/--out")
        given += ["--sweep"] if args.sweeps else []
        if given or args.preset != "default":
            raise UsageError("--resume uses the run's recorded config.json (--set may raise its budgets, "
                             "*.total_env_steps, or change coefficients that are not swept); drop "
                             f"{given + (['--preset'] if args.preset != 'default' else [])}")
        if not args.resume.is_dir():
            raise UsageError(f"--resume {args.resume}: no such run directory")
        return Plan(f"distill_jax: resuming {args.resume}", phases)
    if args.phase in ("all", "teacher"):
        if args.source is not None:
            raise UsageError(f"--from is read by the distill, eval and export phases, not by --phase {args.phase}")
        config = resolve_config(args)
        out = args.out or pathlib.Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        problem = unusable_out_dir(out)
        if problem:
            raise UsageError(f"--out {out}: {problem}")
        phases = phases_of(args.phase, config)
        return Plan(f"distill_jax: {config.env}, preset {args.preset} -> {out} ({', '.join(phases)})", phases,
                    out, config)
    if args.source is None:
        raise UsageError(f"--phase {args.phase} needs --from RUN_DIR (a run directory or a checkpoint in one)")
    if args.preset != "default":
        raise UsageError("--preset applies to new runs; with --from the run's recorded config is the base")
    role, step = checkpoint_named(args.source)
    if args.phase == "distill" and role == "student":
        raise UsageError(f"--phase distill learns from a teacher; --from {args.source} is a student checkpoint "
                         "(give the run directory, or RUN/checkpoints/teacher/<update>)")
    if args.phase in ("eval", "export") and (role == "teacher" or step is not None):
        what = "evaluates the run's student with the teacher it learned from" if args.phase == "eval" else \
            "exports the run's finished student"
        raise UsageError(f"--phase {args.phase} {what}; --from {args.source} names a {role} checkpoint "
                         "(give the run directory instead)")
    if args.out is not None:
        problem = unusable_out_dir(args.out)
        if problem:
            raise UsageError(f"--out {args.out}: {problem}")
    arrow = f" -> {args.out}" if args.out is not None else ""
    return Plan(f"distill_jax: {args.phase} from {args.source}{arrow}", phases, args.out)


def open_target(args: argparse.Namespace, plan: Plan):
    """The run directory the requested phases work in (created, resumed or read); raises on bad usage.

    Every checkpoint the phases will restore is checked before anything is written.
    """
    from distill_jax.run import pipeline

    if args.resume is not None:
        run = pipeline.open_run(args.resume)
        pipeline.check_processes(run, hint=distributed.relaunch_flags())
        pipeline.check_devices(run.config)
        pipeline.verify_inputs(run, plan.phases, resume=True)
        return pipeline.change_on_resume(run, config_overrides(args)) if args.overrides else run
    if plan.config is not None:
        return pipeline.create_run(plan.out, plan.config)
    changes = config_overrides(args)
    source = pipeline.open_run(args.source)
    pipeline.verify_inputs(source, plan.phases, resume=False, teacher_step=teacher_step_of(args.source))
    if args.out is None:
        if changes:
            raise UsageError("changing settings of an existing run needs a new directory: add --out NEW_DIR")
        return source
    # A new student needs only the teacher; re-evaluating or exporting needs the student too, and the
    # evaluation scores the baseline and the oracle student beside it where the source trained them.
    copy = ((pipeline.TEACHER_DIR,) if args.phase == "distill" else
            (pipeline.TEACHER_DIR, pipeline.STUDENT_DIR, pipeline.BASELINE_DIR, pipeline.ORACLE_DIR))
    return pipeline.fork_run(source, args.out, changes, copy=copy)


def open_shared(args: argparse.Namespace, plan: Plan) -> tuple[Any, tuple[str, ...]]:
    """The run directory and the phases to run in it (:func:`open_target`; with ``--resume`` of
    every phase, the unfinished ones).

    With several processes process 0 alone opens (creates, forks, changes) the directory and
    decides the phases; the others wait for its decision and open what it wrote, so no process
    reads a file while process 0 writes it. When process 0 fails, the others stop with one line.

    Raises:
      distributed.DistributedError: (not process 0) process 0 could not open the run directory.
    """
    from distill_jax.run import pipeline

    if distributed.is_primary():
        try:
            run = open_target(args, plan)
            phases = phases_of(args.phase, run.config)
            if args.resume is not None and args.phase == "all":
                phases = pipeline.unfinished_phases(run, phases)
        except BaseException:
            distributed.share("run", "")  # the others stop instead of waiting
            raise
        distributed.share("run", json.dumps({"path": str(run.path), "phases": list(phases)}))
        return run, phases
    shared = distributed.share("run")
    if not shared:
        raise distributed.DistributedError("process 0 could not open the run directory; its output says why")
    decided = json.loads(shared)
    return pipeline.open_run(pathlib.Path(decided["path"])), tuple(decided["phases"])


def phases_of(phase: str, config: RunConfig) -> tuple[str, ...]:
    """The phases ``--phase phase`` runs under ``config``: ``all`` is :data:`ALL_PHASES` less the
    reference policies the config does not enable."""
    if phase != "all":
        return (phase,)
    enabled = {"baseline": config.baseline.enabled, "oracle": config.oracle.enabled}
    return tuple(p for p in ALL_PHASES if enabled.get(p, True))


def run_phases(run, phases: tuple[str, ...] | str, *, resume: bool, quiet: bool, teacher_step: int | None = None,
               clock: WallClock | None = None, console: Console | None = None,
               between: Callable[[], None] = lambda: None, compiles: CompileClock | None = None,
               provenance: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Runs ``phases`` (a tuple, or one ``--phase`` name) in ``run``; returns ``{"report", "exported"}``
    (either may be ``None``).

    Each stage's wall clock goes to ``clock`` (default: a new one on ``run/wall_clock.jsonl``); each
    step is told to ``console``; ``between()`` runs between stages (:meth:`Interrupts.check`);
    ``compiles`` sums each stage's compile seconds; ``provenance()`` gives the section recorded in
    ``eval.json`` and the run's ``README.md``.

    With several processes every one trains and restores (both collective); then process 0 alone
    exports, evaluates and draws while the others wait for it, and they all return together.
    """
    from distill_jax.run import pipeline
    from distill_jax.run.plots import plot_run

    console = console or Console(enabled=False)
    clock = clock or WallClock(run.path / WALL_CLOCK_FILE)
    primary = distributed.is_primary()
    if isinstance(phases, str):
        phases = phases_of(phases, run.config)
    teacher = baseline = student = oracle = report = exported = None

    def frozen_teacher(phase: str):
        if teacher is not None:
            console.step(phase, "handing the trained teacher over, frozen")
            return teacher
        console.step(phase, "restoring the teacher to learn from")
        return pipeline.restore_teacher(run, step=teacher_step)

    def to_report() -> None:  # every policy the export and the evaluation read, restored by every process
        nonlocal teacher, student, baseline, oracle
        if student is None or ("eval" in phases and teacher is None):
            console.step("export" if "export" in phases else "eval", "restoring the policies to "
                         + ("export and score" if {"export", "eval"} <= set(phases) else
                            "export" if "export" in phases else "score"))
        student = student or pipeline.restore_student(run)
        if "eval" in phases:
            teacher = teacher or pipeline.restore_teacher(run)
            baseline = baseline or pipeline.restore_reference(run, "baseline")
            oracle = oracle or pipeline.restore_reference(run, "oracle")

    compiles = compiles or CompileClock()

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:  # its wall clock and its compile seconds
        with clock.stage(name), compiles.stage(name):
            yield

    train = dict(resume=resume, quiet=quiet, clock=clock, console=console)
    if "teacher" in phases:
        with stage("teacher"):
            teacher = pipeline.teacher_phase(run, **train)
    between()
    if "baseline" in phases:
        with stage("baseline"):
            baseline = pipeline.teacher_phase(run, phase="baseline", **train)
    between()
    if "distill" in phases:
        with stage("distill"):
            teacher = frozen_teacher("distill")
            student = pipeline.distill_phase(run, teacher, **train)
    between()
    if "oracle" in phases:
        with stage("oracle"):
            teacher = frozen_teacher("oracle")
            oracle = pipeline.distill_phase(run, teacher, phase="oracle", **train)
    between()
    try:
        if "export" in phases:
            with stage("export"):
                to_report()
                if primary:
                    console.step("export", "writing the deployable student",
                                 f"{run.path / pipeline.EXPORT_DIR}, checked against the in-process one")
                    exported = pipeline.export_phase(run, student)
        between()
        if "eval" in phases:
            with stage("eval"):  # the held-out panel for every policy, the suite and the leak audit
                to_report()
                if primary:
                    report = pipeline.eval_phase(run, teacher, student, baseline=baseline, oracle=oracle,
                                                 console=console, provenance=provenance)
        between()
        if primary:
            with stage("plots"):
                console.step("plots", "drawing the plots", f"{run.path / 'plots'}/*.png")
                plot_run(run.path)
            pipeline.write_summary(run, report, exported, clock, provenance() if provenance else None)
    finally:  # the others wait here while process 0 writes, and leave with it
        distributed.barrier("reports written")
    return {"report": report, "exported": exported}


def complete_line(run) -> str:
    """What ``--resume`` of a finished run says instead of running anything."""
    cfg, q = run.config, shlex.quote(str(run.path))
    longer = cfg.distill.total_env_steps * 2
    return (f"{run.path} is complete (teacher {cfg.ppo.num_updates}/{cfg.ppo.num_updates} updates, student "
            f"{cfg.distill.num_updates}/{cfg.distill.num_updates}, evaluated, exported); nothing to resume. "
            f"To train the student longer: {PROG} --resume {q} --set distill.total_env_steps={longer}{_relaunch()}; "
            f"to re-evaluate: {PROG} --phase eval --from {q}")


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
    tensorboard = out / "tensorboard"
    if tensorboard.is_dir() and any(tensorboard.iterdir()):
        print(f"curves: tensorboard --logdir {shlex.quote(str(tensorboard))}")


@dataclasses.dataclass
class _Progress:
    """How far a command got, for the line that reports an interruption."""

    run: Any = None  # the run directory, once created or opened


def interrupted_line(args: argparse.Namespace, plan: Plan | None, got: _Progress) -> str:
    """The one line Ctrl-C ends with: what to run to continue."""
    if got.run is None:
        return "interrupted before the run directory was written; nothing to continue"
    path = shlex.quote(str(got.run.path))
    training = plan is not None and bool(set(TRAINING_PHASES) & set(plan.phases))
    if args.resume is None and not training:
        return f"interrupted; nothing was lost. Run it again with: {PROG} --phase {args.phase} --from {path}"
    if args.resume is None and args.source is not None and got.run.teacher_step is None:
        # A fork holds every teacher checkpoint of its source; which one --from named is recorded
        # only when distillation starts.
        return f"interrupted before distillation started; remove {path} and run the same command again"
    phase = f" --phase {args.phase}" if args.phase != "all" else ""
    return (f"interrupted; the checkpoints written so far are kept. Continue with: {PROG} --resume {path}{phase}"
            f"{_relaunch()}")


def _relaunch() -> str:
    """The flags that start the same processes again (``--local-processes N ...``), or ``""``."""
    flags = distributed.relaunch_flags()
    return f" {flags}" if flags else ""


class Interrupts:
    """Ctrl-C that is not lost: remembered when Python swallows its ``KeyboardInterrupt``.

    A SIGINT that lands while a garbage-collection callback or a destructor runs (JAX registers
    one; measured: Ctrl-C during ``import jax``) ends as an "Exception ignored in ..." report and
    the command went on to the end. Here the signal is also recorded, such reports of it are not
    printed, and :meth:`check` raises it again at the next step. Restored on exit.
    """

    def __init__(self) -> None:
        self.seen = False

    def __enter__(self) -> Interrupts:
        import signal

        self._hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        try:
            self._handler = signal.signal(signal.SIGINT, self._on_signal)
        except ValueError:  # not the main thread: Python delivers signals to the main thread only
            self._handler = None
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        sys.unraisablehook = self._hook
        if self._handler is not None:
            signal.signal(signal.SIGINT, self._handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def _unraisable(self, report: Any) -> None:
        if not isinstance(report.exc_value, KeyboardInterrupt):
            self._hook(report)

    def check(self) -> None:
        """Raises ``KeyboardInterrupt`` if Ctrl-C came and was swallowed."""
        if self.seen:
            raise KeyboardInterrupt


def check_video() -> None:
    """``--video``: refused in one line, before the run directory exists, where MuJoCo cannot render."""
    from distill_jax.run.render import RenderError, check_gl

    try:
        check_gl()
    except RenderError as e:
        raise UsageError(f"--video: {e}") from e


def render_video(run, clock: WallClock, console: Console) -> dict[str, Any]:
    """Renders the first held-out episode, teacher and student side by side; its ``render_run`` entry."""
    from distill_jax.run import pipeline
    from distill_jax.run.render import RenderError, render_run

    console.step("video", "rendering the first held-out episode, teacher and student side by side",
                 str(run.path / "videos"))
    try:
        with clock.stage("video"):
            return render_run(run.path)["episodes"][0]
    except (RenderError, pipeline.RunError) as e:  # e.g. --phase teacher: no student to show yet
        raise UsageError(f"--video: {e}") from e


def _failure_status(error: BaseException) -> int | None:
    """Exit status of an expected failure (one ``error:`` line), ``None`` for anything else.

    The shell's heavy modules are looked up only if imported: one that was not cannot have raised.
    """
    expected: list[tuple[type, int]] = [(UsageError, EXIT_REFUSED), (ConfigError, EXIT_REFUSED),
                                        (SchemaError, EXIT_REFUSED), (distributed.DistributedError, EXIT_REFUSED)]
    for module, name, status in (("distill_jax.run.pipeline", "RunError", EXIT_REFUSED),
                                 ("distill_jax.run.checkpoint", "CheckpointError", EXIT_REFUSED),
                                 ("distill_jax.export", "ExportError", EXIT_REFUSED),
                                 ("distill_jax.loop", "NonFiniteError", EXIT_FAILED)):
        if module in sys.modules:
            expected.append((getattr(sys.modules[module], name), status))
    expected.append((OSError, EXIT_FAILED))  # a disk that filled up or a directory removed mid-run
    return next((status for kind, status in expected if isinstance(error, kind)), None)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.local_processes is not None or args.devices_per_process is not None:
        from distill_jax.run.launch import launch_local

        return launch_local(args, sys.argv[1:] if argv is None else list(argv))
    with noise.silenced(args.verbose):  # also around the error lines: a failure's aftermath stays out
        status = _command(args)
    if status and _joined():
        # A process that stops early must not wait for the others at jax.distributed's shutdown
        # barrier (they may be waiting for it in a collective): leave now, the others follow when
        # the coordination service reports it gone.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _joined() -> bool:
    """Whether this process joined others through ``jax.distributed`` (without importing JAX)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized() and jax.process_count() > 1


def _command(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    console = Console(enabled=not args.quiet)
    plan, got = None, _Progress()
    try:
        plan = plan_command(args)
        layout = distributed.requested(args.coordinator, args.num_processes, args.process_id,
                                       detect=args.distributed, timeout_s=args.coordinator_timeout)
        if args.device_hour_price is not None and not args.device_hour_price >= 0:
            raise UsageError(f"--device-hour-price {args.device_hour_price}: must be a price, 0 or more")
        if args.video:  # MuJoCo reads MUJOCO_GL on import: check the GL context before anything imports MuJoCo
            check_video()
        console.line(plan.header)
        if layout is not None:  # before anything starts JAX's devices (MJX's import does)
            console.step("setup", "joining the other processes" + (
                f": {layout.num_processes} through {layout.coordinator}" if layout.explicit else ""),
                f"up to {layout.timeout_s} s")
            distributed.join(layout)
            if not distributed.is_primary():  # process 0 speaks for all; the others only fail aloud
                console.enabled, args.quiet = False, True
        console.step("setup", "loading JAX, MuJoCo and the task")
        with Interrupts() as interrupts, console:
            if not args.verbose:
                noise.import_mjx_quietly()
            xla_cache = open_xla_cache(args.xla_cache)
            run, phases = open_shared(args, plan)
            got.run = run
            interrupts.check()
            if not phases:  # a --resume of a finished run
                console.close()
                if distributed.is_primary():
                    print(complete_line(run))
                return 0
            clock = WallClock(run.path / WALL_CLOCK_FILE if distributed.is_primary() else os.devnull)
            clock.hold("setup", time.perf_counter() - start)  # the config, the run directory, the env
            compiles = CompileClock()
            result = run_phases(run, phases, resume=args.resume is not None, quiet=args.quiet,
                                teacher_step=teacher_step_of(args.source), clock=clock, console=console,
                                between=interrupts.check, compiles=compiles,
                                provenance=lambda: _provenance(run, start, compiles, args.device_hour_price))
            interrupts.check()
            video = render_video(run, clock, console) if args.video and distributed.is_primary() else None
    except KeyboardInterrupt:
        print(interrupted_line(args, plan, got), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # the error boundary: one line for every expected failure
        status = _failure_status(e)
        if status is None and args.verbose:
            raise
        if args.verbose:
            traceback.print_exc()
        if status is None:
            print(f"error: unexpected {type(e).__name__}: {_one_line(e)} (run again with --verbose for the "
                  "traceback, and please report it)", file=sys.stderr)
            return EXIT_FAILED
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return status
    if not distributed.is_primary():
        return 0
    _print_result(result["report"], result["exported"], run.path, time.perf_counter() - start, clock, xla_cache)
    print(_cost_line(_provenance(run, start, compiles, args.device_hour_price)))
    if video is not None:
        print(f"video: {run.path / 'videos' / video['mp4']} ({video['frames']} frames)")
    return 0


def _provenance(run, start: float, compiles: CompileClock, price: float | None) -> dict[str, Any]:
    from distill_jax.run import pipeline

    return pipeline.provenance_section(run, wall_seconds=time.perf_counter() - start,
                                       compile_seconds=compiles.seconds, price_per_device_hour=price)


def _cost_line(section: dict[str, Any]) -> str:
    """``device time: 0.0042 device-hours (4 cpu devices, 2 processes, 3.8 s); cost 0.01 at 2.5 per device-hour``."""
    where, cost = section["devices"], section["cost"]
    processes = f", {where['processes']} processes" if where["processes"] > 1 else ""
    line = (f"device time: {cost['device_hours']:.4g} device-hours ({where['devices']} {where['platform']} "
            f"device{'s' if where['devices'] > 1 else ''}{processes}, {section['wall_seconds']:.0f} s)")
    if cost["cost"] is not None:
        line += f"; cost {cost['cost']:.4g} at {cost['price_per_device_hour']:g} per device-hour"
    return line


if __name__ == "__main__":
    sys.exit(main())

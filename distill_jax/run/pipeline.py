"""Phases over a run directory: teacher → distill → eval → export, each resumable.

A run directory holds everything needed to reproduce and inspect a run::

    config.json  schema.json  env_fingerprint.json     identity (written first); config.json's
                                                       ``provenance``: what created the run
    checkpoints/teacher/<update>/  checkpoints/student/<update>/   Orbax, keep-N
    teacher_step.json                                  the teacher update the student learns from
    config_changes.jsonl                               budgets raised, coefficients changed on --resume
    metrics.jsonl                                      one row per iteration
    wall_clock.jsonl                                   seconds per stage of each command
    eval.json  eval.md                                 the held-out panel
    export/                                            the deployable student
    plots/*.png  README.md                             curves and a summary

Each phase reads what earlier phases left (checkpoints), so ``distill``,
``eval`` and ``export`` can run on an existing directory, and a killed run
continues from its newest checkpoint (``resume=True``): the chunking of
updates and the stored RNG keys make the resumed result equal to the
uninterrupted one.

With several processes (:mod:`distill_jax.run.distributed`) every process trains and restores
(both collective), and only process 0 writes the run directory's files; the checkpoints are
written by all of them, each its own shards.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import shutil
import time
from typing import Any, Callable

import jax
import numpy as np

from distill_jax import suite
from distill_jax.config import DistillConfig, PPOConfig, RunConfig, get_value, replace_fields, to_dict, traced_paths
from distill_jax.distill import masks
from distill_jax.distill.masks import schema_in_force
from distill_jax.distill.phase import (DistillBuild, DistillResult, build_distillation, distill_student,
                                       initial_student_states)
from distill_jax.distill.update import FrozenTeacher
from distill_jax.envs import get_env
from distill_jax.envs.base import Env
from distill_jax.evaluate import student_actions
from distill_jax.export import check_onnx, export_onnx, export_student, load_student
from distill_jax.hyperparams import member_coefficients
from distill_jax.ppo.teacher import TeacherBuild, TeacherResult, build_teacher, initial_teacher_states, train_teacher
from distill_jax.references import baseline_env, oracle_env
from distill_jax.run import checkpoint, distributed, provenance
from distill_jax.run.console import Console, clock_text
from distill_jax.run.progress import JsonlLog, Progress
from distill_jax.run.report import write_eval
from distill_jax.run.wall_clock import WALL_CLOCK_FILE, WallClock
from distill_jax.schema import PrivilegedFieldError
from distill_jax.suite import SuitePoint
from distill_jax.treeops import first_seed

TEACHER_DIR, STUDENT_DIR, EXPORT_DIR = "checkpoints/teacher", "checkpoints/student", "export"
# The reference policies of the claims (distill_jax.references): trained like the teacher and the
# student, on re-declared schemas, each in a checkpoint directory of its own.
BASELINE_DIR, ORACLE_DIR = "checkpoints/baseline", "checkpoints/oracle"
PHASE_DIRS = {"teacher": TEACHER_DIR, "baseline": BASELINE_DIR, "distill": STUDENT_DIR, "oracle": ORACLE_DIR}
# Written when distillation starts: evaluation, export and --resume must pair the student with the
# teacher it imitates, which need not be the newest (--from RUN/checkpoints/teacher/<update>).
TEACHER_STEP_FILE = "teacher_step.json"
STUDENT_SEED_OFFSET = 100  # students draw seeds disjoint from their teachers'


class RunError(RuntimeError):
    """A run directory cannot serve the requested phase (missing, unfinished, occupied)."""


@dataclasses.dataclass
class Run:
    """An open run directory: its path, resolved config and the (unbatched) env."""

    path: pathlib.Path
    config: RunConfig
    env: Env
    # config.json's ``provenance`` (what created the run: versions, devices, processes); ``None``
    # for a run written before it was recorded.
    provenance: dict[str, Any] | None = None

    @property
    def metrics_path(self) -> pathlib.Path:
        return self.path / "metrics.jsonl"

    @property
    def teacher_step(self) -> int | None:
        """The teacher update this run's student was distilled from (``None`` before distillation)."""
        path = self.path / TEACHER_STEP_FILE
        if not path.is_file():
            return None
        try:
            return int(json.loads(path.read_text())["update"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise RunError(f"{path}: unreadable ({e!r}); expected {{\"update\": <int>}}") from e

    def phase_env(self, phase: str) -> Env:
        """The (unbatched) env a phase trains on: the task, or its schema view for a reference policy."""
        if phase == "baseline":
            return baseline_env(self.env)
        if phase == "oracle":
            return oracle_env(self.env)
        return self.env

    def meta(self, phase: str) -> dict[str, Any]:
        """Checkpoint identity. The teacher's schema excludes the mask rule: that is a
        distillation setting, so one teacher can serve students with other rules."""
        env = self.phase_env(phase)
        schema = env.schema if phase in ("teacher", "baseline") else schema_in_force(env.schema, self.config.distill)
        return checkpoint.make_meta(phase, config=to_dict(self.config), schema=schema,
                                    env_fingerprint=env.fingerprint())


def make_env(config: RunConfig, *, for_eval: bool = False) -> Env:
    """The task named by ``config.env`` (a registered name or ``package.module:factory``), with
    ``eval_env_overrides`` on top if ``for_eval``.

    Raises:
      RunError: unknown name or overrides, or an evaluation env whose schema differs.
    """
    overrides = {**dict(config.env_overrides), **(dict(config.eval_env_overrides) if for_eval else {})}
    try:
        return get_env(config.env, **overrides)
    except (TypeError, ValueError) as e:
        raise RunError(f"env {config.env!r} with overrides {overrides}: {e}") from e


CONFIG_FILE, PROVENANCE_KEY = "config.json", "provenance"


def config_record(config: RunConfig, recorded: dict[str, Any] | None) -> str:
    """``config.json``'s text: the config's fields, and ``recorded`` under ``provenance``."""
    data = to_dict(config)
    if recorded is not None:
        data[PROVENANCE_KEY] = recorded
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def creation_provenance() -> dict[str, Any]:
    """What ``config.json`` records about the command that created a run: package versions, the
    commit, the devices and processes, and the flags that start the same processes again."""
    recorded = provenance.collect()
    del recorded["memory"]  # nothing has run yet; eval.json records the peak
    return {**recorded, "launch": distributed.relaunch_flags() or None}


def check_devices(config: RunConfig) -> None:
    """Refuses a config whose environments cannot be split evenly over ``jax.devices()`` (all
    processes' devices), before anything is written or compiled.

    Raises:
      RunError: naming the field, its value and the device count.
    """
    problem = distributed.indivisible(config, jax.device_count(), jax.process_count())
    if problem:
        raise RunError(problem)


def check_processes(run: Run, hint: str = "") -> None:
    """Refuses to resume ``run`` with another process count than the one that created it.

    Its checkpoints could be read (they are restored whole), but a run keeps one layout, so that
    its checkpoints, its metrics and its throughput figures describe one set-up. ``hint``: the
    flags that started this command's processes (the local launcher's), named in the message.

    Raises:
      RunError: one line with both counts and how to start the recorded layout.
    """
    recorded = ((run.provenance or {}).get("devices") or {}).get("processes")
    now = jax.process_count()
    if recorded is None or int(recorded) == now:
        return
    launch = (run.provenance or {}).get("launch")
    how = f"with {launch}" if launch else f"as {recorded} processes (--num-processes {recorded})"
    raise RunError(f"{run.path}: trained by {recorded} process{'es' if recorded > 1 else ''}, resumed by {now}"
                   f"{f' ({hint})' if hint else ''}; resume it {how}")


def create_run(path: pathlib.Path, config: RunConfig) -> Run:
    """Validates everything first, then creates ``path`` and writes the run's identity
    (``config.json`` with its ``provenance``, the schema, the env fingerprint)."""

    config.validate()
    check_devices(config)
    env = make_env(config)
    suite_points(config, env)  # refuses an unknown condition or strength before anything is written
    if config.eval_env_overrides:
        check_eval_env(env, make_env(config, for_eval=True))
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunError(f"{path}: exists and is not empty (use --resume to continue a run there)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        recorded = creation_provenance()
        (path / CONFIG_FILE).write_text(config_record(config, recorded))
        (path / "schema.json").write_text(schema_in_force(env.schema, config.distill).to_json())
        (path / "env_fingerprint.json").write_text(json.dumps(env.fingerprint(), indent=2, sort_keys=True, default=str))
    except OSError as e:
        raise RunError(f"{path}: cannot create the run directory ({e.strerror or e})") from e
    return Run(path, config, env, recorded)


def suite_points(config: RunConfig, env: Env) -> list[SuitePoint]:
    """The run's suite points (``[]`` when the suite is off, or the task declares none and none was asked).

    Raises:
      RunError: a condition or strength the task does not declare, or a suite asked of a task without one.
    """
    if not config.suite.enabled or (suite.declared(config.env) is None and not config.suite.requested):
        return []
    try:
        return suite.resolve(env, config.env, config.suite.conditions, config.suite.strengths)
    except suite.SuiteError as e:
        raise RunError(str(e)) from e


def check_eval_env(train_env: Env, eval_env: Env) -> None:
    """A shifted evaluation env may change distributions, never the observation schema."""
    diff = train_env.schema.diff(eval_env.schema)
    if diff:
        raise RunError(f"eval_env_overrides change the observation schema ({diff}); only distributions may shift")


def find_run_dir(path: pathlib.Path) -> pathlib.Path:
    """The run directory at or above ``path`` (a run dir, a checkpoint dir or a step dir)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such run directory or checkpoint")
    for candidate in (path, *path.resolve().parents):
        if (candidate / "config.json").is_file():
            return candidate
    raise RunError(f"{path}: not inside a run directory (no config.json here or above)")


def open_run(path: pathlib.Path) -> Run:
    """Opens an existing run directory (or the one a checkpoint path lies in) with its recorded config.

    Raises:
      RunError: missing directory/config, or an env whose fingerprint no longer
        matches the one recorded (the simulation code changed).
    """
    path = find_run_dir(path)
    try:
        data = json.loads((path / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{path / CONFIG_FILE}: not valid JSON ({e})") from e
    created = data.pop(PROVENANCE_KEY, None) if isinstance(data, dict) else None
    config = replace_fields(RunConfig(), data)
    config.validate()
    env = make_env(config)
    recorded = path / "env_fingerprint.json"
    if recorded.is_file():
        now = json.loads(json.dumps(env.fingerprint(), default=str))
        diffs = checkpoint.json_diff(json.loads(recorded.read_text()), now)
        if diffs:
            raise RunError(f"{path}: the env no longer matches the run's env_fingerprint.json: {'; '.join(diffs[:5])}")
    return Run(path, config, env, created)


def fork_run(source: Run, path: pathlib.Path, overrides: dict[str, Any] | None,
             copy: tuple[str, ...] = (TEACHER_DIR,)) -> Run:
    """A new run directory that reuses ``source``'s checkpoints (``copy``) with changed settings.

    Checkpoints are copied (not linked), so the new directory is self-contained;
    ``source.json`` records where they came from.
    """
    config = replace_fields(source.config, overrides or {})
    if (config.phase_points("ppo"), config.num_seeds) != (source.config.phase_points("ppo"), source.config.num_seeds):
        raise RunError(f"{source.path}: its teachers were trained for seeds x ppo sweep points "
                       f"{source.config.num_seeds} x {source.config.phase_points('ppo')}; a run that reuses them keeps "
                       "num_seeds and the ppo.* sweep axes (sweep distill.* coefficients freely)")
    run = create_run(path, config)
    copied = [directory for directory in copy if (source.path / directory).is_dir()]
    for directory in copied:
        shutil.copytree(source.path / directory, path / directory)
    if STUDENT_DIR in copy and (source.path / TEACHER_STEP_FILE).is_file():  # the student keeps its teacher
        shutil.copy2(source.path / TEACHER_STEP_FILE, path / TEACHER_STEP_FILE)
    (path / "source.json").write_text(json.dumps({"run_dir": str(source.path.resolve()), "copied": copied}))
    return run


# The settings a resumed run may change. Budgets (only upwards): nothing in an update depends on
# them. Traced coefficients (not swept): they are data in the train state, so the resumed run
# continues with the new value in the same compiled program. Every other field fixes the shapes
# of the checkpointed state or the meaning of what was already trained.
BUDGET_FIELDS = ("ppo.total_env_steps", "distill.total_env_steps", "baseline.total_env_steps")
CHANGES_LOG = "config_changes.jsonl"


def resumable_fields(config: RunConfig) -> tuple[str, ...]:
    """The config fields ``--resume`` may change: the budgets and the traced coefficients not swept."""
    swept = {path for path, _ in config.sweep}
    return BUDGET_FIELDS + tuple(p for p in traced_paths(config) if p not in swept)


def _flatten(changes: dict[str, Any], prefix: str = "") -> list[str]:
    named: list[str] = []
    for key, value in changes.items():
        named += _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return named


def change_on_resume(run: Run, changes: dict[str, Any]) -> Run:
    """``run`` with raised budgets and changed coefficients, written to its ``config.json`` and logged
    in ``config_changes.jsonl`` (with the update each phase had reached).

    ``changes`` is nested like the config (``{"ppo": {"total_env_steps": 100_000_000}}``). A phase
    that had finished is unfinished again under a larger budget, so ``--resume`` continues it from
    its newest checkpoint; nothing in an update depends on the budget (no schedule), so the
    continued run equals one given the larger budget from the start. A changed coefficient applies
    from the next update on (the resumed states take the config's coefficients).

    Raises:
      RunError: a change to anything but :func:`resumable_fields`, a budget lowered, or the
        teacher's budget raised after a student was distilled from it (the student would be left
        paired with an older teacher than the run's).
    """
    others = sorted(set(_flatten(changes)) - set(resumable_fields(run.config)))
    if others:
        raise RunError(f"{run.path}: a resumed run keeps its recorded config except the budgets "
                       f"{list(BUDGET_FIELDS)} and the coefficients that are not swept; cannot change {others} "
                       "(start a new run, or --phase distill --from it --out NEW)")
    config = replace_fields(run.config, changes)
    config.validate()
    for field in BUDGET_FIELDS:
        old, new = get_value(run.config, field), get_value(config, field)
        if new < old:
            raise RunError(f"{run.path}: {field}={new:,} is below the run's {old:,}; a resumed run's budget can only grow")
    changed = [{"field": field, "from": get_value(run.config, field), "to": get_value(config, field)}
               for field in resumable_fields(run.config) if get_value(run.config, field) != get_value(config, field)]
    if any(c["field"].startswith("ppo.") for c in changed) and checkpoint.complete_steps(run.path / STUDENT_DIR):
        raise RunError(f"{run.path / STUDENT_DIR}: a student was distilled from this run's teacher; changing "
                       f"{[c['field'] for c in changed if c['field'].startswith('ppo.')]} would train the teacher "
                       f"past it. Copy the run without {STUDENT_DIR} and {TEACHER_STEP_FILE}, and resume the copy")
    if changed:
        reached = {phase: (checkpoint.complete_steps(run.path / directory) or [0])[-1]
                   for phase, directory in PHASE_DIRS.items()}
        (run.path / CONFIG_FILE).write_text(config_record(config, run.provenance))
        with (run.path / CHANGES_LOG).open("a") as log:
            log.writelines(json.dumps({**c, "at_update": reached[_phase_of(c["field"])]}) + "\n" for c in changed)
    return dataclasses.replace(run, config=config)


def _phase_of(field: str) -> str:
    return {"ppo": "teacher", "baseline": "baseline"}.get(field.split(".")[0], "distill")


# ---------------------------------------------------------------- metrics log
def trim_metrics(path: pathlib.Path, phase: str, done: int) -> None:
    """Drops rows of ``phase`` past update ``done`` (written after the last checkpoint of a killed run)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
        if not (row.get("phase") == phase and row.get("update", 0) > done):
            keep.append(line)
    path.write_text("".join(f"{line}\n" for line in keep))


def phase_logger(run: Run, phase: str, total_updates: int, quiet: bool = False, console: Console | None = None):
    """``(log_fn, close)``: JSONL rows always, a live progress line unless ``quiet``, TensorBoard if installed.

    With a ``console`` the progress line goes through it, its ETA leaves out the time spent
    compiling, and a silence as long as one compiled call is not taken for a stall.
    """

    if not distributed.is_primary():  # process 0 logs for all (its rows are the global batch's)
        return (lambda row: None), (lambda: None)
    jsonl = JsonlLog(run.metrics_path, phase)
    if quiet:
        return jsonl, lambda: None
    progress = Progress(phase, total_updates, tensorboard_dir=run.path / "tensorboard", stream=console,
                        compile_seconds=(lambda: console.compile_seconds) if console is not None else None)

    compiled = [console.compile_seconds if console is not None else 0.0]

    def log(row: dict[str, Any]) -> None:
        jsonl(row)
        progress(row)
        if console is not None and "seconds" in row:  # the call's own time, its compilation left out
            console.expect_quiet(1.5 * (row["seconds"] - (console.compile_seconds - compiled[0])))
            compiled[0] = console.compile_seconds

    return log, progress.close


# ---------------------------------------------------------------- phases
def _train_with_checkpoints(run: Run, phase: str, directory: str, total_updates: int, batch_size: int,
                            template_fn: Callable[[], Any], train_fn: Callable[..., Any], resume: bool,
                            quiet: bool, clock: WallClock | None = None, hparams: Any = None,
                            console: Console | None = None, what: str = "") -> Any:
    """Shared resume/checkpoint/log plumbing of the two training phases.

    A resumed state takes ``hparams`` (the members' coefficients under the run's config now), so a
    coefficient changed on ``--resume`` applies from the next update on.

    With a ``clock``, records ``{phase}/compiled_calls`` (the calls' own ``seconds``, compilation
    included) and ``{phase}/checkpoints`` (the writes) when the phase finishes. A ``console`` is
    told each step (``what`` describes the training).
    """
    console = console or Console(enabled=False)
    seconds = {"compiled_calls": 0.0, "checkpoints": 0.0}
    ckpt_dir = run.path / directory
    meta = run.meta(phase)
    initial_state, done = None, 0
    if checkpoint.complete_steps(ckpt_dir):
        if not resume:
            raise RunError(f"{ckpt_dir}: already holds {phase} checkpoints; pass --resume to continue them")
        console.step(phase, "restoring the newest checkpoint", str(ckpt_dir))
        initial_state, _ = checkpoint.restore(ckpt_dir, jax.eval_shape(template_fn), meta)
        done = int(np.asarray(initial_state.update_step)[0])
        if hparams is not None:
            initial_state = initial_state.replace(hparams=hparams)
    if distributed.is_primary():
        trim_metrics(run.metrics_path, phase, done)
    saver = checkpoint.Checkpointer(ckpt_dir, meta, keep=run.config.checkpoint_keep)

    def save(state: Any, updates_done: int) -> None:  # also the loop's on_chunk
        start = time.perf_counter()
        saver.save(updates_done, state, {"update_step": updates_done, "env_steps": updates_done * batch_size})
        seconds["checkpoints"] += time.perf_counter() - start

    if initial_state is None:  # a fresh run is restorable (and resumable) from update 0
        console.step(phase, "initialising the networks and environments, and writing checkpoint 0")
        initial_state = template_fn()
        save(initial_state, 0)

    log, close = phase_logger(run, phase, total_updates, quiet, console)

    def log_fn(row: dict[str, Any]) -> None:
        seconds["compiled_calls"] += row.get("seconds", 0.0)
        log(row)

    start, compiled = time.perf_counter(), console.compile_seconds
    if done < total_updates:
        console.step(phase, "training", f"{what}, updates {done + 1}-{total_updates}; the first call compiles")
    else:
        console.step(phase, f"already finished ({done}/{total_updates} updates)")
    try:
        result = train_fn(initial_state=initial_state, on_chunk=save, log_fn=log_fn)
    finally:
        close()
        waited = time.perf_counter()
        saver.close()  # the last save's files may still be being written
        seconds["checkpoints"] += time.perf_counter() - waited
    if done < total_updates:
        console.line(f"[{phase}] finished {total_updates - done} updates in {clock_text(time.perf_counter() - start)} "
                     f"(compiling {clock_text(console.compile_seconds - compiled)})")
    if clock is not None:
        for part, value in seconds.items():
            clock.record(f"{phase}/{part}", value)
    return result


def _ppo_config(run: Run, phase: str) -> PPOConfig:
    return run.config.baseline_ppo if phase == "baseline" else run.config.ppo


def _distill_config(run: Run, phase: str) -> DistillConfig:
    """The distillation settings of a phase: the oracle student's are the student's, its fields (where
    the student's are narrowed, e.g. a memoryless ablation) widened by the teacher-only fields."""
    distill = run.config.distill
    if phase != "oracle" or distill.student.fields is None:
        return distill
    fields = distill.student.fields + run.env.schema.teacher_only
    return dataclasses.replace(distill, student=dataclasses.replace(distill.student, fields=fields))


def _teacher_setup(run: Run, phase: str = "teacher") -> tuple[TeacherBuild, Callable[[], Any]]:
    """The batched env and networks of a PPO phase (``teacher`` or ``baseline``), built once, and its
    initial-state builder (every member: the ``ppo.*`` sweep grid times the seeds; the baseline
    starts from the teacher's seeds, common random numbers for the teacher claim)."""
    cfg, ppo = run.config, _ppo_config(run, phase)
    build = build_teacher(run.phase_env(phase), ppo)
    points = cfg.phase_points("ppo")
    return build, lambda: initial_teacher_states(build.env, build.nets, ppo, cfg.seed, cfg.num_seeds, points)


def _student_setup(run: Run, phase: str = "distill") -> tuple[DistillBuild, int, Callable[[], Any]]:
    """The batched env and network of a distillation phase (``distill`` or ``oracle``), built once, its
    base seed and its initial-state builder (every member: the whole sweep grid times the seeds)."""
    cfg, distill = run.config, _distill_config(run, phase)
    build = build_distillation(run.phase_env(phase), distill, latent_size=cfg.ppo.network.privileged_latent)
    seed = cfg.seed + STUDENT_SEED_OFFSET
    points = cfg.phase_points("distill")
    return build, seed, lambda: initial_student_states(build.env, build.student, distill, seed, cfg.num_seeds, points)


def _restore_finished(run: Run, phase: str, directory: str, template_fn: Callable[[], Any], total_updates: int,
                      step: int | None = None) -> Any:
    """The state of ``phase`` from the run's checkpoints (newest, or ``step``); the newest must be finished."""
    state, _ = checkpoint.restore(run.path / directory, jax.eval_shape(template_fn), run.meta(phase), step=step)
    done = int(np.asarray(state.update_step)[0])
    if step is None and done < total_updates:
        raise RunError(f"{run.path / directory}: the {phase} phase stopped at update {done} of "
                       f"{total_updates}; finish it with --resume first")
    return state


def teacher_phase(run: Run, *, resume: bool = False, quiet: bool = False, clock: WallClock | None = None,
                  phase: str = "teacher", console: Console | None = None):
    """Trains (or finishes training) the teacher, or with ``phase="baseline"`` the deployable-only
    baseline; returns a ``TeacherResult``. ``clock``, ``console``: see :func:`_train_with_checkpoints`."""
    cfg, ppo = run.config, _ppo_config(run, phase)
    build, template = _teacher_setup(run, phase)
    train = lambda **kw: train_teacher(run.phase_env(phase), ppo, seed=cfg.seed,  # noqa: E731
                                       num_seeds=cfg.num_seeds, updates_per_call=cfg.updates_per_call or None,
                                       build=build, sweep_points=cfg.phase_points("ppo"), **kw)
    hparams = member_coefficients(ppo, cfg.phase_points("ppo"), cfg.num_seeds)
    what = (f"PPO on {cfg.env}{' (deployable fields only)' if phase == 'baseline' else ''}, "
            f"{_members(cfg, 'ppo')} x {ppo.num_envs} envs, {ppo.batch_size:,} env steps per update")
    return _train_with_checkpoints(run, phase, PHASE_DIRS[phase], ppo.num_updates, ppo.batch_size,
                                   template, train, resume, quiet, clock, hparams, console, what)


def _members(cfg: RunConfig, section: str) -> str:
    points = len(cfg.phase_points(section))
    seeds = f"{cfg.num_seeds} seed{'s' if cfg.num_seeds > 1 else ''}"
    return f"{points} sweep points x {seeds}" if points > 1 else seeds


def restore_teacher(run: Run, step: int | None = None, phase: str = "teacher"):
    """The teacher from the run's checkpoints as a ``TeacherResult``: update ``step``, else the
    one the run's student was distilled from (``teacher_step.json``), else the newest, which must
    be finished. ``phase="baseline"``: the deployable-only baseline's newest, finished."""
    step = (run.teacher_step if step is None else step) if phase == "teacher" else None
    build, template = _teacher_setup(run, phase)
    state = _restore_finished(run, phase, PHASE_DIRS[phase], template, _ppo_config(run, phase).num_updates, step)
    return TeacherResult(state=state, nets=build.nets, env=build.env, history=[])


def distill_phase(run: Run, teacher: Any, *, resume: bool = False, quiet: bool = False,
                  clock: WallClock | None = None, phase: str = "distill", console: Console | None = None):
    """Distils one student per teacher member (with ``phase="oracle"``, the oracle student from the
    same teacher); returns a ``DistillResult``. ``clock``, ``console``: see :func:`_train_with_checkpoints`."""
    cfg = run.config
    used, recorded = int(np.asarray(teacher.state.update_step).reshape(-1)[0]), run.teacher_step
    if recorded not in (None, used):
        raise RunError(f"{run.path}: its student was distilled from teacher update {recorded} "
                       f"({TEACHER_STEP_FILE}), not {used}; distil from another teacher in a new --out directory")
    if phase == "distill" and distributed.is_primary():
        (run.path / TEACHER_STEP_FILE).write_text(json.dumps({"update": used}))
    # Student member g * K + k learns from the teacher member with the same seed and ppo.* sweep values.
    members = np.asarray(cfg.teacher_members())
    frozen = jax.tree.map(lambda x: x[members], FrozenTeacher(teacher.state.params["actor"], teacher.state.obs_stats))
    build, seed, template = _student_setup(run, phase)
    train = lambda **kw: distill_student(run.phase_env(phase), teacher.nets.actor, frozen,  # noqa: E731
                                         _distill_config(run, phase),
                                         seed=seed, updates_per_call=cfg.updates_per_call or None, build=build,
                                         sweep_points=cfg.phase_points("distill"), **kw)
    hparams = member_coefficients(cfg.distill, cfg.phase_points("distill"), cfg.num_seeds)
    who = "oracle student (given the teacher-only fields)" if phase == "oracle" else f"{cfg.distill.student.kind} student"
    what = (f"{who} from teacher update {used}, {_members(cfg, 'distill')} x {cfg.distill.num_envs} envs, "
            f"{cfg.distill.batch_size:,} env steps per update")
    return _train_with_checkpoints(run, phase, PHASE_DIRS[phase], cfg.distill.num_updates, cfg.distill.batch_size,
                                   template, train, resume, quiet, clock, hparams, console, what)


def restore_student(run: Run, phase: str = "distill"):
    """The finished student (or with ``phase="oracle"`` the oracle student) as a ``DistillResult``."""
    build, _, template = _student_setup(run, phase)
    state = _restore_finished(run, phase, PHASE_DIRS[phase], template, run.config.distill.num_updates)
    return DistillResult(state=state, student=build.student, env=build.env, history=[])


def restore_reference(run: Run, phase: str):
    """The finished baseline or oracle student of the run, or ``None`` where it has no checkpoints."""
    if not checkpoint.complete_steps(run.path / PHASE_DIRS[phase]):
        return None
    return restore_teacher(run, phase=phase) if phase == "baseline" else restore_student(run, phase=phase)


def unfinished_phases(run: Run, phases: tuple[str, ...]) -> tuple[str, ...]:
    """What a ``--resume`` of ``run`` still has to do of ``phases`` (in order): from the first
    unfinished one on.

    Unfinished: a training phase short of its budget; an export or evaluation missing, or older
    than the last training; an evaluation written under another config. "Older" is the order of
    the stages in ``wall_clock.jsonl``, which each command appends to when a stage ends (file
    times would not survive a copy of the run directory).
    """
    cfg = run.config
    budgets = {"teacher": cfg.ppo.num_updates, "baseline": cfg.baseline_ppo.num_updates,
               "distill": cfg.distill.num_updates, "oracle": cfg.distill.num_updates}
    order = _stage_order(run.path / WALL_CLOCK_FILE)
    trained = max(order.get(phase, -1) for phase in budgets)
    evaluated = run.path / "eval.json"
    try:
        eval_config = json.loads(evaluated.read_text()).get("config") if evaluated.is_file() else None
    except (OSError, json.JSONDecodeError):
        eval_config = None
    done = {phase: (checkpoint.complete_steps(run.path / PHASE_DIRS[phase]) or [-1])[-1] >= budget
            for phase, budget in budgets.items()}
    done["eval"] = eval_config == json.loads(json.dumps(to_dict(cfg), default=str)) and order.get("eval", -1) > trained
    done["export"] = (run.path / EXPORT_DIR / "verification.json").is_file() and order.get("export", -1) > trained
    first = next((i for i, phase in enumerate(phases) if not done[phase]), len(phases))
    return phases[first:]


def _stage_order(path: pathlib.Path) -> dict[str, int]:
    """The line of ``wall_clock.jsonl`` where each stage last ended."""
    order: dict[str, int] = {}
    lines = path.read_text().splitlines() if path.is_file() else []
    for index, line in enumerate(lines):
        try:
            order[json.loads(line)["stage"]] = index
        except (json.JSONDecodeError, KeyError, TypeError):  # a line cut short by a kill
            continue
    return order


def verify_inputs(run: Run, phases: tuple[str, ...], *, resume: bool, teacher_step: int | None = None) -> None:
    """Checks the files of every checkpoint ``phases`` will restore, before anything is written.

    Raises:
      checkpoint.CheckpointDamagedError: naming the damaged file and the previous intact checkpoint.
    """
    wanted: list[tuple[str, int | None]] = []
    if resume:  # a training phase continues from its newest checkpoint
        wanted += [(phase, None) for phase in ("teacher", "baseline", "distill", "oracle") if phase in phases]
    if {"distill", "oracle", "eval"} & set(phases):  # the teacher a student learns or learned from
        wanted.append(("teacher", teacher_step if teacher_step is not None else run.teacher_step))
    if {"eval", "export"} & set(phases):
        wanted.append(("distill", None))
    if "eval" in phases:
        wanted += [("baseline", None), ("oracle", None)]
    for phase, step in wanted:
        directory = run.path / PHASE_DIRS[phase]
        if checkpoint.complete_steps(directory):
            checkpoint.verify(directory, step)


def eval_phase(run: Run, teacher: Any, student: Any, *, baseline: Any = None, oracle: Any = None,
               console: Console | None = None,
               provenance: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Writes ``eval.json``/``eval.md``; returns ``{"table", "leak_passed", "report"}``. ``baseline``
    (a ``TeacherResult``) and ``oracle`` (a ``DistillResult``), where trained, join the panel;
    ``provenance()`` (:func:`provenance_section`) is recorded under ``provenance``."""
    console = console or Console(enabled=False)
    env = run.env
    if run.config.eval_env_overrides:
        env = make_env(run.config, for_eval=True)
        check_eval_env(run.env, env)
    cfg = run.config
    pairs = len(cfg.sweep_points) * cfg.num_seeds
    others = [name for name, result in (("the baseline", baseline), ("the oracle student", oracle)) if result is not None]
    policies = ["the teacher", "the student", *others]
    console.step("eval", "scoring " + ", ".join(policies[:-1]) + f" and {policies[-1]} on {cfg.eval_episodes} "
                 "held-out episodes" + (f" ({pairs} pairs)" if pairs > 1 else ""))
    return write_eval(run.path, env, cfg, teacher, student, train_env=run.env, baseline=baseline, oracle=oracle,
                      points=suite_points(cfg, env), on_step=lambda what, detail: console.step("eval", what, detail),
                      provenance=provenance)


def export_phase(run: Run, student: Any) -> dict[str, Any]:
    """Exports seed 0's student to ``run/export`` (StableHLO and ``student.onnx``) and checks both.

    The StableHLO check feeds the student's own last training observations through the
    loaded artifact and through the in-process evaluation wrapper: actions must be
    bit-identical, and a privileged field must be rejected. The ONNX check
    (:func:`distill_jax.export.check_onnx`, under ``"onnx"`` in ``verification.json``) compares
    ``student.onnx`` in ONNX Runtime with the in-process student on >= 1,000 observations
    (>= 20 steps, carry included): max abs error <= 1e-5.
    """

    # On one device, as the exported program runs: a state left sharded over several devices by
    # training would have the reference computed by a partitioned program, off by float rounding.
    params, stats, obs = jax.device_put(
        (first_seed(student.state.params), first_seed(student.state.obs_stats), first_seed(student.state.env_state.obs)),
        jax.local_devices()[0])
    directory = export_student(run.path / EXPORT_DIR, student.student, params, stats, run.env)
    deployed = load_student(directory)
    batch = int(np.asarray(jax.tree.leaves(obs)[0]).shape[0])
    deployable = {name: np.asarray(obs[name]) for name in student.student.schema.student_obs}
    exported_actions = np.asarray(deployed.step(None, deployable, np.ones(batch, np.float32))[1])

    # Parameters as arguments, as in the exported program (closed-over constants would be folded differently).
    reference = np.asarray(jax.jit(functools.partial(student_actions, student.student))(params, stats, obs))
    privileged = next(iter(run.env.schema.privileged), None)
    try:
        if privileged is not None:
            deployed({**deployable, privileged: np.asarray(obs[privileged])})
        rejected = privileged is None
    except PrivilegedFieldError:
        rejected = True
    verification = {
        "bit_identical_to_in_process": bool(np.array_equal(exported_actions, reference)),
        "max_abs_difference": float(np.max(np.abs(exported_actions - reference))),
        "observations_checked": batch,
        "privileged_field_rejected": rejected,
        "privileged_field_tried": privileged,
    }
    onnx_path = export_onnx(directory, student.student, params, stats, run.env)
    verification["onnx"] = check_onnx(onnx_path, run.env, student.student, params, stats, deployable)
    (directory / "verification.json").write_text(json.dumps(verification, indent=2))
    return {"directory": directory, **verification}


def _seed_range(cfg: RunConfig) -> str:
    if cfg.num_seeds == 1:
        return f"{cfg.seed} (one teacher/student pair)"
    return f"{cfg.seed}–{cfg.seed + cfg.num_seeds - 1} ({cfg.num_seeds} teacher/student pairs)"


def metrics_rows(run: Run) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (a line cut short by a kill is skipped)."""
    rows = []
    for line in run.metrics_path.read_text().splitlines() if run.metrics_path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def provenance_section(run: Run, *, wall_seconds: float, compile_seconds: dict[str, float] | None = None,
                       price_per_device_hour: float | None = None) -> dict[str, Any]:
    """The ``provenance`` of ``eval.json`` and the run's ``README.md``: versions, commit, devices and
    processes, peak memory (process 0's), compile seconds per stage, env-steps/s per training phase
    (from ``metrics.jsonl``), and this command's device-hours (``wall_seconds`` times the global
    device count) with their cost at ``price_per_device_hour``; ``created`` is what config.json
    recorded when the run was created."""
    section = provenance.collect(wall_seconds=wall_seconds, compile_seconds=compile_seconds,
                                 metrics_rows=metrics_rows(run), price_per_device_hour=price_per_device_hour)
    section["memory"]["process"] = jax.process_index()
    section["created"] = run.provenance
    return section


def provenance_lines(section: dict[str, Any]) -> list[str]:
    """The README's ``Provenance and cost`` section for :func:`provenance_section`'s ``section``."""
    packages = ", ".join(f"{name} {version}" for name, version in section["packages"].items() if version)
    git = section.get("git")
    where, memory = section["devices"], section["memory"]
    peak = (f"peak device memory {memory['peak_device_bytes'] / 2**20:,.0f} MiB" if memory.get("peak_device_bytes")
            else f"peak RSS {memory['peak_rss_bytes'] / 2**20:,.0f} MiB")
    lines = ["## Provenance and cost (this command)", "",
             f"- packages: {packages}",
             f"- commit: {git['commit'][:12]}{' (uncommitted changes)' if git['dirty'] else ''}" if git else
             "- commit: not a git checkout",
             f"- devices: {where['devices']} x {where['device_kind']} ({where['platform']}), "
             f"{where['processes']} process{'es' if where['processes'] > 1 else ''}; {peak} (process 0)"]
    for phase, figures in section.get("phases", {}).items():
        compiled = section.get("compile_seconds", {}).get(phase)
        lines.append(f"- {phase}: {figures['env_steps_per_second']:,.0f} env-steps/s after the first call, "
                     f"{figures['call_seconds']:.1f} s in compiled calls"
                     + (f", {compiled:.1f} s compiling" if compiled is not None else ""))
    cost = section.get("cost")
    if cost is not None:
        price = (f"; cost {cost['cost']:.4g} at {cost['price_per_device_hour']:g} per device-hour"
                 if cost["cost"] is not None else "")
        lines.append(f"- wall clock {section['wall_seconds']:.0f} s on {where['devices']} devices: "
                     f"{cost['device_hours']:.4g} device-hours{price}")
    return lines + [""]


def write_summary(run: Run, report: dict[str, Any] | None, exported: dict[str, Any] | None,
                  clock: WallClock | None = None, provenance: dict[str, Any] | None = None) -> pathlib.Path:
    """A short ``README.md`` for the run directory: what ran, the panel table, where this
    command's wall clock went (``clock``), what produced it and what it cost (``provenance``:
    :func:`provenance_section`), the artifacts."""
    cfg = run.config
    lines = [
        f"# distill_jax run: {cfg.env}",
        "",
        f"- seeds: {_seed_range(cfg)}"
        + (f"; sweep {dict(cfg.sweep)} ({len(cfg.sweep_points)} grid points)" if cfg.sweep else ""),
        f"- teacher: PPO, {cfg.ppo.total_env_steps:,} env steps per seed, {cfg.ppo.num_envs} envs",
        f"- student: {cfg.distill.student.kind}, objective {cfg.distill.objective.kind}, behaviour "
        f"{cfg.distill.behaviour.kind}, {cfg.distill.total_env_steps:,} env steps, mask rule "
        f"{list(masks.in_force(cfg.distill.mask, run.env.schema)[0])}",
        "",
    ]
    if report is not None:
        lines += ["## Held-out panel (seed index 0)", "", report["table"], ""]
    if exported is not None:
        lines += [f"Exported student: `{EXPORT_DIR}/` (bit-identical to in-process: "
                  f"{exported['bit_identical_to_in_process']}; privileged input rejected: "
                  f"{exported['privileged_field_rejected']}). Load it with "
                  f"`distill_jax.export.load_student(\"{EXPORT_DIR}\")`.", ""]
    if clock is not None and clock.rows:
        lines += [f"Wall clock of the last command ({clock.invocation}; every command's: "
                  f"`{clock.path.name}`): {clock.summary()}.", ""]
    if provenance is not None:
        lines += provenance_lines(provenance)
    lines += ["## Artifacts", ""]
    lines += [f"- `{p.relative_to(run.path)}`" for p in sorted(run.path.iterdir()) if p.name != "README.md"]
    path = run.path / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path

"""``python -m distill_jax.train``: the smoke pipeline end to end, what it prints, and one line for
every failure (bad arguments and config values, an unusable --out, damaged checkpoints, Ctrl-C)."""

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from distill_jax.run import checkpoint
from distill_jax.config import DEFAULT_MASK_RULE, ConfigError
from distill_jax.run.report import EVAL_KEYS
from distill_jax.train import main

# Lines the default output must not hold: third-party noise and unhandled failures.
NOISE = re.compile(r"warp|WARNING:|absl|Brax System|not actively being|Traceback|Exception ignored|Event loop")


def command(*args: str) -> subprocess.Popen:
    """``python -m distill_jax.train ARGS`` as a user starts it, in a process of its own. Ctrl-C is
    turned back on first: a test runner may have started this process with SIGINT ignored."""
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'distill_jax.train'; runpy.run_module('distill_jax.train', run_name='__main__')")
    return subprocess.Popen([sys.executable, "-c", start, *args], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``--preset smoke`` end to end (every phase) in its own process, shared by the tests that read
    its run directory or its output: ``(run dir, stdout, stderr)``."""
    out = tmp_path_factory.mktemp("cli") / "run"
    done = command("--preset", "smoke", "--out", str(out))
    printed, errors = done.communicate(timeout=900)
    assert done.returncode == 0, printed + errors
    return out, printed, errors


def snapshot(root: pathlib.Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash: compared before and after a refused command."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_error(err: str) -> str:
    """The single ``error:`` line of a refused command's stderr (asserting it is the only line)."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_smoke_preset_runs_every_phase_and_writes_the_artifact(smoke_run):
    out, printed, _ = smoke_run
    for name in ["config.json", "schema.json", "env_fingerprint.json", "metrics.jsonl", "eval.json", "eval.md",
                 "README.md", "export/student.stablehlo", "export/variables.npz", "export/schema.json",
                 "plots/teacher.png", "plots/student.png", "plots/panel.png", "plots/masks.png"]:
        assert (out / name).is_file(), name
    assert checkpoint.complete_steps(out / "checkpoints" / "teacher")[-1] == 2
    assert checkpoint.complete_steps(out / "checkpoints" / "student")[-1] == 2
    report = json.loads((out / "eval.json").read_text())
    assert set(EVAL_KEYS) <= set(report)
    for role in ("teacher", "student"):
        for key in ("return_mean", "return_std", "success_rate", "fall_rate"):
            assert math.isfinite(report[role][key]), (role, key)
    assert all(check["passed"] for check in report["leak_checks"].values())
    assert report["schema_diff"]["teacher_actor_to_student_actor"]["passed"]
    # Two updates of 16 envs teach nothing: the diagnosis blames the teacher, not the student.
    assert report["diagnosis"]["overall"]["verdict"] == "teacher_quality", report["diagnosis"]["overall"]
    # The config names no rule (null), so the env's declared one, else the library default, is in force.
    assert report["config"]["distill"]["mask"]["rule"] is None
    assert report["schema"]["mask_rule"] == list(DEFAULT_MASK_RULE)
    assert len(report["members"]) == 1 and report["members"][0]["student"] == report["student"]
    assert not set(report["panel"]["seeds"]) & set(report["panel"]["training_seeds"])
    phases = {json.loads(line)["phase"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert phases == {"teacher", "distill"}
    history = json.loads((out / "export" / "manifest.json").read_text())["history"]
    assert history["field"] == "history" and history["length"] == 8 and history["row_size"] == 4
    assert [(r["name"], r["size"]) for r in history["row"]] == [("cart_pos", 1), ("pole_angle", 2), ("action", 1)]
    assert history["order"] == "oldest first; the last row is the current step"
    verification = json.loads((out / "export" / "verification.json").read_text())
    assert verification["bit_identical_to_in_process"] and verification["privileged_field_rejected"]
    assert "teacher (privileged)" in printed and "leak audit: PASSED" in printed
    assert "export/" in printed and "[distill]" in printed


def test_the_wall_clock_names_every_stage_and_agrees_with_the_metrics(smoke_run):
    out, printed, _ = smoke_run
    rows = [json.loads(line) for line in (out / "wall_clock.jsonl").read_text().splitlines()]
    first = [row for row in rows if row["invocation"] == rows[0]["invocation"]]  # later tests add commands
    seconds = {row["stage"]: row["seconds"] for row in first}
    assert [row["stage"] for row in first] == [
        "setup", "teacher/compiled_calls", "teacher/checkpoints", "teacher",
        "distill/compiled_calls", "distill/checkpoints", "distill", "export", "eval", "plots"]
    assert all(math.isfinite(value) and value > 0 for value in seconds.values()), seconds
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for phase in ("teacher", "distill"):
        calls = sum(row.get("seconds", 0.0) for row in metrics if row["phase"] == phase)
        assert seconds[f"{phase}/compiled_calls"] == pytest.approx(calls, rel=1e-9)
        assert seconds[f"{phase}/compiled_calls"] + seconds[f"{phase}/checkpoints"] < seconds[phase]
    assert "wall clock: setup " in printed and "teacher " in printed.split("wall clock:")[1]
    total = float(printed.split(f"artifacts in {out}/ (")[1].split(" s)")[0])
    top_level = sum(value for stage, value in seconds.items() if "/" not in stage)
    assert top_level <= total + 0.5  # the printed total rounds to the second
    assert "Wall clock of the last command" in (out / "README.md").read_text()


def test_eval_and_export_phases_read_an_existing_run(smoke_run, capsys):
    out, _, _ = smoke_run
    before = (out / "eval.json").read_text()
    (out / "eval.json").unlink()
    assert main(["--phase", "eval", "--from", str(out), "--quiet"]) == 0
    assert json.loads((out / "eval.json").read_text())["student"] == json.loads(before)["student"]
    assert main(["--phase", "export", "--from", str(out / "checkpoints" / "student"), "--quiet"]) == 0
    assert "bit-identical to in-process: True" in capsys.readouterr().out
    assert json.loads((out / "eval.json").read_text())["panel"]["distribution"] == "training"


def test_eval_on_a_shifted_distribution_goes_to_a_new_directory(smoke_run, tmp_path):
    out, _, _ = smoke_run
    shifted = tmp_path / "noisy"
    assert main(["--phase", "eval", "--from", str(out), "--out", str(shifted), "--quiet",
                 "--set", 'eval_env_overrides=[["noise_std", 0.3]]']) == 0
    report = json.loads((shifted / "eval.json").read_text())
    assert report["panel"]["distribution"] == "shifted" and report["panel"]["env_overrides"] == {"noise_std": 0.3}
    assert report["panel"]["env_fingerprint"] != report["env"]  # the training env is still recorded
    original = json.loads((out / "eval.json").read_text())
    assert report["student"] != original["student"]  # same seeds, noisier sensors
    assert "shifted distribution" in (shifted / "eval.md").read_text()


def test_distill_phase_forks_a_run_from_a_teacher_checkpoint(smoke_run, tmp_path):
    out, _, _ = smoke_run
    fork = tmp_path / "gru"
    args = ["--phase", "distill", "--from", str(out / "checkpoints" / "teacher" / "2"), "--out", str(fork),
            "--set", "distill.student.kind=gru", "--set", "distill.student.gru_size=8", "--quiet"]
    assert main(args) == 0
    config = json.loads((fork / "config.json").read_text())
    assert config["distill"]["student"]["kind"] == "gru" and config["ppo"] == json.loads((out / "config.json").read_text())["ppo"]
    assert checkpoint.complete_steps(fork / "checkpoints" / "student")[-1] == 2
    # A second distill into the same directory without --resume would overwrite: refused.
    assert main(["--phase", "distill", "--from", str(fork), "--quiet"]) == 2


def test_a_student_from_an_older_teacher_checkpoint_is_evaluated_against_that_teacher(smoke_run, tmp_path):
    """Distilled from teacher update 0 of a run whose newest teacher is update 2: the panel (in a
    later, separate eval call, and in a fork of it) must pair the student with update 0."""
    out, _, _ = smoke_run
    assert 0 in checkpoint.complete_steps(out / "checkpoints" / "teacher")
    fork = tmp_path / "from0"
    assert main(["--phase", "distill", "--from", str(out / "checkpoints" / "teacher" / "0"), "--out", str(fork),
                 "--quiet"]) == 0
    assert json.loads((fork / "teacher_step.json").read_text()) == {"update": 0}
    assert main(["--phase", "eval", "--from", str(fork), "--quiet"]) == 0
    newest = json.loads((out / "eval.json").read_text())["teacher"]  # update 2 on the same panel seeds
    assert json.loads((fork / "eval.json").read_text())["teacher"] != newest
    again = tmp_path / "again"
    assert main(["--phase", "eval", "--from", str(fork), "--out", str(again), "--quiet"]) == 0
    assert json.loads((again / "eval.json").read_text())["teacher"] == json.loads((fork / "eval.json").read_text())["teacher"]


@pytest.mark.parametrize(
    "setting, message",
    [
        ("ppo.num_envs=8", "cannot change ['ppo.num_envs']"),
        ("distill.total_env_steps=128", "distill.total_env_steps=128 is below the run's 256"),
        ("ppo.total_env_steps=100000", "a student was distilled from this run's teacher"),
        ("distill.total_env_steps=-1", "distill.total_env_steps"),
    ],
)
def test_resume_may_only_raise_a_budget(smoke_run, capsys, setting, message):
    out, _, _ = smoke_run
    config_before = (out / "config.json").read_text()
    assert main(["--resume", str(out), "--set", setting, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert (out / "config.json").read_text() == config_before
    assert not (out / "budget_changes.jsonl").exists()


def test_unreadable_teacher_step_file_is_named(tmp_path):
    from distill_jax.run.pipeline import Run, RunError

    run = Run(tmp_path, config=None, env=None)  # teacher_step reads only the directory
    assert run.teacher_step is None
    (tmp_path / "teacher_step.json").write_text('{"update": "latest"}')
    with pytest.raises(RunError, match=r"teacher_step.json: unreadable.*\{\"update\": <int>\}"):
        run.teacher_step


@pytest.mark.parametrize(
    "args, message",
    [
        (["--phase", "eval"], "needs --from RUN_DIR"),
        (["--phase", "eval", "--from", "no/such/run"], "no/such/run: no such run directory"),
        (["--phase", "distill", "--from", "{tmp}"], "not inside a run directory"),
        (["--resume", "no/such/run"], "no such run directory"),
        (["--resume", "{tmp}", "--env", "cartpole"], "--resume uses the run's recorded config.json"),
        (["--phase", "teacher", "--from", "{tmp}"], "--from is read by the distill, eval and export phases"),
        (["--phase", "export", "--from", "{tmp}/run/checkpoints/teacher/2"],
         "--phase export exports the run's finished student; --from {tmp}/run/checkpoints/teacher/2 names a teacher"),
        (["--phase", "eval", "--from", "{tmp}/run/checkpoints/student/2"], "names a student checkpoint"),
        (["--phase", "distill", "--from", "{tmp}/run/checkpoints/student"], "is a student checkpoint"),
        (["--phase", "bogus"], "argument --phase: invalid choice: 'bogus'"),
    ],
)
def test_bad_phase_arguments(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) if "bogus" in args else _returns(2) as status:
        status.value = main(args)
    assert message.replace("{tmp}", str(tmp_path)) in one_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


class _returns:
    """``with _returns(2) as status: status.value = f()`` asserts ``f()`` returned 2 (the twin of
    ``pytest.raises(SystemExit)``, for argparse's refusals, which exit instead of returning)."""

    def __init__(self, expected):
        self.expected, self.value = expected, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        assert exc[0] is not None or self.value == self.expected, self.value


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--phase", "--preset", "--config", "--env", "--seed", "--num-seeds", "--out", "--from", "--resume",
                   "--set", "--quiet", "--verbose"):
        assert option in text
    assert "(default: all)" in text and "(default: default)" in text
    assert "(default: None)" not in text and "(default: [])" not in text and "(default: False)" not in text
    from distill_jax.envs import describe_envs

    tasks = text.split("tasks (--env):")[1].split("examples:")[0]
    for name, description in describe_envs().items():
        assert re.search(rf"^  {name} +{re.escape(description)}$", tasks, re.MULTILINE), name
    assert "python -m distill_jax.train --preset smoke --out runs/smoke" in text.split("examples:")[1]
    assert "register_env(name, factory, description)" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "moon_lander"], "unknown environment 'moon_lander'"),
        (["--set", "ppo.num_envs=-4"], "ppo.num_envs=-4"),
        (["--set", "ppo.num_minibatches=3"], "must divide num_envs * unroll_length"),
        (["--set", "ppo.bogus=1"], "unknown config field 'ppo.bogus'"),
        (["--set", "ppo.learning_rate=fast"], "ppo.learning_rate='fast': expected a number"),
        (["--config", "no/such/file.json"], "no such file"),
        (["--num-seeds", "0"], "num_seeds=0"),
        (["--set", "ppo.learning_rate=nan"], "ppo.learning_rate=nan: must be a finite number"),
        (["--set", "distill.objective.ent_coef=-inf"], "distill.objective.ent_coef=-inf: must be a finite number"),
        (["--sweep", "ppo.learning_rate=0.001,NaN"], "--sweep ppo.learning_rate: 'NaN' must be a finite number"),
        (["--config", "{tmp}/nan.json"], "ppo.clip_eps=nan: must be a finite number"),
        (["--config", "{tmp}/inf.json"], "distill.objective.ent_coef=-inf: must be a finite number"),
    ],
)
def test_bad_arguments_give_one_clear_error_and_write_nothing(tmp_path, capsys, args, message):
    (tmp_path / "nan.json").write_text('{"ppo": {"clip_eps": NaN}}')  # json.loads reads NaN and Infinity
    (tmp_path / "inf.json").write_text('{"distill": {"objective": {"ent_coef": -Infinity}}}')
    before = snapshot(tmp_path)
    out = tmp_path / "run"
    assert main(["--preset", "smoke", "--out", str(out), *[a.replace("{tmp}", str(tmp_path)) for a in args]]) == 2
    assert message in one_error(capsys.readouterr().err)
    assert snapshot(tmp_path) == before


def test_existing_nonempty_out_dir_is_refused(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["--preset", "smoke", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_every_preset_and_config_file_resolves_to_a_valid_config():
    import pathlib

    from distill_jax.envs import list_envs
    from distill_jax.run.presets import GPU, preset
    from distill_jax.train import build_parser, resolve_config

    for name, config in GPU.items():
        assert name in list_envs() and config.env == name
        assert preset("gpu", name) is config
        config.validate()
    files = sorted((pathlib.Path(__file__).parents[1] / "experiments" / "configs").glob("*.json"))
    assert files
    for path in files:
        resolve_config(build_parser().parse_args(["--config", str(path)]))  # raises on an unknown field
    with pytest.raises(ConfigError, match="no configuration for env 'moon_lander'"):
        preset("gpu", "moon_lander")


def test_the_default_preset_runs_the_task_where_privilege_matters_and_a_named_task_gets_its_own():
    from distill_jax.run.presets import DEFAULT, preset
    from distill_jax.train import build_parser, resolve_config

    bare = resolve_config(build_parser().parse_args([]))
    assert bare == preset("default", "cartpole_hidden") and bare.env == "cartpole_hidden" and bare.baseline.enabled
    assert resolve_config(build_parser().parse_args(["--env", "cartpole"])) == preset("default", "cartpole")
    assert resolve_config(build_parser().parse_args(["--env", "brax_inverted_pendulum"])) == dataclasses.replace(
        DEFAULT, env="brax_inverted_pendulum")
    assert resolve_config(build_parser().parse_args(["--preset", "smoke"])).env == "cartpole"


def test_a_config_file_naming_its_task_gets_that_tasks_preset(tmp_path):
    from distill_jax.run.presets import preset
    from distill_jax.train import build_parser, resolve_config

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"env": "cartpole", "seed": 3}))
    assert resolve_config(build_parser().parse_args(["--config", str(path)])) == dataclasses.replace(
        preset("default", "cartpole"), seed=3)
    path.write_text(json.dumps({"env": ["cartpole"]}))
    with pytest.raises(ConfigError, match="env"):
        resolve_config(build_parser().parse_args(["--config", str(path)]))


def test_reset_pool_options_reach_both_phases_batched_envs(tmp_path):
    import jax

    from distill_jax.run import pipeline
    from distill_jax.config import RunConfig, apply_override

    config = apply_override(RunConfig(), "ppo.reset_pool=true")
    run = pipeline.create_run(tmp_path / "run", config)
    teacher_build, teacher_template = pipeline._teacher_setup(run)
    student_build, _, student_template = pipeline._student_setup(run)
    assert teacher_build.env.reset_pool and not student_build.env.reset_pool
    assert "reset_pool" in jax.eval_shape(teacher_template).env_state.info
    assert "reset_pool" not in jax.eval_shape(student_template).env_state.info
    assert json.loads((run.path / "config.json").read_text())["ppo"]["reset_pool"] is True


# ---------------------------------------------------------------- first contact: what a person sees
def test_the_first_line_is_printed_before_jax_is_imported(tmp_path):
    """Everything the first line needs (flags, preset, config, --out) is decided without JAX, which
    takes seconds to import; ``main`` prints it right after :func:`plan_command`."""
    probe = ("import sys\nfrom distill_jax.run.cli import build_parser, plan_command\n"
             f"plan = plan_command(build_parser().parse_args(['--preset', 'smoke', '--out', {str(tmp_path / 'run')!r}]))\n"
             "print(plan.header)\nprint(sorted(m for m in ('jax', 'mujoco', 'numpy') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    header, imported = done.stdout.splitlines()
    assert header == f"distill_jax: cartpole, preset smoke -> {tmp_path / 'run'} (teacher, distill, export, eval)"
    assert imported == "[]"


def test_a_smoke_run_says_what_it_does_and_prints_no_third_party_noise(smoke_run):
    out, printed, errors = smoke_run
    lines = printed.splitlines()
    assert lines[0] == f"distill_jax: cartpole, preset smoke -> {out} (teacher, distill, export, eval)"
    assert lines[1] == "[setup] loading JAX, MuJoCo and the task"
    in_order = ["[teacher] initialising", "[teacher] training: PPO on cartpole", "[teacher] | update 2/2",
                "[teacher] finished 2 updates", "[distill] handing the trained teacher over, frozen",
                "[distill] training: mlp student from teacher update 2", "[distill] finished 2 updates",
                "[export] writing the deployable student", "[eval] scoring the teacher and the student on 8 held-out",
                "[eval] running the leak audit", "[plots] drawing the plots", "| policy |",
                f"curves: tensorboard --logdir {out / 'tensorboard'}"]
    found = [next(i for i, line in enumerate(lines) if line.startswith(start)) for start in in_order]
    assert found == sorted(found), found
    # Each training phase's update program is reported, compiled or loaded from the cache.
    for phase in ("teacher", "distill"):
        assert re.search(rf"^\[{phase}\] (compiled 'run' in|loaded 'run' from the XLA cache in) [\d.]+ s", printed,
                         re.MULTILINE), phase
    assert errors == ""
    assert not [line for line in lines if NOISE.search(line)]


def test_noise_is_silenced_at_its_source_and_shown_with_verbose():
    """The warp lines come from ``print`` on the first import of ``mujoco.mjx``; absl warnings,
    Brax's deprecation warning and other threads' stderr are filtered inside :func:`noise.silenced` only."""
    probe = """
import logging, sys, threading, warnings
from distill_jax.run import noise
verbose = sys.argv[1] == "verbose"
with noise.silenced(verbose):
    if not verbose:
        noise.import_mjx_quietly()  # as the command does
    import mujoco.mjx
    logging.getLogger("absl").warning("orbax says hello")
    warnings.warn("Brax System, piplines and environments are not actively being maintained.", UserWarning)
    worker = threading.Thread(target=lambda: print("Event loop is closed", file=sys.stderr))
    worker.start()
    worker.join()
    print("the command's own line", file=sys.stderr)
logging.getLogger("absl").warning("after the block")
"""
    quiet, loud = (subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, timeout=120)
                   for mode in ("default", "verbose"))
    if "Failed to import warp" not in loud.stdout:
        pytest.skip("warp is installed here: mujoco.mjx prints nothing to silence")
    assert quiet.stdout == "" and quiet.stderr.splitlines() == ["the command's own line", "after the block"]
    assert "orbax says hello" in loud.stderr and "not actively being maintained" in loud.stderr
    assert "Event loop is closed" in loud.stderr


def test_xla_cpp_log_lines_while_compiling_are_dropped_inside_the_block_and_shown_with_verbose(tmp_path):
    """XLA's C++ ERROR lines during a compilation (as its "Very slow compile?" banner after two minutes)
    are dropped inside :func:`noise.silenced`, shown with ``--verbose``, and back after the block. A dump
    directory that cannot be created makes XLA log one such line per compilation, at once."""
    (tmp_path / "a_file").write_text("")
    probe = """
import sys
import jax
from distill_jax.run import noise
with noise.silenced(sys.argv[1] == "verbose"):
    jax.jit(lambda x: x + 1.0)(1.0)
    print("inside", file=sys.stderr)
jax.jit(lambda x: x * 3.0)(1.0)
"""
    env = {**os.environ, "XLA_FLAGS": f"--xla_dump_to={tmp_path / 'a_file' / 'dump'}"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    quiet, loud = (subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, timeout=120,
                                  env=env) for mode in ("default", "verbose"))
    assert quiet.returncode == loud.returncode == 0, (quiet.stderr, loud.stderr)
    dump_error = "Could not create directory"
    before, after = quiet.stderr.split("inside\n")
    assert dump_error not in before and dump_error in after, quiet.stderr  # restored after the block
    assert dump_error in loud.stderr.split("inside\n")[0], loud.stderr


@pytest.mark.parametrize("where, message", [
    ("{tmp}/a_file/run", "cannot create the run directory: {tmp}/a_file is a file"),
    ("{tmp}/read_only/run", "cannot create the run directory: {tmp}/read_only is not writable"),
    ("/proc/distill_jax_run", "/proc/distill_jax_run: cannot create the run directory"),
])
def test_an_unusable_out_directory_is_one_line(tmp_path, capsys, where, message):
    (tmp_path / "a_file").write_text("keep")
    (tmp_path / "read_only").mkdir(mode=0o555)
    if "read_only" in where and os.access(tmp_path / "read_only", os.W_OK):
        pytest.skip("running as root: a mode-555 directory is still writable")
    before = snapshot(tmp_path)
    assert main(["--preset", "smoke", "--out", where.replace("{tmp}", str(tmp_path))]) == 2
    assert message.replace("{tmp}", str(tmp_path)) in one_error(capsys.readouterr().err)
    assert snapshot(tmp_path) == before


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage, phase_dir", [("truncate", "teacher"), ("delete", "student")])
def test_a_damaged_checkpoint_names_the_file_and_the_previous_one(smoke_run, tmp_path, capsys, damage, phase_dir):
    out, _, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    step_dir = run / "checkpoints" / phase_dir / "2"
    victim = _largest_array_file(step_dir)
    size = victim.stat().st_size
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: size // 2])
    else:
        victim.unlink()
    before = snapshot(run)
    assert main(["--resume", str(run)]) == 2
    line = one_error(capsys.readouterr().err)
    name = victim.relative_to(step_dir)
    problem = f"is truncated ({size // 2:,} of {size:,} bytes)" if damage == "truncate" else "is missing"
    assert line == (f"error: {step_dir}: damaged checkpoint, {name} {problem}; the previous checkpoint "
                    f"{step_dir.parent / '1'} is intact, to continue from it: mv {step_dir} "
                    f"{run / 'checkpoints' / f'{phase_dir}-2.damaged'}")
    assert snapshot(run) == before


def test_a_damaged_checkpoint_without_a_file_list_is_one_line_too(smoke_run, tmp_path):
    """A checkpoint written before the file lists: orbax's own read fails, and the error names the
    array, without the TensorStore repr and the "Event loop is closed" reports of the aborted reads."""
    out, _, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    for listed in (run / "checkpoints").rglob(checkpoint.FILES_MANIFEST):
        listed.unlink()
    for data in (run / "checkpoints" / "teacher" / "2" / "state" / "ocdbt.process_0" / "d").iterdir():
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    before = snapshot(run)
    done = command("--phase", "eval", "--from", str(run))
    printed, errors = done.communicate(timeout=600)
    assert done.returncode == 2
    line = one_error(errors)
    assert re.fullmatch(rf"error: {run}/checkpoints/teacher/2: damaged checkpoint, array \S+ is unreadable \(.+\)", line)
    assert "TensorStore" not in line and not NOISE.search(printed)
    assert snapshot(run) == before


def test_ctrl_c_names_the_command_that_continues(tmp_path):
    out = tmp_path / "run"
    victim = command("--preset", "smoke", "--out", str(out))
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoints" / "teacher" / "0" / "commit_success.txt").exists():
        assert victim.poll() is None, victim.communicate()
        time.sleep(0.1)
    victim.send_signal(signal.SIGINT)
    printed, errors = victim.communicate(timeout=120)
    assert victim.returncode == 130
    assert errors.splitlines() == [
        f"interrupted; the checkpoints written so far are kept. Continue with: python -m distill_jax.train --resume {out}"]
    assert not [line for line in printed.splitlines() if NOISE.search(line)]
    assert checkpoint.complete_steps(out / "checkpoints" / "teacher")[0] == 0


def test_resuming_a_finished_run_says_it_is_complete_and_writes_nothing(smoke_run, tmp_path, capsys):
    out, _, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = snapshot(run)
    assert main(["--resume", str(run)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == (
        f"{run} is complete (teacher 2/2 updates, student 2/2, evaluated, exported); nothing to resume. "
        f"To train the student longer: python -m distill_jax.train --resume {run} --set distill.total_env_steps=512; "
        f"to re-evaluate: python -m distill_jax.train --phase eval --from {run}")
    assert snapshot(run) == before


def test_a_resume_continues_from_the_first_unfinished_phase(smoke_run, tmp_path):
    from distill_jax.run import pipeline
    from distill_jax.run.cli import phases_of

    out, _, _ = smoke_run
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)
    run = pipeline.open_run(run_dir)
    everything = phases_of("all", run.config)
    assert pipeline.unfinished_phases(run, everything) == ()
    (run_dir / "eval.json").unlink()
    assert pipeline.unfinished_phases(run, everything) == ("eval",)
    with (run_dir / "wall_clock.jsonl").open("a") as f:  # the student trained again after the export
        f.write(json.dumps({"invocation": "later", "stage": "distill", "seconds": 1.0}) + "\n")
    assert pipeline.unfinished_phases(run, everything) == ("export", "eval")
    shutil.rmtree(run_dir / "checkpoints" / "student" / "2")
    assert pipeline.unfinished_phases(run, everything) == ("distill", "export", "eval")


def test_verbose_adds_the_traceback_and_a_bug_is_one_line_that_says_so(tmp_path, capsys, monkeypatch):
    args = ["--preset", "smoke", "--out", str(tmp_path / "run"), "--set", "ppo.learning_rate=nan"]
    assert main(args) == 2
    assert one_error(capsys.readouterr().err) == "error: ppo.learning_rate=nan: must be a finite number"
    assert main([*args, "--verbose"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.splitlines()[-1] == "error: ppo.learning_rate=nan: must be a finite number"

    from distill_jax.run import cli

    def broken(*_):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "open_target", broken)
    assert main(["--preset", "smoke", "--out", str(tmp_path / "run")]) == 1
    assert one_error(capsys.readouterr().err) == (
        "error: unexpected ZeroDivisionError: division by zero (run again with --verbose for the traceback, "
        "and please report it)")
    with pytest.raises(ZeroDivisionError):
        main(["--preset", "smoke", "--out", str(tmp_path / "run"), "--verbose"])

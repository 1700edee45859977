"""``python -m distill_jax.train``: the smoke pipeline end to end, and clear errors for bad arguments."""

import json
import math

import pytest

from distill_jax.run import checkpoint
from distill_jax.config import DEFAULT_MASK_RULE, ConfigError
from distill_jax.run.report import EVAL_KEYS
from distill_jax.train import main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``--preset smoke`` end to end (every phase), shared by the tests that read its run directory."""
    out = tmp_path_factory.mktemp("cli") / "run"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--preset", "smoke", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_smoke_preset_runs_every_phase_and_writes_the_artifact(smoke_run):
    out, printed = smoke_run
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
    # The config names no rule (null), so the env's declared one, else the library default, is in force.
    assert report["config"]["distill"]["mask"]["rule"] is None
    assert report["schema"]["mask_rule"] == list(DEFAULT_MASK_RULE)
    assert len(report["members"]) == 1 and report["members"][0]["student"] == report["student"]
    assert not set(report["panel"]["seeds"]) & set(report["panel"]["training_seeds"])
    phases = {json.loads(line)["phase"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert phases == {"teacher", "distill"}
    verification = json.loads((out / "export" / "verification.json").read_text())
    assert verification["bit_identical_to_in_process"] and verification["privileged_field_rejected"]
    assert "teacher (privileged)" in printed and "leak audit: PASSED" in printed
    assert "export/" in printed and "[distill]" in printed


def test_the_wall_clock_names_every_stage_and_agrees_with_the_metrics(smoke_run):
    out, printed = smoke_run
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
    out, _ = smoke_run
    before = (out / "eval.json").read_text()
    (out / "eval.json").unlink()
    assert main(["--phase", "eval", "--from", str(out), "--quiet"]) == 0
    assert json.loads((out / "eval.json").read_text())["student"] == json.loads(before)["student"]
    assert main(["--phase", "export", "--from", str(out / "checkpoints" / "student"), "--quiet"]) == 0
    assert "bit-identical to in-process: True" in capsys.readouterr().out
    assert json.loads((out / "eval.json").read_text())["panel"]["distribution"] == "training"


def test_eval_on_a_shifted_distribution_goes_to_a_new_directory(smoke_run, tmp_path):
    out, _ = smoke_run
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
    out, _ = smoke_run
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
    out, _ = smoke_run
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
    out, _ = smoke_run
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
    ],
)
def test_bad_phase_arguments(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--phase", "--preset", "--config", "--env", "--seed", "--num-seeds", "--out", "--from", "--resume",
                   "--set", "--quiet"):
        assert option in text
    assert "(default: all)" in text and "(default: default)" in text


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
    ],
)
def test_bad_arguments_give_one_clear_error_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["--preset", "smoke", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


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

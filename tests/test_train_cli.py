"""``python -m distill_jax.train``: the smoke pipeline end to end, and clear errors for bad arguments."""

import json
import math

import pytest

from distill_jax.report import EVAL_KEYS
from distill_jax.train import main


def test_smoke_preset_runs_every_phase_and_writes_the_artifact(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--preset", "smoke", "--out", str(out)]) == 0
    for name in ["config.json", "schema.json", "env_fingerprint.json", "metrics.jsonl", "eval.json", "eval.md"]:
        assert (out / name).is_file(), name
    report = json.loads((out / "eval.json").read_text())
    assert set(EVAL_KEYS) <= set(report)
    for role in ("teacher", "student"):
        for key in ("return_mean", "return_std", "success_rate", "fall_rate"):
            assert math.isfinite(report[role][key]), (role, key)
    assert all(check["passed"] for check in report["leak_checks"].values())
    assert report["schema_diff"]["teacher_actor_to_student_actor"]["passed"]
    assert report["schema"]["mask_rule"] == list(report["config"]["distill"]["mask_rule"])
    assert not set(report["panel"]["seeds"]) & set(report["panel"]["training_seeds"])
    phases = {json.loads(line)["phase"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert phases == {"teacher", "distill"}
    printed = capsys.readouterr().out
    assert "teacher (privileged)" in printed and "leak audit: PASSED" in printed


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

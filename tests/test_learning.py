"""Learning tests: the tasks are actually solved (slow: run by .ci/run after the default suite)."""

import json

import jax

import pytest

from distill_jax.config import NetworkConfig, PPOConfig
from distill_jax.distill.update import FrozenTeacher
from distill_jax.envs import get_env
from distill_jax.evaluate import Panel, make_teacher_evaluator
from distill_jax.ppo.teacher import train_teacher
from distill_jax.treeops import first_seed
from distill_jax.train import main

pytestmark = pytest.mark.slow


def test_default_run_shows_the_teacher_and_distillation_claims_on_the_default_task(tmp_path):
    # The CLI's default run (cartpole_hidden, seed 0): the privileged teacher beats the deployable-only
    # baseline and the distilled student beats it too, both with paired intervals above zero (measured
    # on this run: teacher - baseline 79.0 [57.6, 100.4], student - baseline 73.6 [52.5, 94.8];
    # experiments/results/default_task_cpu.md), with the leak audit passing and the export checked.
    assert main(["--out", str(tmp_path / "run"), "--quiet"]) == 0
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["config"]["env"] == "cartpole_hidden"
    claims = report["claims"]
    assert claims["teacher"]["supported"] is True, claims["teacher"]
    assert claims["deployment"]["distillation_beats_baseline"] is True, claims["deployment"]
    assert report["teacher"]["fall_rate"] <= 0.05, report["teacher"]
    assert all(c["passed"] for c in report["leak_checks"].values())
    verification = json.loads((tmp_path / "run" / "export" / "verification.json").read_text())
    assert verification["bit_identical_to_in_process"] and verification["privileged_field_rejected"]


def test_cartpole_pipeline_solves_cartpole_and_student_reaches_95_percent(tmp_path):
    # The cart-pole's default run: teacher near-maximal (episode return <= 250), student >= 95 % of it
    # on held-out seeds with 10 % of the teacher's env steps (issue #48), with the leak audit passing.
    assert main(["--env", "cartpole", "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    teacher, student = report["teacher"], report["student"]
    assert teacher["return_mean"] >= 0.9 * 250, teacher
    assert student["return_mean"] >= 0.95 * teacher["return_mean"], (student, teacher)
    assert all(c["passed"] for c in report["leak_checks"].values())
    assert report["diagnosis"]["overall"]["verdict"] == "healthy", report["diagnosis"]["overall"]
    budgets = report["config"]["distill"]["total_env_steps"], report["config"]["ppo"]["total_env_steps"]
    assert 10 * budgets[0] <= budgets[1], budgets
    verification = json.loads((tmp_path / "run" / "export" / "verification.json").read_text())
    assert verification["bit_identical_to_in_process"] and verification["privileged_field_rejected"]


def test_gpu_cartpole_preset_student_reaches_95_percent_of_a_converged_teacher(tmp_path):
    # The GPU preset's teacher (6.5M env steps, ~150 s on 2 cores) is far more confident than the
    # default one; with the reverse KL its student reached only 0.90-0.92 of it over three seeds.
    assert main(["--preset", "gpu", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    teacher, student = report["teacher"], report["student"]
    assert teacher["return_mean"] >= 0.95 * 250, teacher
    assert student["return_mean"] >= 0.95 * teacher["return_mean"], (student, teacher)
    assert student["fall_rate"] <= teacher["fall_rate"] + 0.05, (student, teacher)


def test_teacher_solves_brax_inverted_pendulum():
    env = get_env("brax_inverted_pendulum", randomize=False, history_length=0, noise_std=0.0)
    config = PPOConfig(num_envs=32, unroll_length=8, num_minibatches=4, num_epochs=4, learning_rate=1e-3,
                       ent_coef=1e-2, gamma=0.97, total_env_steps=32 * 8 * 80,
                       network=NetworkConfig((64, 64), (128, 128), "swish"))
    result = train_teacher(env, config, seed=0, updates_per_call=40)
    teacher = first_seed(FrozenTeacher(result.state.params["actor"], result.state.obs_stats))
    scores = make_teacher_evaluator(env, result.nets.actor, Panel(tuple(range(10**6, 10**6 + 8))))(teacher)
    assert scores["return_mean"] >= 950, scores

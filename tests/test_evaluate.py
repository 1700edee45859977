"""Panel scoring against hand-computed values: only each env's first episode counts."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.evaluate import (breakdown, explained_action_variance, first_episode_scores, summarize,
                                  wilson_interval)
from distill_jax.run.report import markdown_table
from distill_jax.rollout import Transition


def _transition(metrics: dict) -> Transition:
    """``[T=4, B=2]``: env 0 falls at step 1 (its later steps belong to a second episode);
    env 1 runs to its time limit at step 3."""
    terminated = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    truncated = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    reward = jnp.array([[1.0, 0.5], [2.0, 0.5], [100.0, 0.5], [100.0, 1.5]])
    first = jnp.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    return Transition(obs={}, next_obs={}, policy=None, reward=reward, terminated=terminated,
                      truncated=truncated, first=first, metrics=metrics, episode={})


def test_first_episode_scores_match_hand_computed_values():
    tracking = jnp.array([[0.2, 0.1], [0.4, 0.1], [9.0, 0.1], [9.0, 0.5]])
    success = jnp.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    scores = first_episode_scores(_transition({"tracking_error": tracking, "success": success}))

    np.testing.assert_allclose(scores["return"], [3.0, 3.0])
    np.testing.assert_allclose(scores["length"], [2.0, 4.0])
    np.testing.assert_allclose(scores["fall"], [1.0, 0.0])
    np.testing.assert_allclose(scores["success"], [0.0, 1.0])  # a fall is never a success
    # Mean over the first episode's steps only: env 0's 9.0s come after its fall.
    np.testing.assert_allclose(scores["tracking_error"], [0.3, 0.2], rtol=1e-6)

    summary = summarize(scores)
    assert summary["tracking_error_mean"] == pytest.approx(0.25)
    assert summary["fall_rate"] == 0.5 and summary["episode_length_mean"] == 3.0


def test_tasks_without_a_tracking_metric_get_no_tracking_column():
    scores = first_episode_scores(_transition({}))
    assert "tracking_error" not in scores and "tracking_error_mean" not in summarize(scores)


def _report(extra: dict) -> dict:
    row = {"return_mean": 10.0, "return_std": 1.0, "success_rate": 0.5, "success_rate_ci95": [0.2152, 0.7848],
           "fall_rate": 0.125, "fall_rate_ci95": [0.0224, 0.4709], "episode_length_mean": 900.0, "episodes": 8}
    return {"teacher": {**row, **extra}, "student": {**row, **extra},
            "imitation": {"kl": 0.1, "action_mse": 0.01, "masked/any": 0.0}, "leak_checks": {}}


def test_the_panel_table_shows_the_tracking_error_only_when_measured():
    with_tracking = markdown_table(_report({"tracking_error_mean": 0.2346}))
    header = with_tracking.splitlines()[0]
    assert header.endswith("| mean tracking error |")
    assert "| 0.235 |" in with_tracking
    assert "tracking" not in markdown_table(_report({}))


def test_the_panel_table_gives_each_rate_its_interval():
    table = markdown_table(_report({}))
    assert "| success rate (95 % CI) | fall rate (95 % CI) |" in table.splitlines()[0]
    assert "| 10.0 ± 1.0 | 0.50 (0.22–0.78) | 0.12 (0.02–0.47) | 900.0 |" in table


def _wilson_by_bisection(count: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The interval's ends as the two roots of (p_hat - p)^2 = z^2 p (1 - p) / n, found by bisection."""
    p_hat = count / n

    def outside(p):  # > 0 where p lies outside the interval
        return (p_hat - p) ** 2 - z * z * p * (1 - p) / n

    def root(lo, hi):  # outside(lo) and outside(hi) of opposite signs
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (outside(mid) > 0) == (outside(lo) > 0) else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if count == 0 else root(0.0, p_hat)
    high = 1.0 if count == n else root(p_hat, 1.0)
    return low, high


@pytest.mark.parametrize("count, n", [(0, 32), (7, 32), (32, 32), (1, 8), (13, 256), (128, 256)])
def test_wilson_interval_matches_its_defining_equation(count, n):
    np.testing.assert_allclose(wilson_interval(count, n), _wilson_by_bisection(count, n), atol=1e-9)


def test_wilson_interval_closed_forms_and_bad_input():
    # No events in n trials: the upper end is z^2 / (n + z^2) (0.1072 for 32 episodes).
    assert wilson_interval(0, 32) == (0.0, pytest.approx(1.96**2 / (32 + 1.96**2)))
    low, high = wilson_interval(7, 32)
    assert (round(low, 3), round(high, 3)) == (0.110, 0.388)
    assert wilson_interval(25, 32) == pytest.approx(tuple(1 - x for x in reversed(wilson_interval(7, 32))))
    with pytest.raises(ValueError, match="n=0"):
        wilson_interval(0, 0)


def test_summarize_reports_each_rate_with_its_interval():
    scores = {"return": np.ones(32), "length": np.full(32, 1000.0),
              "success": np.r_[np.ones(25), np.zeros(7)], "fall": np.r_[np.zeros(25), np.ones(7)]}
    summary = summarize(scores)
    assert summary["fall_rate"] == 7 / 32 and summary["episodes"] == 32
    np.testing.assert_allclose(summary["fall_rate_ci95"], wilson_interval(7, 32))
    np.testing.assert_allclose(summary["success_rate_ci95"], wilson_interval(25, 32))


def test_the_schema_names_the_evaluation_wrapper_and_an_unknown_one_is_refused():
    import dataclasses

    from distill_jax.distill.student import make_student
    from distill_jax.envs import get_env
    from distill_jax.evaluate import EVAL_WRAPPERS, eval_wrapper
    from distill_jax.schema import SchemaError

    env = get_env("cartpole")
    student = make_student(env.schema, env.action_size, kind="mlp", hidden=(8,))
    assert env.schema.eval_wrapper in EVAL_WRAPPERS
    eval_wrapper(student, None, None)  # builds the named wrapper's policy
    renamed = student._replace(schema=dataclasses.replace(student.schema, eval_wrapper="actor_with_everything"))
    with pytest.raises(SchemaError, match="eval_wrapper 'actor_with_everything' is unknown"):
        eval_wrapper(renamed, None, None)


def test_across_seed_interval_is_the_student_t_interval():
    from distill_jax.evaluate import t_interval

    got = t_interval([1.0, 2.0, 3.0])  # mean 2, sample sd 1, 2 degrees of freedom: t(0.975, 2) = 4.302653
    assert got["mean"] == 2.0 and got["per_seed"] == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(got["ci95"], [2.0 - 4.302653 / np.sqrt(3), 2.0 + 4.302653 / np.sqrt(3)])
    assert t_interval([5.0])["ci95"] is None  # one seed says nothing about seed-to-seed spread


def test_the_table_of_several_members_gives_each_sweep_point_its_seeds_mean_and_interval():
    from distill_jax.evaluate import across_seeds
    from distill_jax.run.report import members_table

    def member(teacher_return, student_return):
        report = _report({})
        report["teacher"]["return_mean"], report["student"]["return_mean"] = teacher_return, student_return
        return report

    groups = [{"values": {"distill.objective.ent_coef": v}, "num_seeds": 2,
               **across_seeds([member(200.0, s), member(200.0, s + 10.0)])} for v, s in ((0.0, 150.0), (0.1, 180.0))]
    lines = members_table({"across_seeds": groups})
    assert lines[2].startswith("| distill.objective.ent_coef | teacher return | student return |")
    # t(1) = 12.706: 155 ± 12.706 * 5 over the two seeds; the teacher's seeds agree exactly.
    assert lines[4].startswith("| 0 | 200.0 (200.0–200.0) | 155.0 (91.5–218.5) | 0.775 (0.457–1.093) |")
    assert lines[5].startswith("| 0.1 | 200.0 (200.0–200.0) | 185.0 (121.5–248.5) | 0.925")


def test_explained_action_variance_against_its_definition_on_the_valid_steps():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(12, 5, 2)).astype(np.float32)
    student = (teacher + 0.3 * rng.normal(size=teacher.shape)).astype(np.float32)
    valid = (rng.random((12, 5)) > 0.3).astype(np.float32)
    t, s = teacher[valid > 0], student[valid > 0]  # [V, A]
    expected = 1.0 - np.sum((s - t) ** 2) / np.sum((t - t.mean(axis=0)) ** 2)
    got = float(explained_action_variance(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(valid)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert float(explained_action_variance(jnp.asarray(teacher), jnp.asarray(teacher), jnp.asarray(valid))) == 1.0
    # Outputting the teacher's mean action everywhere explains nothing; a constant teacher gives nan.
    mean = np.broadcast_to(t.mean(axis=0), teacher.shape)
    assert float(explained_action_variance(jnp.asarray(mean), jnp.asarray(teacher), jnp.asarray(valid))) == \
        pytest.approx(0.0, abs=1e-5)
    assert np.isnan(float(explained_action_variance(jnp.asarray(student), jnp.zeros_like(teacher), jnp.asarray(valid))))


def test_the_panel_breakdown_groups_each_policys_episodes_by_where_they_started():
    starts = [0, 2, 2, 0, 2, 0]
    teacher = {"return": [10.0, 4.0, 6.0, 12.0, 5.0, 8.0], "fall": [0, 1, 0, 0, 1, 0], "terrain_type": starts}
    student = {"return": [9.0, 1.0, 2.0, 11.0, 3.0, 7.0], "fall": [0, 1, 1, 0, 1, 1], "terrain_type": starts}
    rows = breakdown({"teacher": teacher, "student": student}, "terrain_type", ("rough", "slope_up", "stairs_up"))
    assert [(r["label"], r["episodes"]) for r in rows] == [("rough", 3), ("stairs_up", 3)]  # no episode on slope_up
    assert rows[0]["teacher"]["return_mean"] == pytest.approx(10.0) and rows[0]["student"]["fall_rate"] == \
        pytest.approx(1 / 3)
    assert rows[1]["teacher"]["fall_rate"] == pytest.approx(2 / 3) and rows[1]["student"]["return_mean"] == \
        pytest.approx(2.0)
    assert rows[1]["student"]["fall_rate_ci95"] == pytest.approx(list(wilson_interval(3, 3)))
    elsewhere = dict(student, terrain_type=[0, 0, 2, 0, 2, 0])
    with pytest.raises(ValueError, match="'student' started its episodes elsewhere"):
        breakdown({"teacher": teacher, "student": elsewhere}, "terrain_type", ("rough", "slope_up", "stairs_up"))


def test_first_episode_scores_record_what_each_episode_started_on():
    start = jnp.array([[2.0, 1.0], [2.0, 1.0], [0.0, 1.0], [0.0, 1.0]])  # env 0's second episode starts elsewhere
    scores = first_episode_scores(_transition({"terrain_type": start}))
    np.testing.assert_array_equal(scores["start/terrain_type"], [2.0, 1.0])


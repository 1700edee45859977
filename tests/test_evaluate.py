"""Panel scoring against hand-computed values: only each env's first episode counts."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.evaluate import first_episode_scores, summarize
from distill_jax.report import markdown_table
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
    row = {"return_mean": 10.0, "return_std": 1.0, "success_rate": 0.5, "fall_rate": 0.1,
           "episode_length_mean": 900.0, "episodes": 8}
    return {"teacher": {**row, **extra}, "student": {**row, **extra},
            "imitation": {"kl": 0.1, "action_mse": 0.01, "masked/any": 0.0}, "leak_checks": {}}


def test_the_panel_table_shows_the_tracking_error_only_when_measured():
    with_tracking = markdown_table(_report({"tracking_error_mean": 0.2346}))
    header = with_tracking.splitlines()[0]
    assert header.endswith("| mean tracking error |")
    assert "| 0.235 |" in with_tracking
    assert "tracking" not in markdown_table(_report({}))

"""The failure diagnosis: each verdict from the evidence that defines it, in its order of precedence."""

import dataclasses
import math

import pytest

from distill_jax.diagnosis import VERDICTS, Evidence, Thresholds, diagnose, imitates_well

GOOD = Evidence(teacher_return=240.0, student_return=236.0, teacher_fall_rate=0.0, student_fall_rate=0.02,
                kl_teacher_states=0.1, kl_student_states=0.15, leaks_passed=True, export_identical=True)


def verdict_of(**changes):
    return diagnose(dataclasses.replace(GOOD, **changes))


def test_a_student_close_to_its_teacher_is_healthy_and_the_record_is_complete():
    result = diagnose(GOOD)
    assert result["verdict"] == "healthy"
    assert result["thresholds"] == Thresholds().to_dict()
    assert result["evidence"]["student_over_teacher_return"] == pytest.approx(236.0 / 240.0)
    assert result["missing"] == []


def test_a_leak_or_an_export_mismatch_overrides_everything():
    assert verdict_of(leaks_passed=False)["verdict"] == "leakage_removal"
    assert verdict_of(export_identical=False, student_return=10.0)["verdict"] == "leakage_removal"
    assert verdict_of(leaks_passed=None, export_identical=None)["verdict"] == "healthy"  # unchecked is not failed


def test_a_falling_teacher_is_the_teacher_s_fault():
    result = verdict_of(teacher_fall_rate=0.4, student_fall_rate=0.6, student_return=100.0)
    assert result["verdict"] == "teacher_quality" and "40%" in result["reason"]


def test_good_imitation_on_teacher_states_but_not_on_the_students_own_is_coverage():
    result = verdict_of(student_return=120.0, student_fall_rate=0.5, kl_teacher_states=0.1, kl_student_states=2.0)
    assert result["verdict"] == "state_coverage"


def test_poor_imitation_everywhere_needs_the_oracle_to_blame_the_observations():
    poor = dict(student_return=120.0, student_fall_rate=0.5, kl_teacher_states=3.0, kl_student_states=4.0)
    without = verdict_of(**poor)
    assert without["verdict"] == "undetermined"
    assert without["candidates"] == ["observation_insufficiency"]
    assert any("oracle" in m for m in without["missing"])
    assert verdict_of(**poor, oracle_return=238.0)["verdict"] == "observation_insufficiency"
    weak_oracle = verdict_of(**poor, oracle_return=130.0)
    assert weak_oracle["verdict"] == "undetermined" and weak_oracle["candidates"] == ["student capacity or budget"]


def test_the_oracle_decides_even_when_average_imitation_looks_fine():
    # A student that imitates well on average yet falls (the few states its fields cannot tell apart):
    # without an oracle this is undetermined; an oracle that succeeds makes it the observations.
    subtle = dict(student_return=200.0, student_fall_rate=0.3, kl_teacher_states=0.3, kl_student_states=0.35)
    without = verdict_of(**subtle)
    assert without["verdict"] == "undetermined" and "observation_insufficiency" in without["candidates"][0]
    assert verdict_of(**subtle, oracle_return=239.0)["verdict"] == "observation_insufficiency"
    # With a failing oracle, a coverage signature still names coverage.
    drift = dict(student_return=120.0, student_fall_rate=0.5, kl_teacher_states=0.1, kl_student_states=2.0)
    assert verdict_of(**drift, oracle_return=100.0)["verdict"] == "state_coverage"


def test_a_missing_student_state_measurement_is_named_not_guessed():
    result = verdict_of(student_return=120.0, student_fall_rate=0.5, kl_student_states=math.nan)
    assert result["verdict"] == "undetermined"
    assert "imitation on the student's own states" in result["missing"]
    assert result["evidence"]["kl_student_states"] is None  # JSON-able: no NaN


def test_thresholds_decide_and_every_verdict_is_named():
    borderline = dict(student_return=0.9 * 240.0)
    assert verdict_of(**borderline)["verdict"] != "healthy"
    assert diagnose(dataclasses.replace(GOOD, **borderline), Thresholds(healthy_return_ratio=0.9))["verdict"] == "healthy"
    for changes in ({}, {"leaks_passed": False}, {"teacher_fall_rate": 0.5}):
        assert verdict_of(**changes)["verdict"] in VERDICTS


def test_either_view_of_imitation_suffices_and_neither_alone_decides():
    # A forward-KL student: broad scale, large KL, but its deployed actions reproduce the teacher's.
    broad = dict(student_return=120.0, student_fall_rate=0.5, kl_teacher_states=2.5, kl_student_states=8.0,
                 action_r2_teacher_states=0.9, action_r2_student_states=0.2)
    assert imitates_well(2.5, 0.9) and imitates_well(0.3, 0.1) and not imitates_well(2.5, 0.5)
    assert not imitates_well(math.nan, math.nan)  # unmeasured is not good
    result = verdict_of(**broad)
    assert result["verdict"] == "state_coverage"  # good on the teacher's states by R², not on its own
    assert "explained action variance 0.900" in result["reason"]
    # The same KLs without the explained variance: poor on the teacher's states, so no coverage verdict.
    assert verdict_of(**{**broad, "action_r2_teacher_states": math.nan,
                         "action_r2_student_states": math.nan})["verdict"] == "undetermined"
    # Coverage needs the student's own states to be markedly worse by one of the two measures.
    similar = dict(broad, action_r2_student_states=0.75, kl_student_states=3.0)
    assert verdict_of(**similar)["verdict"] == "undetermined"

"""Why a student fails: a rule-based verdict over the evaluation's evidence.

The design documents name four causes of a failing distilled student, and this module decides
between them (or ``healthy``) from numbers the evaluation already co-computes on one panel:

* ``leakage_removal`` – a leak check failed, or the exported student acts differently from the
  in-process one: whatever the figures say, they are not the deployable student's.
* ``teacher_quality`` – the teacher itself fails (falls too often): there is nothing good to imitate.
* ``state_coverage`` – the student imitates well on the teacher's states but not on its own: it
  drifts to states the teacher never showed it (more recovery data, DAgger, noise injection).
* ``observation_insufficiency`` – the student cannot imitate even on the teacher's valid states,
  while an *oracle student* (same architecture and budget, given the privileged fields) can: the
  deployable fields do not determine the teacher's action (more history, a sensor, a belief model).
* ``healthy`` – the student reaches the teacher's return and fall rate within the thresholds.

A verdict the evidence cannot support is not guessed: ``undetermined`` names the candidates and the
missing evidence (e.g. run the oracle student). Every threshold is named and returned with the verdict.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

VERDICTS = ("leakage_removal", "teacher_quality", "healthy", "state_coverage", "observation_insufficiency",
            "undetermined")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The named limits of :func:`diagnose` (recorded in every verdict).

    Attributes:
      healthy_return_ratio: a student at or above this fraction of the teacher's return...
      fall_rate_margin: ...whose fall rate is at most the teacher's plus this, is healthy.
      teacher_fall_rate_max: a teacher that falls in more than this share of episodes fails.
      kl_fit: mean KL (nats per step) at or below which imitation on a set of states is good...
      action_r2_fit: ...or the share of the variance of the teacher's deployed actions that the
        student's deployed actions reproduce (:func:`distill_jax.evaluate.explained_action_variance`)
        at or above which it is good (:func:`imitates_well`: either suffices).
      coverage_ratio: imitation is worse on the student's states when their KL, or their unexplained
        action variance, is at least this multiple of that on the teacher's states (and imitation
        there is not good).
      oracle_return_ratio: an oracle student at or above this fraction of the teacher's return
        shows that the task is learnable by this student given the privileged fields.
    """

    healthy_return_ratio: float = 0.95
    fall_rate_margin: float = 0.05
    teacher_fall_rate_max: float = 0.10
    kl_fit: float = 0.5
    action_r2_fit: float = 0.8
    coverage_ratio: float = 3.0
    oracle_return_ratio: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Evidence:
    """The figures a verdict is decided on (one condition of the panel, one member).

    Attributes:
      teacher_return, student_return: mean panel returns.
      teacher_fall_rate, student_fall_rate: shares of panel episodes that fell.
      kl_teacher_states: the student's KL to the teacher on the teacher's valid states.
      kl_student_states: the same on the student's own states, relabelled by the teacher
        (``nan`` when not measured).
      action_r2_teacher_states, action_r2_student_states: the explained action variance on the same
        two sets of states (``nan`` when not measured: the KL decides).
      leaks_passed: every leak check passed (``None``: not checked here).
      export_identical: the exported student's actions equal the in-process ones (``None``: no export).
      oracle_return: the oracle student's mean panel return (``None``: no oracle was trained).
    """

    teacher_return: float
    student_return: float
    teacher_fall_rate: float
    student_fall_rate: float
    kl_teacher_states: float
    kl_student_states: float = math.nan
    action_r2_teacher_states: float = math.nan
    action_r2_student_states: float = math.nan
    leaks_passed: bool | None = None
    export_identical: bool | None = None
    oracle_return: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(self).items()}


def imitates_well(kl: float, action_r2: float, thresholds: Thresholds = Thresholds()) -> bool:
    """Imitation on a set of states is good when either view of it says so: the KL is at most
    ``kl_fit`` (the student's actions differ from the teacher's by less than the teacher's own
    action noise), or the explained action variance is at least ``action_r2_fit`` (its deployed
    actions reproduce the teacher's variation). Each alone misjudges a healthy student: the KL of a
    forward-KL student is large for its broad action scale even where the mean actions agree, and
    the explained variance is low where the teacher's deployed actions hardly vary (a balanced
    cart-pole: its corrections are within its own noise). ``nan`` figures count as not measured."""
    return bool(kl <= thresholds.kl_fit or action_r2 >= thresholds.action_r2_fit)


def _imitation_text(kl: float, action_r2: float) -> str:
    return f"KL {kl:.3f}" + ("" if math.isnan(action_r2) else f", explained action variance {action_r2:.3f}")


def _ratio(part: float, whole: float) -> float:
    """``part / whole`` for returns of either sign: how far ``part`` got towards ``whole`` (``nan`` at 0)."""
    return part / whole if whole else math.nan


def diagnose(evidence: Evidence, thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The verdict for one condition: ``{"verdict", "reason", "evidence", "thresholds", "missing"}``
    (and ``candidates`` when ``undetermined``).

    Rules in order (the first that holds decides): leakage removal; teacher quality; healthy; then,
    for a failing student, the oracle decides where there is one (it succeeds: observation
    insufficiency; it fails too: state coverage if imitation is good on the teacher's states and
    poor on the student's own, else undetermined); without an oracle, the coverage signature
    decides state coverage, and anything else is ``undetermined`` with the oracle named as missing.
    The oracle is the decisive experiment because averages can hide where a student fails: a
    student can imitate well on average and still fall at the few states its fields cannot tell
    apart.
    """
    e, t = evidence, thresholds
    missing: list[str] = []
    ratio = _ratio(e.student_return, e.teacher_return)

    def verdict(name: str, reason: str, candidates: list[str] | None = None) -> dict[str, Any]:
        out = {"verdict": name, "reason": reason, "evidence": {**e.to_dict(), "student_over_teacher_return": ratio},
               "thresholds": t.to_dict(), "missing": missing}
        return {**out, "candidates": candidates} if candidates is not None else out

    if e.leaks_passed is False or e.export_identical is False:
        what = "a leak check failed" if e.leaks_passed is False else "the exported student acts differently"
        return verdict("leakage_removal", f"{what}: the figures are not the deployable student's")
    if e.teacher_fall_rate > t.teacher_fall_rate_max:
        return verdict("teacher_quality", f"the teacher falls in {e.teacher_fall_rate:.0%} of episodes "
                                          f"(> {t.teacher_fall_rate_max:.0%}): nothing good to imitate")
    if ratio >= t.healthy_return_ratio and e.student_fall_rate <= e.teacher_fall_rate + t.fall_rate_margin:
        return verdict("healthy", f"the student reaches {ratio:.3f} of the teacher's return and falls in "
                                  f"{e.student_fall_rate:.0%} of episodes (teacher {e.teacher_fall_rate:.0%})")
    failing = (f"the student reaches {ratio:.3f} of the teacher's return and falls in {e.student_fall_rate:.0%} "
               f"of episodes (teacher {e.teacher_fall_rate:.0%})")
    fits_teacher_states = imitates_well(e.kl_teacher_states, e.action_r2_teacher_states, t)
    if math.isnan(e.kl_student_states):
        missing.append("imitation on the student's own states")
    # The coverage signature: good on the teacher's states, not on its own, and markedly worse there
    # by the KL or by the unexplained action variance.
    coverage = (fits_teacher_states and not math.isnan(e.kl_student_states)
                and not imitates_well(e.kl_student_states, e.action_r2_student_states, t)
                and (e.kl_student_states >= t.coverage_ratio * e.kl_teacher_states
                     or 1.0 - e.action_r2_student_states >= t.coverage_ratio * (1.0 - e.action_r2_teacher_states)))
    teacher_states = _imitation_text(e.kl_teacher_states, e.action_r2_teacher_states)
    coverage_reason = (f"{failing}; it imitates well on the teacher's states ({teacher_states}) but not on its own "
                       f"({_imitation_text(e.kl_student_states, e.action_r2_student_states)}): it drifts to states "
                       "the teacher never showed it")
    if e.oracle_return is not None:
        oracle_ratio = _ratio(e.oracle_return, e.teacher_return)
        if oracle_ratio >= t.oracle_return_ratio:
            return verdict("observation_insufficiency", f"{failing}, while the oracle student (the same student "
                                                        f"given the privileged fields) reaches {oracle_ratio:.3f}: the "
                                                        "deployable fields do not determine the teacher's action")
        if coverage:
            return verdict("state_coverage", coverage_reason + f"; the oracle student fails too ({oracle_ratio:.3f})")
        return verdict("undetermined", f"{failing}, and the oracle student given the privileged fields reaches only "
                                       f"{oracle_ratio:.3f}: neither the observations nor coverage explain it",
                       ["student capacity or budget"])
    if coverage:
        return verdict("state_coverage", coverage_reason)
    missing.append("an oracle student (the same student given the privileged fields: --set oracle.enabled=true)")
    if not fits_teacher_states:
        return verdict("undetermined", f"{failing}; imitation is poor even on the teacher's states "
                                       f"({teacher_states}; good at KL ≤ {t.kl_fit} or explained variance ≥ "
                                       f"{t.action_r2_fit}): observation "
                                       "insufficiency is likely but unconfirmed without an oracle student",
                       ["observation_insufficiency"])
    return verdict("undetermined", f"{failing} although it imitates well on average on both its own and the "
                                   "teacher's states", ["observation_insufficiency at the few states where it fails",
                                                        "student capacity or budget"])

"""The three claims of a distillation run, and the diagnosis of its student, from one panel.

The design documents ask for three claims evaluated separately but co-computed on the same
held-out panel (same reset keys, so every comparison is paired episode by episode):

* **teacher** — privileged state improves expert behaviour: the teacher against the deployable-only
  baseline (:mod:`distill_jax.references`), ``teacher − baseline`` per episode.
* **imitation** — the student matches useful teacher actions on valid states: the share of the
  variance of the teacher's deployed actions its deployed actions reproduce, its KL and action
  error, on the teacher's valid steps and on its own states relabelled by the teacher; good when
  the KL or the explained variance says so (:func:`distill_jax.diagnosis.imitates_well`).
* **deployment** — the student succeeds with the privileged actor inputs removed: its return and
  falls against the teacher's (and the baseline's, which answers "was distillation worth it?").

A claim is ``supported`` when its paired 95 % interval excludes the null (``True``/``False``), and
``None`` when the interval straddles it or the evidence is missing (named in ``missing``).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from distill_jax.diagnosis import Evidence, Thresholds, diagnose, imitates_well
from distill_jax.distill.update import FrozenTeacher
from distill_jax.evaluate import (Panel, Reference, across_seeds, eval_wrapper, paired_difference, score_members,
                                  teacher_policy)

STATEMENTS = {
    "teacher": "privileged state improves expert behaviour (teacher vs the deployable-only baseline)",
    "imitation": "the student matches useful teacher actions on valid states",
    "deployment": "the student succeeds with privileged actor inputs removed",
}


def reference_policies(config, panel: Panel, baseline_result: Any = None,
                       oracle_result: Any = None) -> dict[str, Reference]:
    """The baseline and the oracle student, where trained, as panel :class:`~distill_jax.evaluate.Reference`
    policies with one member per student member (the baseline member paired with each student is the
    one with its seed and ``ppo.*`` sweep values)."""
    out: dict[str, Reference] = {}
    if baseline_result is not None:
        index = np.asarray(config.teacher_members())
        frozen = jax.tree.map(lambda x: x[index], FrozenTeacher(baseline_result.state.params["actor"],
                                                               baseline_result.state.obs_stats))
        actor = baseline_result.nets.actor
        out["baseline"] = Reference(lambda t: teacher_policy(actor, t, deterministic=panel.deterministic), frozen)
    if oracle_result is not None:
        oracle = oracle_result.student
        out["oracle"] = Reference(
            lambda p: eval_wrapper(oracle, p[0], p[1], deterministic=panel.deterministic),
            (oracle_result.state.params, oracle_result.state.obs_stats), oracle.initial_carry)
    return out


def reference_members(env, config, panel: Panel, baseline_result: Any = None, oracle_result: Any = None, *,
                      suite: Any = None, perturbations: Any = None) -> dict[str, list]:
    """The baseline's and the oracle student's panel results on their own (each policy in its own
    program; the evaluation scores them beside the teacher/student pairs instead), one per student
    member; with ``perturbations`` (``[C]``, the task's ``suite``), one such list per condition."""
    return {name: score_members(env, panel, ref.make_policy, ref.params, ref.initial_carry, suite=suite,
                                perturbations=perturbations)
            for name, ref in reference_policies(config, panel, baseline_result, oracle_result).items()}


def _supported(difference: dict[str, Any]) -> bool | None:
    low, high = difference["ci95"] or (np.nan, np.nan)
    if low > 0:
        return True
    if high < 0:
        return False
    return None


def claims(member: dict[str, Any], references: dict[str, dict[str, Any]],
           thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The ``claims`` section for one member (its panel results and its reference policies')."""
    teacher, student, im = member["teacher"], member["student"], member["imitation"]
    episodes = member["episodes"]
    teacher_claim: dict[str, Any] = {"statement": STATEMENTS["teacher"], "teacher_return": teacher["return_mean"],
                                     "teacher_fall_rate": teacher["fall_rate"], "missing": []}
    deployment: dict[str, Any] = {
        "statement": STATEMENTS["deployment"], "student_return": student["return_mean"],
        "teacher_return": teacher["return_mean"],
        "student_over_teacher_return": student["return_mean"] / teacher["return_mean"] if teacher["return_mean"] else None,
        "student_fall_rate": student["fall_rate"], "student_fall_rate_ci95": student["fall_rate_ci95"],
        "student_minus_teacher_return": paired_difference(episodes["student"]["return"], episodes["teacher"]["return"]),
    }
    # Succeeding means matching the teacher *and* not failing outright: a student that falls as
    # often as a falling teacher has matched it, not succeeded.
    deployment["supported"] = bool(
        deployment["student_over_teacher_return"] is not None
        and deployment["student_over_teacher_return"] >= thresholds.healthy_return_ratio
        and student["fall_rate"] <= teacher["fall_rate"] + thresholds.fall_rate_margin
        and student["fall_rate"] <= thresholds.teacher_fall_rate_max + thresholds.fall_rate_margin)
    if "baseline" in references:
        base = references["baseline"]
        diff = paired_difference(episodes["teacher"]["return"], base["episodes"]["return"])
        teacher_claim.update(baseline_return=base["summary"]["return_mean"],
                             baseline_fall_rate=base["summary"]["fall_rate"],
                             baseline_fall_rate_ci95=base["summary"]["fall_rate_ci95"],
                             teacher_minus_baseline_return=diff, supported=_supported(diff))
        student_vs_base = paired_difference(episodes["student"]["return"], base["episodes"]["return"])
        deployment.update(baseline_return=base["summary"]["return_mean"], student_minus_baseline_return=student_vs_base,
                          distillation_beats_baseline=_supported(student_vs_base))
    else:
        teacher_claim.update(supported=None, missing=["the deployable-only baseline (--set baseline.enabled=true)"])
    imitation = {
        "statement": STATEMENTS["imitation"], "kl_teacher_states": im["kl"],
        "action_mse_teacher_states": im["action_mse"], "action_r2_teacher_states": im.get("action_r2"),
        "masked_teacher_states": im["masked/any"],
        "kl_student_states": im.get("student_states/kl"), "action_mse_student_states": im.get("student_states/action_mse"),
        "action_r2_student_states": im.get("student_states/action_r2"),
        "kl_fit": thresholds.kl_fit, "action_r2_fit": thresholds.action_r2_fit,
        "supported": imitates_well(im["kl"], _number(im.get("action_r2")), thresholds),
    }
    if "oracle" in references:
        imitation["oracle_return"] = references["oracle"]["summary"]["return_mean"]
    return {"teacher": teacher_claim, "imitation": imitation, "deployment": deployment}


def evidence(member: dict[str, Any], references: dict[str, dict[str, Any]], leak_checks: dict[str, Any] | None,
             export_identical: bool | None) -> Evidence:
    """The :class:`~distill_jax.diagnosis.Evidence` of one member's panel results."""
    im = member["imitation"]
    return Evidence(
        teacher_return=member["teacher"]["return_mean"], student_return=member["student"]["return_mean"],
        teacher_fall_rate=member["teacher"]["fall_rate"], student_fall_rate=member["student"]["fall_rate"],
        kl_teacher_states=im["kl"], kl_student_states=im.get("student_states/kl", float("nan")),
        action_r2_teacher_states=_number(im.get("action_r2")),
        action_r2_student_states=_number(im.get("student_states/action_r2")),
        leaks_passed=None if leak_checks is None else all(c["passed"] for c in leak_checks.values()),
        export_identical=export_identical,
        oracle_return=references["oracle"]["summary"]["return_mean"] if "oracle" in references else None,
    )


def _number(value: float | None) -> float:
    """``nan`` for a figure that was not measured (or was not a number: ``None`` in the JSON)."""
    return float("nan") if value is None else float(value)


def diagnosis(member: dict[str, Any], references: dict[str, dict[str, Any]], leak_checks: dict[str, Any],
              export_identical: bool | None, thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The overall verdict of one member (the exported one) on the nominal panel."""
    return diagnose(evidence(member, references, leak_checks, export_identical), thresholds)


def suite_section(points: list, results: list, references: dict[str, list], leak_checks: dict[str, Any],
                  export_identical: bool | None, num_seeds: int, thresholds: Thresholds = Thresholds()) -> list:
    """One entry per suite point: member 0's teacher, student and imitation figures, the reference
    policies' summaries, the spread over seeds (of the first sweep point) and the condition's verdict."""
    entries = []
    for c, point in enumerate(points):
        member = results[c][0]
        refs = {name: per_condition[c][0] for name, per_condition in references.items()}
        entry = {"condition": point.condition, "strength": point.strength, "unit": point.unit,
                 "in_training": point.in_training, "teacher": member["teacher"], "student": member["student"],
                 "imitation": member["imitation"], **{name: ref["summary"] for name, ref in refs.items()},
                 "diagnosis": diagnosis(member, refs, leak_checks, export_identical, thresholds)}
        if num_seeds > 1:
            entry["across_seeds"] = across_seeds(results[c][:num_seeds])
        entries.append(entry)
    return entries

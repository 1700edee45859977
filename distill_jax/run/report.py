"""The evaluation artifact: ``eval.json`` and a readable ``eval.md``.

Teacher return, student return, imitation loss, success and fall rate are
co-computed on one held-out panel (:func:`distill_jax.evaluate.evaluate_panel`)
and saved together with the schema, the schema diff, the leak checks, the env
fingerprint and the config, so the three claims (teacher, imitation,
deployment) can be re-checked later from one file.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import leak_audit
from distill_jax.config import RunConfig, to_dict
from distill_jax.distill import masks
from distill_jax.distill.masks import schema_in_force
from distill_jax.distill.update import FrozenTeacher
from distill_jax.evaluate import (EPISODE_MEAN_METRICS, Panel, across_seeds, breakdown, evaluate_members,
                                  evaluate_suite, student_act_fn)
from distill_jax.privilege import markdown_table as privilege_table
from distill_jax.privilege import cyclic_derangement, permutation_view, privilege_value, value_from_scores
from distill_jax.run.claims import claims, diagnosis, reference_policies, suite_section
from distill_jax.suite import declared, stack
from distill_jax.treeops import first_seed

EVAL_KEYS = ("teacher", "student", "imitation", "members", "across_seeds", "references", "claims", "diagnosis",
             "suite", "privilege_value", "by_group", "panel", "schema", "schema_diff", "leak_checks", "env", "config")


def export_identical(run_dir: pathlib.Path | None) -> bool | None:
    """Whether the run's exported student acted bit-identically to the in-process one
    (``export/verification.json``); ``None`` when there is no export to ask."""
    path = None if run_dir is None else run_dir / "export" / "verification.json"
    if path is None or not path.is_file():
        return None
    return bool(json.loads(path.read_text()).get("bit_identical_to_in_process"))


def _pair_only(member: dict[str, Any]) -> dict[str, Any]:
    """A scored member without its ``references`` (the report keeps those under their own key)."""
    return {k: v for k, v in member.items() if k != "references"}


def build_eval(env, config: RunConfig, teacher_result, student_result, train_env=None, *, baseline_result=None,
               oracle_result=None, run_dir: pathlib.Path | None = None,
               suite_points: list | None = None, on_step: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """The evaluation artifact as a JSON-able dict: every teacher/student member (seeds, sweep
    points) scored on one panel in one program; ``teacher``/``student``/``imitation`` at the top are
    member 0's (the exported student), ``members`` lists each one, ``across_seeds`` the mean and
    95 % interval over seeds of each sweep point.

    ``env`` is the panel's env; ``train_env`` the training one when the panel is
    shifted (``config.eval_env_overrides``), else ``None`` (the same env). ``baseline_result`` and
    ``oracle_result``, where trained, join the panel (``references``) and the ``claims``; the
    ``diagnosis`` reads the export check from ``run_dir/export`` when there is one. ``suite_points``
    (:func:`distill_jax.suite.resolve`) adds the perturbation ``suite``, every policy on every point
    in one program, each point with its own verdict. ``on_step(what, detail)`` is told when each
    part starts.
    """
    train_env = env if train_env is None else train_env
    training_seeds = tuple(config.seed + k for k in range(config.num_seeds))
    panel = Panel.held_out(config.eval_episodes, training_seeds)
    index = np.asarray(config.teacher_members())  # each student member's teacher
    teachers = jax.tree.map(lambda x: x[index],
                            FrozenTeacher(teacher_result.state.params["actor"], teacher_result.state.obs_stats))
    student = student_result.student
    rule, thresholds = masks.in_force(config.distill.mask, env.schema)
    step = on_step or (lambda what, detail: None)
    # The baseline and the oracle student step beside the teacher/student pairs in the same programs.
    refs = reference_policies(config, panel, baseline_result, oracle_result)
    results, under, nominal, worth = [], {}, None, None
    privilege_key, fields = jax.random.PRNGKey(11), tuple(env.schema.teacher_only)
    if suite_points:
        conditions = sorted({point.condition for point in suite_points})
        nominal = next((c for c, p in enumerate(suite_points) if p.condition == "nominal"), None)
        # What each privileged field is worth to the teacher (member 0; distill_jax.privilege): with a
        # nominal condition, one more row of the suite's program per teacher-only field, the nominal
        # one with the teacher reading that field from another panel env, so it compiles nothing more.
        probe = nominal is not None and bool(fields)
        rows, view, views = list(suite_points), None, None
        if probe:
            rows += [suite_points[nominal]] * len(fields)
            view = permutation_view(fields, cyclic_derangement(privilege_key, len(panel.seeds)))
            views = jnp.concatenate([jnp.zeros((len(suite_points), len(fields))), jnp.eye(len(fields))])
        step("running the perturbation suite", f"{len(suite_points)} points of {len(conditions)} conditions "
             f"({', '.join(conditions)}), every policy in one program; its nominal condition is the panel"
             + ("; each privileged field permuted across the panel, to measure what it is worth to the teacher"
                if probe else ""))
        scored = evaluate_suite(env, declared(config.env), stack(rows), teacher_result.nets.actor, teachers, student,
                                student_result.state.params, student_result.state.obs_stats, panel,
                                mask_rule=rule, mask_thresholds=thresholds, references=refs,
                                teacher_view=view, views=views)
        scored, permuted = scored[:len(suite_points)], scored[len(suite_points):]
        if probe:
            worth = value_from_scores(fields, scored[nominal][0]["episodes"]["teacher"],
                                      [row[0]["episodes"]["teacher"] for row in permuted])
        under = {name: [[m["references"][name] for m in per_condition] for per_condition in scored] for name in refs}
        results = [[_pair_only(m) for m in per_condition] for per_condition in scored]
    if nominal is not None:  # the suite's nominal condition is the panel: no second program for it
        members, references = results[nominal], {name: per[nominal] for name, per in under.items()}
    else:
        scored = evaluate_members(env, teacher_result.nets.actor, teachers, student, student_result.state.params,
                                  student_result.state.obs_stats, panel, mask_rule=rule, mask_thresholds=thresholds,
                                  references=refs)
        references = {name: [m["references"][name] for m in scored] for name in refs}
        members = [_pair_only(m) for m in scored]
    points, seeds = config.sweep_points, config.num_seeds
    labelled = [{"grid_point": m // seeds, "values": points[m // seeds], "seed": config.seed + m % seeds, **metrics}
                for m, metrics in enumerate(members)]
    grouped = [{"values": point, "num_seeds": seeds, **across_seeds(members[g * seeds:(g + 1) * seeds])}
               for g, point in enumerate(points)]
    s_params, s_stats = first_seed(student_result.state.params), first_seed(student_result.state.obs_stats)
    obs = first_seed(jax.tree.map(lambda x: x[:, :8], student_result.state.env_state.obs))
    act = student_act_fn(student, s_params, s_stats)
    step("running the leak audit", "structural, dataflow, gradient and perturbation checks of the student's inputs")
    checks = leak_audit.audit(env.schema, student.schema.fields_for("student"), act, obs, jax.random.PRNGKey(7))
    schema = schema_in_force(env.schema, config.distill)
    first = {name: per_member[0] for name, per_member in references.items()}
    identical = export_identical(run_dir)
    suite_entries = suite_section(suite_points, results, under, checks, identical, config.num_seeds) \
        if suite_points else []
    if worth is None:  # no suite's nominal condition to share a program with: a program of its own
        step("measuring what each privileged field is worth to the teacher", "each one permuted across the panel")
        worth = privilege_value(env, teacher_result.nets.actor, first_seed(teachers), panel, key=privilege_key)
    return {
        "by_group": panel_breakdown(env, members[0], first),
        **members[0],
        "members": labelled,
        "across_seeds": grouped,
        "references": references,
        "claims": claims(members[0], first),
        "diagnosis": {"overall": diagnosis(members[0], first, checks, identical),
                      "per_condition": [{"condition": e["condition"], "strength": e["strength"],
                                         "verdict": e["diagnosis"]["verdict"]} for e in suite_entries]},
        "suite": suite_entries,
        "privilege_value": worth,
        "panel": {"seeds": list(panel.seeds), "deterministic": panel.deterministic,
                  "training_seeds": list(training_seeds), "episode_length": env.episode_length,
                  "distribution": "shifted" if config.eval_env_overrides else "training",
                  "env_overrides": {k: v for k, v in config.eval_env_overrides},
                  "env_fingerprint": env.fingerprint()},
        "schema": json.loads(schema.to_json()),
        "schema_diff": {
            "teacher_actor_to_student_actor": schema.student_leak_report(),
            "student_network_inputs": list(student.schema.fields_for("student")),
            "env_schema_vs_student_schema": schema.diff(student.schema).to_dict(),
        },
        "leak_checks": checks,
        "env": train_env.fingerprint(),
        "config": to_dict(config),
    }


def markdown_table(report: dict[str, Any]) -> str:
    t, s, im = report["teacher"], report["student"], report["imitation"]
    ratio = s["return_mean"] / t["return_mean"] if t["return_mean"] else math.nan
    extra = [name for name in EPISODE_MEAN_METRICS if f"{name}_mean" in t and f"{name}_mean" in s]

    def rate(r: dict[str, Any], name: str) -> str:
        low, high = r[f"{name}_ci95"]
        return f"{r[name]:.2f} ({low:.2f}–{high:.2f})"

    def policy_row(label: str, r: dict[str, Any]) -> str:
        cells = [f"{r['return_mean']:.1f} ± {r['return_std']:.1f}", rate(r, "success_rate"),
                 rate(r, "fall_rate"), f"{r['episode_length_mean']:.1f}",
                 *(f"{r[f'{name}_mean']:.3f}" for name in extra)]
        return f"| {label} | " + " | ".join(cells) + " |"

    rows = [
        "| policy | return (mean ± std) | success rate (95 % CI) | fall rate (95 % CI) | episode length |"
        + "".join(f" mean {name.replace('_', ' ')} |" for name in extra),
        "|---|---|---|---|---|" + "---|" * len(extra),
        policy_row("teacher (privileged)", t),
        policy_row("student (deployable)", s),
        "",
        f"student / teacher return: {ratio:.3f}; imitation on valid teacher steps: KL {im['kl']:.4f}, "
        f"action MSE {im['action_mse']:.5f}" + _r2_text(im.get("action_r2")) + f"; masked {im['masked/any']:.3f}"
        + (f"; on the student's own states (teacher relabels): KL {im['student_states/kl']:.4f}, "
           f"action MSE {im['student_states/action_mse']:.5f}" + _r2_text(im.get("student_states/action_r2"))
           if "student_states/kl" in im else ""),
        "",
        "| leak check | passed | detail |",
        "|---|---|---|",
        *[f"| {name} | {c['passed']} | {c['detail']} |" for name, c in report["leak_checks"].items()],
    ]
    if "schema_diff" in report:
        rows += ["", *schema_diff_lines(report["schema_diff"]["teacher_actor_to_student_actor"])]
    if len(report.get("members", ())) > 1:
        rows += ["", *members_table(report)]
    if report.get("suite"):
        rows += ["", *suite_table(report["suite"])]
    if report.get("privilege_value"):
        rows += ["", "What each privileged field is worth to the teacher (the field permuted across the panel's "
                     "episodes, one at a time):", "", privilege_table(report["privilege_value"])]
    return "\n".join(rows)


def suite_table(entries: list[dict[str, Any]]) -> list[str]:
    """The perturbation suite: every policy on every condition, and each condition's verdict."""
    refs = [name for name in ("baseline", "oracle") if name in entries[0]]
    head = ("| condition | strength | in training | teacher return | student return | student / teacher | "
            "teacher falls | student falls | " + "".join(f"{name} return | " for name in refs) + "verdict |")
    rows = ["Perturbation suite (member 0; every policy on the same reset keys, noise and kicks):", "", head,
            "|" + "---|" * (9 + len(refs))]
    for e in entries:
        t, s = e["teacher"], e["student"]
        ratio = f"{s['return_mean'] / t['return_mean']:.3f}" if t["return_mean"] else "–"
        cells = [e["condition"], f"{e['strength']:g} {e['unit']}", "yes" if e["in_training"] else "**no**",
                 f"{t['return_mean']:.1f}", f"{s['return_mean']:.1f}", ratio, f"{t['fall_rate']:.0%}",
                 f"{s['fall_rate']:.0%}", *(f"{e[name]['return_mean']:.1f}" for name in refs),
                 e["diagnosis"]["verdict"]]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def panel_breakdown(env, member: dict[str, Any], references: dict[str, dict[str, Any]]) -> dict[str, list]:
    """Member 0's panel split by what each episode started on, for every group the task declares
    (``env.panel_groups``: a terrain task's tile type and level), every policy on the same episodes."""
    groups = getattr(env, "panel_groups", None) or {}
    policies = {**member["episodes"], **{name: ref["episodes"] for name, ref in references.items()}}
    return {group: breakdown(policies, group, tuple(labels)) for group, labels in groups.items()
            if group in member["episodes"]["teacher"]}


def breakdown_lines(report: dict[str, Any]) -> list[str]:
    """One Markdown table per breakdown group: return and fall rate of every policy per label."""
    lines: list[str] = []
    for group, rows in (report.get("by_group") or {}).items():
        if not rows:
            continue
        policies = [k for k in rows[0] if isinstance(rows[0][k], dict)]
        lines += ["", f"By {group.replace('_', ' ')} (member 0; the episodes that started there, same reset keys "
                      "for every policy; fall rate with its 95 % Wilson interval):", "",
                  f"| {group.replace('_', ' ')} | episodes | "
                  + " | ".join(f"{p} return | {p} falls" for p in policies) + " |",
                  "|---|---|" + "---|---|" * len(policies)]
        for row in rows:
            cells = []
            for p in policies:
                low, high = row[p]["fall_rate_ci95"]
                cells += [f"{row[p]['return_mean']:.1f}", f"{row[p]['fall_rate']:.0%} ({low:.0%}–{high:.0%})"]
            lines.append(f"| {row['label']} | {row['episodes']} | " + " | ".join(cells) + " |")
    return lines


def verdict_lines(report: dict[str, Any]) -> list[str]:
    """The diagnosis and the three claims, the lines ``eval.md`` leads with."""
    overall = report["diagnosis"]["overall"]
    lines = [f"**Diagnosis: {overall['verdict']}** — {overall['reason']}."]
    if overall.get("missing"):
        lines[-1] += f" Missing evidence: {'; '.join(overall['missing'])}."
    mark = {True: "supported", False: "refuted", None: "not shown"}
    c = report["claims"]
    lines += ["", "| claim | verdict | evidence |", "|---|---|---|"]
    t = c["teacher"]
    if "teacher_minus_baseline_return" in t:
        d = t["teacher_minus_baseline_return"]
        evidence = (f"teacher {t['teacher_return']:.1f} vs deployable-only baseline {t['baseline_return']:.1f}; "
                    f"paired difference {_mean_ci(d)} over {d['episodes']} episodes")
    else:
        evidence = "no baseline trained: " + "; ".join(t["missing"])
    lines.append(f"| teacher: {t['statement']} | {mark[t['supported']]} | {evidence} |")
    lines.append(f"| imitation: {c['imitation']['statement']} | {mark[c['imitation']['supported']]} | "
                 f"{_imitation_evidence(c['imitation'])} |")
    dep = c["deployment"]
    base = ("" if "student_minus_baseline_return" not in dep else
            f"; student − baseline {_mean_ci(dep['student_minus_baseline_return'])}")
    ratio = dep["student_over_teacher_return"]
    lines.append(f"| deployment: {dep['statement']} | {mark[dep['supported']]} | student/teacher return "
                 f"{'–' if ratio is None else f'{ratio:.3f}'}, student falls {dep['student_fall_rate']:.0%}{base} |")
    return lines


def _imitation_evidence(im: dict[str, Any]) -> str:
    """The imitation claim's figures with the limits it is judged by (either suffices)."""
    def figures(kl: float, r2: float | None) -> str:
        return f"KL {kl:.3f} nats" + _r2_text(r2)

    r2 = im.get("action_r2_teacher_states")
    text = f"on valid teacher steps {figures(im['kl_teacher_states'], r2)} (good at KL ≤ {im['kl_fit']}"
    text += ")" if r2 is None else f" or explained variance ≥ {im['action_r2_fit']})"
    if im["kl_student_states"] is not None:
        text += f"; on the student's own states {figures(im['kl_student_states'], im.get('action_r2_student_states'))}"
    return text


def schema_diff_lines(leak_report: dict[str, Any]) -> list[str]:
    """The schema diff from the teacher actor's inputs to the student actor's, as Markdown lines."""
    removed = ", ".join(f"`{f}`" for f in leak_report["removed_from_student"]) or "none"
    added = ", ".join(f"`{f}`" for f in leak_report.get("added_for_student", ())) or "none"
    return [f"Schema diff, teacher actor → student actor: removed {removed}; added {added}; privileged fields among the "
            f"student's inputs: {leak_report['privileged_in_student'] or 'none'} "
            f"({'passed' if leak_report['passed'] else 'FAILED'}). Student reads "
            + ", ".join(f"`{f}`" for f in leak_report["student_actor_inputs"]) + "."]


def _r2_text(r2: float | None) -> str:
    return "" if r2 is None or r2 != r2 else f", explained action variance {r2:.3f}"


def _mean_ci(entry: dict[str, Any], digits: int = 1) -> str:
    if entry["ci95"] is None:
        return f"{entry['mean']:.{digits}f}"
    low, high = entry["ci95"]
    return f"{entry['mean']:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def members_table(report: dict[str, Any]) -> list[str]:
    """Every sweep point's figures across its seeds (mean and 95 % t-interval over seeds)."""
    groups = report["across_seeds"]
    seeds = groups[0]["num_seeds"]
    axes = list(groups[0]["values"])
    head = "| " + "".join(f"{a} | " for a in axes) + "teacher return | student return | student / teacher | " \
           "student fall rate | KL on teacher steps |"
    rows = [f"Across {seeds} seed(s) per {'sweep point' if axes else 'run'} (mean, 95 % t-interval over seeds):", "",
            head, "|" + "---|" * (len(axes) + 5)]
    for g in groups:
        cells = [f"{g['values'][a]:g}" for a in axes]
        cells += [_mean_ci(g["teacher"]["return_mean"]), _mean_ci(g["student"]["return_mean"]),
                  _mean_ci(g["student_over_teacher_return"], 3) if "student_over_teacher_return" in g else "–",
                  _mean_ci(g["student"]["fall_rate"], 3), _mean_ci(g["imitation"]["kl"], 4)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def write_eval(out: pathlib.Path, env, config: RunConfig, teacher_result, student_result,
               train_env=None, *, baseline=None, oracle=None, points: list | None = None,
               on_step: Callable[[str, str], None] | None = None,
               provenance: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    report = build_eval(env, config, teacher_result, student_result, train_env, baseline_result=baseline,
                        oracle_result=oracle, run_dir=out, suite_points=points, on_step=on_step)
    if provenance is not None:  # what produced the figures and what they cost (distill_jax.run.provenance)
        report["provenance"] = provenance()
    (out / "eval.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    table = markdown_table(report)
    panel = report["panel"]
    (out / "eval.md").write_text(
        f"# Evaluation on {len(panel['seeds'])} held-out seeds ({env.name}, {panel['distribution']} distribution"
        f"{', ' + str(panel['env_overrides']) if panel['env_overrides'] else ''})\n\n"
        + "\n".join(verdict_lines(report)) + f"\n\n{table}\n" + "".join(f"{line}\n" for line in breakdown_lines(report))
    )
    return {"table": table, "leak_passed": all(c["passed"] for c in report["leak_checks"].values()),
            "report": report}

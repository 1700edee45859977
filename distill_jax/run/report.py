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
from typing import Any

import jax
import jax.numpy as jnp

from distill_jax import leak_audit
from distill_jax.config import RunConfig, to_dict
from distill_jax.distill.masks import schema_in_force
from distill_jax.distill.update import FrozenTeacher
from distill_jax.evaluate import EPISODE_MEAN_METRICS, Panel, evaluate_panel, student_act_fn
from distill_jax.treeops import first_seed

EVAL_KEYS = ("teacher", "student", "imitation", "panel", "schema", "schema_diff", "leak_checks", "env", "config")


def build_eval(env, config: RunConfig, teacher_result, student_result, train_env=None) -> dict[str, Any]:
    """The evaluation artifact (seed index 0 of teacher and student) as a JSON-able dict.

    ``env`` is the panel's env; ``train_env`` the training one when the panel is
    shifted (``config.eval_env_overrides``), else ``None`` (the same env).
    """
    train_env = env if train_env is None else train_env
    training_seeds = tuple(config.seed + k for k in range(config.num_seeds))
    panel = Panel.held_out(config.eval_episodes, training_seeds)
    teacher = FrozenTeacher(first_seed(teacher_result.state.params["actor"]), first_seed(teacher_result.state.obs_stats))
    student = student_result.student
    s_params, s_stats = first_seed(student_result.state.params), first_seed(student_result.state.obs_stats)
    metrics = evaluate_panel(
        env, teacher_result.nets.actor, teacher, student, s_params, s_stats, panel,
        mask_rule=config.distill.mask_rule, mask_thresholds=dict(config.distill.mask_thresholds),
    )
    obs = first_seed(jax.tree.map(lambda x: x[:, :8], student_result.state.env_state.obs))
    act = student_act_fn(student, s_params, s_stats)
    checks = leak_audit.audit(env.schema, student.schema.fields_for("student"), act, obs, jax.random.PRNGKey(7))
    schema = schema_in_force(env.schema, config.distill)
    return {
        **metrics,
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
        f"action MSE {im['action_mse']:.5f}; masked {im['masked/any']:.3f}",
        "",
        "| leak check | passed | detail |",
        "|---|---|---|",
        *[f"| {name} | {c['passed']} | {c['detail']} |" for name, c in report["leak_checks"].items()],
    ]
    return "\n".join(rows)


def write_eval(out: pathlib.Path, env, config: RunConfig, teacher_result, student_result,
               train_env=None) -> dict[str, Any]:
    report = build_eval(env, config, teacher_result, student_result, train_env)
    (out / "eval.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    table = markdown_table(report)
    panel = report["panel"]
    (out / "eval.md").write_text(
        f"# Evaluation on {len(panel['seeds'])} held-out seeds ({env.name}, {panel['distribution']} distribution"
        f"{', ' + str(panel['env_overrides']) if panel['env_overrides'] else ''})\n\n{table}\n"
    )
    return {"table": table, "leak_passed": all(c["passed"] for c in report["leak_checks"].values()),
            "report": report}

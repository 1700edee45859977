"""Blind against perceptive student on the terrain quadruped, per terrain type (issue #44's table).

Reads two run directories that share one teacher — the blind run (``python -m distill_jax.train
--preset gpu --env quadruped_terrain``) and the perceptive one distilled from its teacher
(``--phase distill --from BLIND --set distill.student.scan_encoder=cnn``, then ``--phase eval``) —
and writes, per terrain type of the held-out panel: the teacher's, the blind and the perceptive
student's return (mean, 95 % t-interval over the type's episodes) and fall rate (Wilson interval),
the paired perceptive − blind return difference (the same reset keys, so episode k started on the
same tile in both runs), and the share of the teacher's training envs at each type's hardest level
at its last update (``env/terrain_top_<type>`` / ``env/terrain_type_<type>`` in ``metrics.jsonl``),
and the teacher's training curve in blocks of updates: return, mean level, falls, tracking error,
distance walked from the spawn, and the share of envs at the hardest level (issue #44's teacher target:
the hardest stairs level on at least half of the stairs envs).

Usage: python experiments/terrain_report.py BLIND_RUN PERCEPTIVE_RUN [--teacher TEACHER_RUN] [--md OUT.md]
[--json OUT.json]

``--teacher``: where the teacher was trained in a run of its own (``--phase teacher``) and both students
were distilled from it with ``--phase distill --from TEACHER_RUN --out ...``, the curve and the shares
are read from that run's ``metrics.jsonl`` instead of the blind run's.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

import numpy as np

from distill_jax.evaluate import breakdown, episode_groups, paired_difference


class ReportError(ValueError):
    """The two runs cannot be compared (one line, naming what differs or is missing)."""


def load_eval(run: pathlib.Path) -> dict[str, Any]:
    path = run / "eval.json"
    if not path.is_file():
        raise ReportError(f"{path}: missing (run the eval phase on {run} first)")
    return json.loads(path.read_text())


def _teacher_rows(run: pathlib.Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [r for r in rows if r.get("phase") == "teacher"]


def _top_share(row: dict[str, Any], name: str) -> float | None:
    """One update's share of type ``name``'s envs at its hardest level (``None`` if not logged or no such env)."""
    top, on = row.get(f"env/terrain_top_{name}"), row.get(f"env/terrain_type_{name}")
    if top is None or on is None or not float(np.mean(on)):  # [K] over seeds
        return None
    return float(np.mean(top)) / float(np.mean(on))


def top_level_shares(run: pathlib.Path, types: list[str]) -> dict[str, float | None]:
    """Per type: the share of the teacher's training envs at its hardest level, at the last teacher update."""
    teacher = _teacher_rows(run)
    return {name: _top_share(teacher[-1], name) if teacher else None for name in types}


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    """Mean of a metric over rows (each row's value averaged over its seeds), NaNs and gaps skipped."""
    values = [float(np.mean(r[key])) for r in rows if r.get(key) is not None]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else None


def teacher_curve(run: pathlib.Path, types: list[str], blocks: int = 8) -> list[dict[str, Any]]:
    """The teacher's training curve in ``blocks`` equal blocks of updates (fewer if it ran fewer updates).

    Each row: the block's last ``update`` and ``env_steps``, and block means of ``episode_return``
    (completed episodes), ``env/terrain_level``, ``env/fall`` (per step), ``env/tracking_error`` (m/s),
    ``env/distance_from_spawn`` (m), and per type the share of that type's envs at the hardest level
    (``top_<type>``; the ratio of the two per-step means, row by row).
    """
    rows = _teacher_rows(run)
    if not rows:
        return []
    curve = []
    for block in np.array_split(np.arange(len(rows)), min(blocks, len(rows))):
        chosen = [rows[i] for i in block]
        entry: dict[str, Any] = {"update": chosen[-1].get("update"), "env_steps": chosen[-1].get("env_steps")}
        for key in ("episode_return", "env/terrain_level", "env/fall", "env/tracking_error", "env/distance_from_spawn"):
            entry[key.split("/")[-1]] = _mean(chosen, key)
        for name in types:
            shares = [share for share in (_top_share(r, name) for r in chosen) if share is not None]
            entry[f"top_{name}"] = float(np.mean(shares)) if shares else None
        curve.append(entry)
    return curve


def _types(report: dict[str, Any]) -> list[str]:
    """The tile type names of the panel's map, in index order (empty if the fingerprint has none)."""
    return list(report["panel"]["env_fingerprint"].get("terrain", {}).get("types") or [])


def check_students(blind: dict[str, Any], perceptive: dict[str, Any], scan: str = "height_scan") -> None:
    """Refuses a "blind" student that reads the scan (the default student reads every deployable field,
    ``scan`` flattened among them) and a "perceptive" one without a scan encoder (one line each)."""
    b, p = blind["config"]["distill"]["student"], perceptive["config"]["distill"]["student"]
    if b.get("fields") is None or scan in b["fields"] or b.get("scan_encoder", "none") != "none":
        raise ReportError(f"the blind run's student reads {scan} (distill.student.fields={b.get('fields')}, "
                          f"scan_encoder={b.get('scan_encoder', 'none')}): distil it with distill.student.fields "
                          f"set to the proprioceptive fields")
    if p.get("scan_encoder", "none") == "none":
        raise ReportError("the perceptive run's student has no scan encoder (distill.student.scan_encoder=none)")


def per_type(blind: dict[str, Any], perceptive: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-type rows of the comparison (member 0 of each run)."""
    types = _types(blind)
    b_eps, p_eps = blind["episodes"], perceptive["episodes"]
    if b_eps["teacher"].get("terrain_type") is None:
        raise ReportError("eval.json has no per-episode terrain_type: evaluate with a version that records it")
    # The reset keys decide where each episode starts; the teacher's returns may differ by float
    # rounding between the two evaluation programs (different students fuse differently), not more.
    if b_eps["teacher"]["terrain_type"] != p_eps["teacher"]["terrain_type"]:
        raise ReportError("the two runs' panels differ (episodes start on other tiles): evaluate both with the same "
                          "eval_episodes, seed and eval_env_overrides")
    if blind["config"]["ppo"] != perceptive["config"]["ppo"] or blind["config"]["seed"] != perceptive["config"]["seed"]:
        raise ReportError("the two runs' teachers differ: distil the perceptive student from the blind run's teacher "
                          "(--phase distill --from BLIND --out PERCEPTIVE)")
    check_students(blind, perceptive)
    index = b_eps["teacher"]["terrain_type"]
    names = types or [str(i) for i in range(max(index) + 1)]
    policies = {"teacher": b_eps["teacher"], "blind": b_eps["student"], "perceptive": p_eps["student"]}
    rows = []
    for row, (_, chosen) in zip(breakdown(policies, "terrain_type", names), episode_groups(index, names)):
        out: dict[str, Any] = {"type": row["label"], "episodes": row["episodes"]}
        for label in policies:
            r = row[label]
            out[label] = {"return": {"mean": r["return_mean"], "ci95": r["return_ci95"]}, "fall_rate": r["fall_rate"],
                          "fall_rate_ci95": r["fall_rate_ci95"]}
        out["perceptive_minus_blind"] = paired_difference(
            np.asarray(p_eps["student"]["return"], np.float64)[chosen],
            np.asarray(b_eps["student"]["return"], np.float64)[chosen])
        rows.append(out)
    return rows


def suite_rows(blind: dict[str, Any], perceptive: dict[str, Any]) -> list[dict[str, Any]]:
    """Per tile type from the suite's ``terrain_type`` condition (every panel episode on that type),
    where both runs evaluated it: summaries only (return mean with a normal 95 % interval over the
    episodes, falls with their Wilson interval)."""
    def by_type(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
        return {int(e["strength"]): e for e in report.get("suite") or [] if e["condition"] == "terrain_type"}

    b, p = by_type(blind), by_type(perceptive)
    types = _types(blind)
    rows = []
    for index in sorted(set(b) & set(p)):
        row: dict[str, Any] = {"type": types[index] if index < len(types) else str(index)}
        for label, summary in (("teacher", b[index]["teacher"]), ("blind", b[index]["student"]),
                               ("perceptive", p[index]["student"])):
            n = int(summary["episodes"])
            half = 1.96 * float(summary["return_std"]) / max(n - 1, 1) ** 0.5
            row["episodes"] = n
            row[label] = {"return": {"mean": summary["return_mean"],
                                     "ci95": [summary["return_mean"] - half, summary["return_mean"] + half]},
                          "fall_rate": summary["fall_rate"], "fall_rate_ci95": summary["fall_rate_ci95"]}
        rows.append(row)
    return rows


def _ci(entry: dict[str, Any]) -> str:
    if entry.get("ci95") is None:
        return f"{entry['mean']:.1f}"
    low, high = entry["ci95"]
    return f"{entry['mean']:.1f} [{low:.1f}, {high:.1f}]"


def _falls(entry: dict[str, Any]) -> str:
    low, high = entry["fall_rate_ci95"]
    return f"{entry['fall_rate']:.0%} [{low:.0%}, {high:.0%}]"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def curve_markdown(curve: list[dict[str, Any]], types: list[str]) -> list[str]:
    """The teacher's curve as markdown lines (empty when the run has no teacher rows)."""
    if not curve:
        return []
    lines = ["", "The teacher in training (block means over its updates; `at top`: share of that type's envs on "
                 "its hardest level):", "",
             "| update | env steps | return | mean level | falls / step | tracking error (m/s) | distance (m) | "
             + " | ".join(f"at top: {t}" for t in types) + " |",
             "|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(types)]
    for c in curve:
        steps = "–" if c["env_steps"] is None else f"{c['env_steps'] / 1e6:.2f}M"
        lines.append(f"| {c['update']} | {steps} | {_num(c['episode_return'], '.2f')} | "
                     f"{_num(c['terrain_level'], '.2f')} | {_num(c['fall'], '.1e')} | "
                     f"{_num(c['tracking_error'], '.3f')} | {_num(c['distance_from_spawn'], '.2f')} | "
                     + " | ".join(_num(c[f"top_{t}"], ".0%") for t in types) + " |")
    return lines


def markdown(rows: list[dict[str, Any]], suite: list[dict[str, Any]], shares: dict[str, float | None],
             blind: dict[str, Any], perceptive: dict[str, Any], curve: list[dict[str, Any]] = ()) -> str:
    scan = perceptive["config"]["distill"]["student"].get("scan_encoder", "none")
    lines = [
        f"Held-out panel: {len(blind['panel']['seeds'])} episodes, env overrides {blind['panel']['env_overrides']}; "
        f"blind student `{blind['config']['distill']['student'].get('scan_encoder', 'none')}` encoder, "
        f"perceptive `{scan}`. Return: mean [95 % t-interval over the type's episodes]; falls: Wilson interval; "
        "perceptive − blind: paired over the same episodes.", "",
        "| terrain type | episodes | teacher at hardest level (training) | teacher return | teacher falls | "
        "blind return | blind falls | perceptive return | perceptive falls | perceptive − blind |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = shares.get(r["type"])
        lines.append(
            f"| {r['type']} | {r['episodes']} | {'–' if share is None else f'{share:.0%}'} | "
            f"{_ci(r['teacher']['return'])} | {_falls(r['teacher'])} | {_ci(r['blind']['return'])} | "
            f"{_falls(r['blind'])} | {_ci(r['perceptive']['return'])} | {_falls(r['perceptive'])} | "
            f"{_ci(r['perceptive_minus_blind'])} |")
    if suite:
        lines += ["", "The suite's `terrain_type` condition: every panel episode started on the type (return: "
                      "mean [normal 95 % interval over the episodes]; falls: Wilson interval):", "",
                  "| terrain type | episodes | teacher return | teacher falls | blind return | blind falls | "
                  "perceptive return | perceptive falls |", "|---|---|---|---|---|---|---|---|"]
        for r in suite:
            lines.append(f"| {r['type']} | {r['episodes']} | {_ci(r['teacher']['return'])} | {_falls(r['teacher'])} | "
                         f"{_ci(r['blind']['return'])} | {_falls(r['blind'])} | {_ci(r['perceptive']['return'])} | "
                         f"{_falls(r['perceptive'])} |")
    t, b, p = (x["return_mean"] for x in (blind["teacher"], blind["student"], perceptive["student"]))
    lines += ["", f"Whole panel: teacher {t:.1f}, blind student {b:.1f} ({b / t:.3f} of the teacher), perceptive "
                  f"student {p:.1f} ({p / t:.3f})."]
    lines += curve_markdown(list(curve), [r["type"] for r in rows])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("blind", type=pathlib.Path)
    parser.add_argument("perceptive", type=pathlib.Path)
    parser.add_argument("--teacher", type=pathlib.Path, default=None,
                        help="the teacher's own run directory, if not the blind run (its metrics.jsonl)")
    parser.add_argument("--md", type=pathlib.Path, default=None)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    try:
        blind, perceptive = load_eval(args.blind), load_eval(args.perceptive)
        if args.teacher is not None and not (args.teacher / "metrics.jsonl").is_file():
            raise ReportError(f"--teacher {args.teacher}: no metrics.jsonl there (give the teacher's run directory)")
        rows = per_type(blind, perceptive)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    types = [r["type"] for r in rows]
    teacher_run = args.teacher or args.blind
    shares = top_level_shares(teacher_run, types)
    suite = suite_rows(blind, perceptive)
    curve = teacher_curve(teacher_run, types)
    text = markdown(rows, suite, shares, blind, perceptive, curve)
    print(text)
    if args.md:
        args.md.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "suite_rows": suite, "top_level_share": shares,
                                         "teacher_curve": curve}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``experiments/terrain_report.py``: the blind-vs-perceptive table per terrain type, against hand counts.

Two synthetic ``eval.json`` files (one teacher, the same six panel episodes on two tile types) and
a ``metrics.jsonl`` whose last teacher row puts half the stairs envs at the hardest level.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import terrain_report

    return terrain_report


BLIND_FIELDS = ["joint_pos", "joint_vel", "base_ang_vel", "projected_gravity", "command", "last_action", "history"]


def write_run(path: pathlib.Path, student_returns, student_falls, scan_encoder: str, starts=(0, 1, 0, 1, 0, 1),
              teacher_steps: int = 1000, suite: list | None = None, fields: list | None = None) -> pathlib.Path:
    path.mkdir()
    teacher = {"return": [20.0, 10.0, 22.0, 12.0, 24.0, 8.0], "fall": [0, 0, 0, 1, 0, 0], "terrain_type": list(starts)}
    student = {"return": list(student_returns), "fall": list(student_falls), "terrain_type": list(starts)}
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    report = {
        "teacher": {"return_mean": mean(teacher["return"])}, "student": {"return_mean": mean(student_returns)},
        "episodes": {"teacher": teacher, "student": student},
        "panel": {"seeds": list(range(6)), "env_overrides": {"terrain_seed": 1},
                  "env_fingerprint": {"terrain": {"types": ["stairs_up", "gaps"]}}},
        "config": {"seed": 0, "ppo": {"total_env_steps": teacher_steps},
                   "distill": {"student": {"scan_encoder": scan_encoder,
                                           "fields": fields if fields or scan_encoder != "none" else BLIND_FIELDS}}},
        "suite": suite or [],
    }
    (path / "eval.json").write_text(json.dumps(report))
    rows = [{"phase": "teacher", "update": 1, "env_steps": 100, "env/terrain_top_stairs_up": [0.0],
             "env/terrain_type_stairs_up": [0.5], "episode_return": [float("nan")], "env/fall": [0.01],
             "env/terrain_level": [2.0], "env/distance_from_spawn": [1.0]},
            {"phase": "teacher", "update": 2, "env_steps": 200, "env/terrain_top_stairs_up": [0.25],
             "env/terrain_type_stairs_up": [0.5], "env/terrain_top_gaps": [0.0], "env/terrain_type_gaps": [0.5],
             "episode_return": [3.0], "env/fall": [0.03], "env/terrain_level": [4.0], "env/distance_from_spawn": [2.0]},
            {"phase": "distill", "update": 1}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_per_type_rows_match_hand_counts(report, tmp_path):
    blind = write_run(tmp_path / "blind", [18.0, 2.0, 20.0, 4.0, 21.0, 3.0], [0, 1, 0, 1, 0, 1], "none")
    perceptive = write_run(tmp_path / "perceptive", [19.0, 9.0, 21.0, 10.0, 23.0, 7.0], [0, 0, 0, 1, 0, 0], "cnn")
    assert report.main([str(blind), str(perceptive), "--md", str(tmp_path / "t.md"),
                        "--json", str(tmp_path / "t.json")]) == 0
    result = json.loads((tmp_path / "t.json").read_text())
    stairs, gaps = result["rows"]
    assert (stairs["type"], stairs["episodes"], gaps["type"], gaps["episodes"]) == ("stairs_up", 3, "gaps", 3)
    assert stairs["teacher"]["return"]["mean"] == pytest.approx(22.0)
    assert gaps["blind"]["fall_rate"] == pytest.approx(1.0) and gaps["perceptive"]["fall_rate"] == pytest.approx(1 / 3)
    diff = gaps["perceptive_minus_blind"]  # (9-2, 10-4, 7-3) = (7, 6, 4)
    assert diff["mean"] == pytest.approx(17 / 3)
    half = 4.302653 * np.std([7, 6, 4], ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
    assert diff["ci95"] == pytest.approx([17 / 3 - half, 17 / 3 + half], rel=1e-4)
    assert result["top_level_share"] == {"stairs_up": pytest.approx(0.5), "gaps": pytest.approx(0.0)}
    table = (tmp_path / "t.md").read_text()
    assert "| gaps | 3 | 0% |" in table and "perceptive `cnn`" in table
    # The teacher's curve: one block per update here (two teacher rows; the distill row is not the teacher's).
    first, second = result["teacher_curve"]
    assert (first["update"], first["env_steps"], second["update"]) == (1, 100, 2)
    assert first["episode_return"] is None and second["episode_return"] == 3.0  # no episode ended: NaN skipped
    assert (first["top_stairs_up"], second["top_stairs_up"], first["top_gaps"]) == (0.0, 0.5, None)
    assert second["fall"] == pytest.approx(0.03) and first["terrain_level"] == 2.0
    assert "| 2 | 0.00M | 3.00 | 4.00 | 3.0e-02 | – | 2.00 | 50% | 0% |" in table


def test_the_curve_averages_blocks_of_updates(report, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"phase": "teacher", "update": u, "env_steps": 10 * u, "episode_return": [float(u)],
             "env/terrain_top_gaps": [0.1 * (u % 2)], "env/terrain_type_gaps": [0.2]} for u in range(1, 7)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curve = report.teacher_curve(run, ["gaps"], blocks=3)
    assert [c["update"] for c in curve] == [2, 4, 6] and [c["env_steps"] for c in curve] == [20, 40, 60]
    assert [c["episode_return"] for c in curve] == [1.5, 3.5, 5.5]
    assert [c["top_gaps"] for c in curve] == [pytest.approx(0.25)] * 3  # (0.5 + 0) / 2 per block
    assert report.teacher_curve(tmp_path, ["gaps"]) == []  # no metrics.jsonl: no curve


def test_a_teacher_trained_in_its_own_run_gives_the_curve(report, tmp_path, capsys):
    blind = write_run(tmp_path / "blind", [1.0] * 6, [0] * 6, "none")
    perceptive = write_run(tmp_path / "perceptive", [1.0] * 6, [0] * 6, "cnn")
    (blind / "metrics.jsonl").write_text(json.dumps({"phase": "distill", "update": 1}) + "\n")  # a forked run
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "metrics.jsonl").write_text(json.dumps({"phase": "teacher", "update": 7, "env_steps": 70,
                                                       "env/terrain_top_gaps": [0.3],
                                                       "env/terrain_type_gaps": [0.5]}) + "\n")
    out = tmp_path / "t.json"
    assert report.main([str(blind), str(perceptive), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["teacher_curve"] == []
    assert report.main([str(blind), str(perceptive), "--teacher", str(teacher), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["teacher_curve"][0]["update"] == 7 and result["top_level_share"]["gaps"] == pytest.approx(0.6)
    assert report.main([str(blind), str(perceptive), "--teacher", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no metrics.jsonl there" in capsys.readouterr().err


def test_runs_that_do_not_share_a_panel_or_a_teacher_are_refused(report, tmp_path, capsys):
    blind = write_run(tmp_path / "blind", [1.0] * 6, [0] * 6, "none")
    elsewhere = write_run(tmp_path / "elsewhere", [1.0] * 6, [0] * 6, "cnn", starts=(1, 1, 0, 1, 0, 1))
    assert report.main([str(blind), str(elsewhere)]) == 2
    assert "panels differ" in capsys.readouterr().err
    other_teacher = write_run(tmp_path / "other", [1.0] * 6, [0] * 6, "cnn", teacher_steps=2000)
    assert report.main([str(blind), str(other_teacher)]) == 2
    assert "teachers differ" in capsys.readouterr().err
    assert report.main([str(blind), str(tmp_path / "missing")]) == 2
    assert "eval.json: missing" in capsys.readouterr().err


def test_a_blind_student_that_reads_the_scan_or_a_perceptive_one_without_an_encoder_is_refused(
        report, tmp_path, capsys):
    perceptive = write_run(tmp_path / "perceptive", [1.0] * 6, [0] * 6, "cnn")
    for name, fields in (("all", None), ("flat", [*BLIND_FIELDS, "height_scan"])):
        flat = write_run(tmp_path / name, [1.0] * 6, [0] * 6, "none", fields=fields)
        flat_config = json.loads((flat / "eval.json").read_text())
        flat_config["config"]["distill"]["student"]["fields"] = fields
        (flat / "eval.json").write_text(json.dumps(flat_config))
        assert report.main([str(flat), str(perceptive)]) == 2
        assert "blind run's student reads height_scan" in capsys.readouterr().err
    blind = write_run(tmp_path / "blind", [1.0] * 6, [0] * 6, "none")
    assert report.main([str(blind), str(blind)]) == 2
    assert "perceptive run's student has no scan encoder" in capsys.readouterr().err


def summary(mean: float, std: float, falls: float, n: int = 101) -> dict:
    return {"return_mean": mean, "return_std": std, "fall_rate": falls, "fall_rate_ci95": [0.0, 1.0], "episodes": n}


def test_the_suite_table_uses_every_episode_on_each_type(report, tmp_path):
    suite = lambda student: [  # noqa: E731
        {"condition": "nominal", "strength": 1.0, "teacher": summary(20, 1, 0), "student": summary(19, 1, 0)},
        {"condition": "terrain_type", "strength": 1.0, "teacher": summary(30, 10, 0.1), "student": student}]
    blind = write_run(tmp_path / "blind", [1.0] * 6, [0] * 6, "none", suite=suite(summary(10, 5, 0.5)))
    perceptive = write_run(tmp_path / "perceptive", [1.0] * 6, [0] * 6, "cnn", suite=suite(summary(25, 20, 0.2)))
    assert report.main([str(blind), str(perceptive), "--json", str(tmp_path / "t.json")]) == 0
    (row,) = json.loads((tmp_path / "t.json").read_text())["suite_rows"]
    assert row["type"] == "gaps" and row["episodes"] == 101
    assert row["perceptive"]["return"]["ci95"] == pytest.approx([25 - 1.96 * 20 / 10, 25 + 1.96 * 20 / 10])
    assert row["blind"]["fall_rate"] == 0.5 and row["teacher"]["return"]["mean"] == 30


STUB = r'''#!{python}
"""python3 for gpu_session.sh's terrain stage: `-m distill_jax.train` is faked, anything else is the real one."""
import json, os, pathlib, shutil, sys

args = sys.argv[1:]
if args[:2] != ["-m", "distill_jax.train"]:
    os.execv({python!r}, [{python!r}, *args])
args = args[2:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
opt = {{a: b for a, b in zip(args, args[1:]) if a.startswith("--")}}
fixtures = pathlib.Path(os.environ["STUB_FIXTURES"])


def finish(run, which):
    for name in ("eval.json", "metrics.jsonl"):
        shutil.copy(fixtures / which / name, pathlib.Path(run) / name)


if "--resume" in opt:
    finish(opt["--resume"], "blind")
elif opt.get("--phase") == "distill":
    pathlib.Path(opt["--out"]).mkdir(parents=True)
elif opt.get("--phase") == "eval":
    finish(opt["--from"], "perceptive")
else:  # a new blind run: cut off by the stage's timeout when asked
    run = pathlib.Path(opt["--out"])
    run.mkdir(parents=True)
    (run / "config.json").write_text("{{}}")
    if os.environ.get("STUB_CUT"):
        sys.exit(124)
    finish(run, "blind")
'''


def test_the_terrain_stage_resumes_a_cut_teacher_then_distils_evaluates_and_reports_once(tmp_path, gpu_session):
    import stat
    import sys

    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    write_run(fixtures / "blind", [18.0, 2.0, 20.0, 4.0, 21.0, 3.0], [0, 1, 0, 1, 0, 1], "none")
    write_run(fixtures / "perceptive", [19.0, 9.0, 21.0, 10.0, 23.0, 7.0], [0, 0, 0, 1, 0, 0], "cnn")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.log"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(calls), "STUB_FIXTURES": str(fixtures)}
    out, runs = tmp_path / "out", tmp_path / "runs"

    def stage(**extra):
        done = gpu_session("terrain", ["--preset", "smoke"], out, runs, timeout=300, **env, **extra)
        lines = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return done, lines

    done, lines = stage(STUB_CUT="1")  # call 1: the teacher is cut off; nothing else runs
    assert done.returncode == 124, done.stdout[-2000:] + done.stderr[-2000:]
    assert lines == [f"--preset gpu --env quadruped_terrain --out {runs}/terrain_blind --quiet "
                     f"--set distill.student.fields={json.dumps(BLIND_FIELDS, separators=(',', ':'))} --preset smoke"]
    assert (out / "terrain_blind.tgz").is_file() and not (out / "terrain_blind_vs_perceptive.md").exists()

    done, lines = stage()  # call 2: resume, distil the perceptive student from its teacher, evaluate, report
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert lines == [f"--resume {runs}/terrain_blind --quiet",
                     f"--phase distill --from {runs}/terrain_blind --out {runs}/terrain_perceptive --quiet "
                     "--set distill.student.scan_encoder=cnn --set distill.student.fields=null",
                     f"--phase eval --from {runs}/terrain_perceptive --quiet"]
    assert "resuming" in done.stdout and "not applied: --preset smoke" in done.stdout
    assert "| gaps | 3 | 0% |" in (out / "terrain_blind_vs_perceptive.md").read_text()
    assert (out / "terrain_perceptive.tgz").is_file()

    done, lines = stage()  # call 3: everything is done; only the report runs again
    assert done.returncode == 0 and lines == []

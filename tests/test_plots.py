"""Plots of a run directory: which PNGs appear, that they are real images, and the
seed statistics behind the curves (hand-computed)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from distill_jax.run import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def teacher_rows(n=6, seeds=2):
    rows = []
    for u in range(1, n + 1):
        row = {"phase": "teacher", "update": u, "env_steps": 8192 * u}
        for i, key in enumerate(plots.TEACHER_KEYS + ("clip_fraction", "env/fall")):
            row[key] = [float(u + i + 0.5 * k) for k in range(seeds)]
        if u == 1:
            row["episode_return"] = [math.nan] * seeds  # no episode finished yet
        if u == n:
            row["seconds"], row["env_steps_per_second"] = 0.4, 40000.0
        rows.append(row)
    return rows


def distill_rows(n=6, seeds=2):
    rows = []
    for u in range(1, n + 1):
        kl = [1.0 / u + 0.1 * k for k in range(seeds)]
        rows.append({
            "phase": "distill", "update": u, "env_steps": 8192 * u, "loss": kl, "kl": kl,
            "episode_return": [10.0 * u + k for k in range(seeds)],
            "masked/any": [0.01 * u] * seeds, "masked/falls": [0.005 * u] * seeds,
            "masked/nonfinite_teacher": [math.nan if u == 2 else 0.0] * seeds,
            "beta": [0.0] * seeds,
        })
    return rows


EVAL = {
    "teacher": {"return_mean": 245.6, "return_std": 2.04, "success_rate": 1.0, "fall_rate": 0.0,
                "episode_length_mean": 250.0, "episodes": 64},
    "student": {"return_mean": 230.1, "return_std": 8.5, "success_rate": 0.9, "fall_rate": 0.05,
                "episode_length_mean": 240.0, "episodes": 64},
    "imitation": {"kl": 0.28, "action_mse": 0.0086, "masked/any": 0.004},
}


def write_run(run_dir, rows, evaluation=None, tail=""):
    run_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + tail
    (run_dir / "metrics.jsonl").write_text(text)
    if evaluation is not None:
        (run_dir / "eval.json").write_text(json.dumps(evaluation))
    return run_dir


def check_png(path, width, height):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (height, width)
    assert float(np.std(img[..., :3])) > 0.01  # something was drawn, not a blank canvas


def test_full_run_writes_four_pngs(tmp_path):
    # A half-written last line (killed run) and an unknown phase must be tolerated.
    other = {"phase": "finetune", "update": 1, "env_steps": 1, "loss": [1.0, 2.0]}
    run = write_run(tmp_path / "run", teacher_rows() + distill_rows() + [other], EVAL, tail='{"phase": "dis')
    paths = plots.plot_run(run)
    names = [p.name for p in paths]
    assert names == ["teacher.png", "student.png", "panel.png", "masks.png"]
    assert all(p.parent == run / "plots" for p in paths)
    dpi = plots.DPI
    check_png(run / "plots/teacher.png", int(3 * 4.5 * dpi), int(2 * 3.2 * dpi))  # 6 panels: 3x2 grid
    check_png(run / "plots/student.png", int(2 * 4.5 * dpi), int(3.2 * dpi))  # loss + return
    check_png(run / "plots/panel.png", int(3 * 3.6 * dpi), int(3.4 * dpi))
    check_png(run / "plots/masks.png", int(7.0 * dpi), int(4.0 * dpi))


def test_teacher_only_run_gives_only_teacher_png(tmp_path):
    run = write_run(tmp_path / "run", teacher_rows(seeds=1))
    pyplot_before = "matplotlib.pyplot" in sys.modules  # other tests in the session may import it
    paths = plots.plot_run(str(run))  # str accepted too
    assert pyplot_before or "matplotlib.pyplot" not in sys.modules  # no pyplot global state
    assert [p.name for p in paths] == ["teacher.png"]
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["teacher.png"]


def test_partial_teacher_metrics_and_eval_only(tmp_path):
    # Only two of the teacher metrics present -> a 2-panel figure; eval.json alone still gives a panel.
    rows = [{"phase": "teacher", "update": u, "env_steps": 100 * u, "loss": [1.0 / u], "entropy": [0.5]}
            for u in range(1, 4)]
    run = write_run(tmp_path / "run", rows, {"student": EVAL["student"]})
    assert [p.name for p in plots.plot_run(run)] == ["teacher.png", "panel.png"]
    check_png(run / "plots/teacher.png", int(2 * 4.5 * plots.DPI), int(3.2 * plots.DPI))
    empty = write_run(tmp_path / "empty", [])
    assert plots.plot_run(empty) == []


def test_non_finite_rows_do_not_crash(tmp_path):
    rows = teacher_rows(n=4)
    rows[1]["loss"] = [math.nan, math.nan]
    rows[2]["value_loss"] = [math.inf, -math.inf]
    rows[3]["episode_return"] = [None, 3.0]
    drows = distill_rows(n=3)
    for r in drows:
        r["masked/any"] = [math.nan, math.nan]  # an entirely NaN curve
    run = write_run(tmp_path / "run", rows + drows)
    assert [p.name for p in plots.plot_run(run)] == ["teacher.png", "student.png", "masks.png"]


def test_series_mean_and_band_over_seeds():
    rows = [
        {"update": 2, "env_steps": 20, "x": [1.0, 3.0, math.nan]},
        {"update": 1, "env_steps": 10, "x": [2.0, 4.0, 9.0]},
        {"update": 3, "env_steps": 30, "x": [math.nan, math.nan, math.nan]},
        {"update": 2, "env_steps": 20, "x": [5.0, 7.0, 6.0]},  # re-logged after resume: wins
        {"update": 4, "env_steps": 40, "y": [1.0]},  # other key: ignored
    ]
    s = plots.series(rows, "x")
    np.testing.assert_array_equal(s.env_steps, [10, 20, 30])
    np.testing.assert_allclose(s.mean[:2], [5.0, 6.0])
    np.testing.assert_allclose(s.lo[:2], [2.0, 5.0])
    np.testing.assert_allclose(s.hi[:2], [9.0, 7.0])
    assert np.isnan(s.mean[2]) and s.num_seeds == 3
    scalar = plots.series([{"env_steps": 1, "x": 2.5}], "x")
    assert scalar.mean.tolist() == [2.5] and scalar.num_seeds == 1
    assert plots.series(rows, "missing") is None


def test_missing_run_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        plots.plot_run(tmp_path / "nope")


def test_no_matplotlib_at_import():
    code = (
        "import sys, distill_jax, distill_jax.run.plots, distill_jax.run.progress\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


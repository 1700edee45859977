"""Figures of a run directory: what each figure shows (inspected on the matplotlib objects before
saving), that its text is readable (words, labelled axes, no overlapping labels), which PNGs appear,
and the seed statistics behind the curves (hand-computed)."""

import itertools
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from distill_jax.run import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEP = 8192  # env steps per update: 20 updates reach 163,840, whose plain tick labels used to collide


def teacher_rows(n=20, seeds=2, step=STEP):
    rows = []
    for u in range(1, n + 1):
        row = {"phase": "teacher", "update": u, "env_steps": step * u}
        for i, key in enumerate(("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")):
            row[key] = [float(u + i + 0.5 * k) for k in range(seeds)]
        row["clip_fraction"] = [0.01 * u] * seeds
        row["episode_return"] = [10.0 * u + k for k in range(seeds)]
        row["env/fall"] = [0.1] * seeds  # logged, not shown: must be ignored
        if u == 1:
            row["episode_return"] = [math.nan] * seeds  # no episode finished yet
        if u == n:
            row["seconds"], row["env_steps_per_second"] = 0.4, 40000.0
        rows.append(row)
    return rows


def distill_rows(n=20, seeds=2, step=STEP, loss_offset=0.0):
    rows = []
    for u in range(1, n + 1):
        kl = [80.0 / u**2 + 0.1 * k for k in range(seeds)]  # falls over > 1.5 decades
        rows.append({
            "phase": "distill", "update": u, "env_steps": step * u, "kl": kl,
            "loss": [v + loss_offset for v in kl],
            "episode_return": [12.0 * u + k for k in range(seeds)],
            "masked/any": [0.01 * u] * seeds, "masked/falls": [0.005 * u] * seeds,
            "masked/nonfinite_teacher": [math.nan if u == 2 else 0.0] * seeds,
            "beta": [0.0] * seeds,
        })
    return rows


EVAL = {
    "teacher": {"return_mean": 245.6, "return_std": 2.04, "success_rate": 1.0, "fall_rate": 0.0,
                "success_rate_ci95": [0.94, 1.0], "fall_rate_ci95": [0.0, 0.057],
                "episode_length_mean": 250.0, "episodes": 64},
    "student": {"return_mean": 230.1, "return_std": 8.5, "success_rate": 0.9, "fall_rate": 0.05,
                "success_rate_ci95": [0.8, 0.95], "fall_rate_ci95": [0.017, 0.13],
                "episode_length_mean": 240.0, "episodes": 64},
    "imitation": {"kl": 0.28, "action_mse": 0.0086, "masked/any": 0.004},
    "config": {"env": "cartpole"},
    "sweep": [{"lr": 1e-3}],  # a section this module does not know: ignored
}


def write_run(run_dir, rows, evaluation=None, tail=""):
    run_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + tail
    (run_dir / "metrics.jsonl").write_text(text)
    if evaluation is not None:
        (run_dir / "eval.json").write_text(json.dumps(evaluation))
    return run_dir


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("full") / "run", teacher_rows() + distill_rows(), EVAL)


@pytest.fixture(scope="module")
def figures(full_run):
    return plots.build_figures(full_run)


def by_gid(ax, prefix):
    return [line for line in ax.lines if str(line.get_gid()).startswith(prefix)]


def axes_titled(fig, start):
    found = [ax for ax in fig.axes if ax.get_title().startswith(start)]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def check_png(path, fig):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    import matplotlib.image

    img = matplotlib.image.imread(path)
    width, height = fig.get_size_inches() * plots.DPI
    assert img.shape[:2] == (round(height), round(width))
    assert float(np.std(img[..., :3])) > 0.01  # something was drawn, not a blank canvas


def test_full_run_writes_five_pngs(tmp_path):
    # A half-written last line (killed run) and an unknown phase must be tolerated.
    other = {"phase": "finetune", "update": 1, "env_steps": 1, "loss": [1.0, 2.0]}
    run = write_run(tmp_path / "run", teacher_rows() + distill_rows() + [other], EVAL, tail='{"phase": "dis')
    paths = plots.plot_run(run)
    assert [p.name for p in paths] == ["teacher.png", "student.png", "panel.png", "masks.png", "summary.png"]
    assert all(p.parent == run / "plots" for p in paths)
    for path, fig in zip(paths, plots.build_figures(run).values()):
        check_png(path, fig)


def test_every_figure_has_a_title_in_words_and_labelled_axes(figures):
    assert list(figures) == ["teacher", "student", "panel", "masks", "summary"]
    for name, fig in figures.items():
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert axes, name
        for ax in axes:
            title = ax.get_title()
            assert len(re.findall(r"[A-Za-z]{2,}", title)) >= 3 and "_" not in title, (name, title)
            assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), (name, title)
            assert "_" not in ax.get_xlabel() + ax.get_ylabel(), (name, title)
    teacher_titles = [ax.get_title() for ax in figures["teacher"].axes]
    assert teacher_titles[0] == "Teacher: episode return during training"
    assert len(teacher_titles) == 6  # the total loss is left out: its terms are drawn


def test_units_on_the_axes(figures):
    teacher = figures["teacher"]
    assert "nats" in axes_titled(teacher, "Teacher: policy entropy").get_ylabel()
    assert "nats" in axes_titled(teacher, "Teacher: KL").get_ylabel()
    clip = axes_titled(teacher, "Teacher: share of samples clipped")
    fig_ticks = clip.yaxis.get_major_formatter().format_ticks([0.0, 0.1, 0.2])
    assert fig_ticks[-1].endswith("%")
    ret = axes_titled(teacher, "Teacher: episode return")
    assert "env steps" in ret.get_xlabel() and "return" in ret.get_ylabel()
    assert ret.xaxis.get_major_formatter().format_ticks([0, 50_000, 100_000, 150_000]) == ["0", "50k", "100k", "150k"]
    assert "40000" not in teacher._suptitle.get_text()  # env steps/s are not a title
    assert "0 s" in teacher._suptitle.get_text()  # 0.4 s of compiled calls, rounded
    kl = axes_titled(figures["student"], "Student: KL")
    assert kl.get_yscale() == "log" and "nats" in kl.get_ylabel()
    assert axes_titled(figures["student"], "Student: closed-loop").get_yscale() == "linear"


@pytest.mark.parametrize("values, labels", [
    ([0, 250_000, 500_000], ["0", "250k", "500k"]),
    ([0, 1_250_000, 2_500_000], ["0", "1.25M", "2.5M"]),
    ([0.1, 0.2, 0.30000000000000004], ["0.1", "0.2", "0.3"]),
    ([-5.0, 0.0, 5.0], ["\N{MINUS SIGN}5", "0", "5"]),
    ([6.4e-5, 8.0e-5, 9.6e-5], ["6.4e-5", "8e-5", "9.6e-5"]),
    ([120, 140, 160], ["120", "140", "160"]),
])
def test_compact_tick_labels(values, labels):
    assert plots._compact_formatter().format_ticks(values) == labels
    assert plots.format_count(409_600) == "409.6k" and plots.format_count(60e6) == "60M"


def test_student_return_carries_the_teacher_reference_and_its_panel_result(figures):
    for fig, start in ((figures["student"], "Student: closed-loop"), (figures["summary"], "Student: closed-loop")):
        ax = axes_titled(fig, start)
        (ref,) = by_gid(ax, "teacher_reference")
        assert list(ref.get_ydata()) == [EVAL["teacher"]["return_mean"]] * 2
        assert ref.get_label() == "teacher on held-out panel: 245.6 ± 2.0"
        (band,) = ax.patches  # the teacher's ± std band
        assert band.get_y() == pytest.approx(245.6 - 2.04) and band.get_height() == pytest.approx(2 * 2.04)
        (marker,) = by_gid(ax, "student_panel_return")
        assert list(marker.get_xdata()) == [20 * STEP] and list(marker.get_ydata()) == [230.1]
        assert "teacher on held-out panel: 245.6 ± 2.0" in [t.get_text() for t in ax.get_legend().get_texts()]
    # The teacher curve carries the teacher's own panel result at its end.
    (mark,) = by_gid(axes_titled(figures["teacher"], "Teacher: episode return"), "teacher_panel_return")
    assert list(mark.get_ydata()) == [245.6]


def test_per_seed_lines_with_their_mean_in_consistent_colours(tmp_path):
    import matplotlib.colors as mcolors

    run = write_run(tmp_path / "run", teacher_rows(seeds=3) + distill_rows(seeds=3), EVAL)
    figs = plots.build_figures(run)
    for fig, title, agent, colour in ((figs["teacher"], "Teacher: episode return", "teacher", plots.TEACHER_COLOR),
                                      (figs["summary"], "Teacher: episode return", "teacher", plots.TEACHER_COLOR),
                                      (figs["student"], "Student: closed-loop", "student", plots.STUDENT_COLOR),
                                      (figs["summary"], "Student: closed-loop", "student", plots.STUDENT_COLOR)):
        ax = axes_titled(fig, title)
        seeds = by_gid(ax, f"{agent}/episode_return/seed")
        (mean,) = by_gid(ax, f"{agent}/episode_return/mean")
        assert len(seeds) == 3
        stacked = np.stack([s.get_ydata() for s in seeds], 1)
        np.testing.assert_allclose(mean.get_ydata()[1:], stacked[1:].mean(1))
        assert mean.get_linewidth() > seeds[0].get_linewidth()
        assert {mcolors.to_hex(l.get_color()) for l in [mean, *seeds]} == {mcolors.to_hex(colour)}
        assert mean.get_label() == f"{agent}, mean of 3 seeds"
    bars = [p for p in axes_titled(figs["panel"], "Held-out panel: episode return").patches]
    assert [mcolors.to_hex(b.get_facecolor()[:3]) for b in bars] == [
        mcolors.to_hex(plots.TEACHER_COLOR), mcolors.to_hex(plots.STUDENT_COLOR)]


def test_loss_is_drawn_beside_the_kl_only_when_they_differ(tmp_path):
    equal = plots.build_figures(write_run(tmp_path / "eq", distill_rows()))["student"]
    ax = axes_titled(equal, "Student: KL to the teacher")
    assert by_gid(ax, "student/kl/") and not by_gid(ax, "student/loss/")
    assert "(= the loss)" in ax.get_title()
    differ = plots.build_figures(write_run(tmp_path / "ne", distill_rows(loss_offset=0.5)))["student"]
    ax = axes_titled(differ, "Student: loss and KL")
    assert by_gid(ax, "student/kl/mean") and by_gid(ax, "student/loss/mean")
    (loss,), (kl,) = by_gid(ax, "student/loss/mean"), by_gid(ax, "student/kl/mean")
    np.testing.assert_allclose(loss.get_ydata() - kl.get_ydata(), 0.5)


def shown_tick_labels(axis):
    """The tick labels matplotlib draws: non-empty, at a tick inside the view (it keeps spare ones outside)."""
    low, high = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(low), abs(high), 1.0)
    return [tick.label1 for tick in axis.get_major_ticks()
            if low - slack <= tick.get_loc() <= high + slack and tick.label1.get_visible() and tick.label1.get_text()]


def text_boxes(fig):
    """(name, bbox) of every visible, non-empty label, title and tick label of ``fig``."""
    boxes = []
    renderer = fig.canvas.get_renderer()  # the Agg canvas build_figures attached
    suptitle = fig._suptitle
    if suptitle is not None and suptitle.get_text():
        boxes.append(("suptitle", suptitle.get_window_extent(renderer)))
    for i, ax in enumerate(ax for ax in fig.axes if ax.get_visible()):
        texts = [("title", ax.title), ("xlabel", ax.xaxis.label), ("ylabel", ax.yaxis.label)]
        texts += [("xtick", t) for t in shown_tick_labels(ax.xaxis)]
        texts += [("ytick", t) for t in shown_tick_labels(ax.yaxis)]
        for kind, text in texts:
            if text.get_visible() and text.get_text().strip():
                boxes.append((f"axes {i} {kind} {text.get_text()!r}", text.get_window_extent(renderer)))
    return boxes


@pytest.mark.parametrize("step", [1, STEP, 3_000_000])  # 20..., 163,840 and 60M env steps
def test_no_label_overlaps_another_or_leaves_the_figure(tmp_path, step):
    run = write_run(tmp_path / "run", teacher_rows(step=step) + distill_rows(step=step), EVAL)
    for name, fig in plots.build_figures(run).items():
        fig.canvas.draw()
        for ax in fig.axes:  # the x tick labels, left to right, each clear of the next
            ticks = sorted((t.get_window_extent() for t in shown_tick_labels(ax.xaxis)), key=lambda b: b.x0)
            assert len(ticks) >= 3 or not ax.get_xlabel().endswith("(per seed)"), (name, ax.get_title())
            for left, right in itertools.pairwise(ticks):
                assert left.x1 <= right.x0, (name, ax.get_title(), left, right)
        boxes = text_boxes(fig)
        frame = fig.bbox
        for label, box in boxes:
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            assert inside, (name, label)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
            assert not box_a.overlaps(box_b), (name, a, b)


def test_summary_tells_the_story(figures):
    fig = figures["summary"]
    assert fig._suptitle.get_text() == (
        "cartpole: the deployable student reaches 94% of the privileged teacher's held-out return")
    falls = axes_titled(fig, "Held-out panel: fall rate")
    assert [b.get_height() for b in falls.patches] == [0.0, 0.05]
    (errors,) = [c for c in falls.collections if c.get_segments()]
    spans = [(seg[:, 1].min(), seg[:, 1].max()) for seg in errors.get_segments()]
    np.testing.assert_allclose(spans, [EVAL["teacher"]["fall_rate_ci95"], EVAL["student"]["fall_rate_ci95"]])
    returns = axes_titled(fig, "Held-out panel: episode return")
    assert [b.get_height() for b in returns.patches] == [245.6, 230.1]
    kl = axes_titled(fig, "Student: KL to the teacher")
    (panel_kl,) = by_gid(kl, "student_panel_kl")
    assert list(panel_kl.get_ydata()) == [0.28]
    legend = [t.get_text() for t in kl.get_legend().get_texts()]
    assert "masked on the panel: 0.4% of steps" in legend and "action MSE on the panel: 0.0086" in legend
    # Both return curves on one scale.
    assert axes_titled(fig, "Teacher: episode return").get_ylim() == axes_titled(fig, "Student: closed-loop").get_ylim()


def test_teacher_only_run_gives_teacher_and_summary(tmp_path):
    run = write_run(tmp_path / "run", teacher_rows(seeds=1))
    pyplot_before = "matplotlib.pyplot" in sys.modules  # other tests in the session may import it
    paths = plots.plot_run(str(run))  # str accepted too
    assert pyplot_before or "matplotlib.pyplot" not in sys.modules  # no pyplot global state
    assert [p.name for p in paths] == ["teacher.png", "summary.png"]
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["summary.png", "teacher.png"]
    summary = plots.build_figures(run)["summary"]
    assert [ax.get_title() for ax in summary.axes] == ["Teacher: episode return during training"]
    (line,) = summary.axes[0].lines
    assert line.get_label() == "teacher (1 seed)" and summary.axes[0].get_legend() is None


def test_partial_teacher_metrics_and_eval_only(tmp_path):
    # Only the total loss and the entropy: the total loss is shown since its terms are missing.
    rows = [{"phase": "teacher", "update": u, "env_steps": 100 * u, "loss": [1.0 / u], "entropy": [0.5]}
            for u in range(1, 4)]
    run = write_run(tmp_path / "run", rows, {"student": EVAL["student"], "teacher": [1, 2]})  # teacher: not a dict
    figs = plots.build_figures(run)
    assert list(figs) == ["teacher", "panel", "summary"]
    assert [ax.get_title() for ax in figs["teacher"].axes] == ["Teacher: PPO total loss", "Teacher: policy entropy"]
    panel_axes = [ax for ax in figs["panel"].axes if ax.get_visible()]
    assert [len(ax.patches) for ax in panel_axes] == [1, 1, 1]  # the student alone
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
    evaluation = {"teacher": {"return_mean": "nan?", "fall_rate": None}, "student": {"return_mean": math.inf}}
    run = write_run(tmp_path / "run", rows + drows, evaluation)
    assert [p.name for p in plots.plot_run(run)] == ["teacher.png", "student.png", "masks.png", "summary.png"]
    ax = axes_titled(plots.build_figures(run)["student"], "Student: closed-loop")
    assert not by_gid(ax, "teacher_reference") and not by_gid(ax, "student_panel_return")


def test_series_mean_and_band_over_seeds():
    rows = [
        {"update": 2, "env_steps": 20, "x": [1.0, 3.0, math.nan]},
        {"update": 1, "env_steps": 10, "x": [2.0, 4.0, 9.0]},
        {"update": 3, "env_steps": 30, "x": [math.nan, math.nan, math.nan]},
        {"update": 2, "env_steps": 20, "x": [5.0, 7.0, 6.0]},  # re-logged after resume: wins
        {"update": 4, "env_steps": 40, "y": [1.0]},  # other key: ignored
        {"update": 5, "env_steps": 50, "x": [1.0]},  # a short row: padded with NaN
    ]
    s = plots.series(rows, "x")
    np.testing.assert_array_equal(s.env_steps, [10, 20, 30, 50])
    np.testing.assert_allclose(s.mean[:2], [5.0, 6.0])
    np.testing.assert_allclose(s.lo[:2], [2.0, 5.0])
    np.testing.assert_allclose(s.hi[:2], [9.0, 7.0])
    np.testing.assert_array_equal(s.per_seed[[0, 1, 3]], [[2.0, 4.0, 9.0], [5.0, 7.0, 6.0], [1.0, np.nan, np.nan]])
    assert np.isnan(s.mean[2]) and s.num_seeds == 3
    scalar = plots.series([{"env_steps": 1, "x": 2.5}], "x")
    assert scalar.mean.tolist() == [2.5] and scalar.num_seeds == 1
    assert plots.series(rows, "missing") is None
    assert plots.same_curve(s, s._replace(per_seed=s.per_seed * (1 + 1e-9)))
    assert not plots.same_curve(s, s._replace(per_seed=s.per_seed + 1e-3))


def test_missing_run_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        plots.plot_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        plots.build_figures(tmp_path / "nope")


def test_without_matplotlib_nothing_is_written(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", teacher_rows(n=3))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        assert plots.plot_run(run) == []
    assert not (run / "plots").exists()


def test_no_matplotlib_at_import():
    code = (
        "import sys, distill_jax, distill_jax.run.plots, distill_jax.run.progress\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_sweep_draws_return_and_fall_rate_against_the_swept_value(tmp_path):
    def point(value, teacher, student, fall):
        entry = lambda mean: {"mean": mean, "ci95": [mean - 1.0, mean + 1.0], "per_seed": [mean - 0.5, mean + 0.5]}  # noqa: E731
        return {"values": {"distill.objective.ent_coef": value}, "num_seeds": 2,
                "teacher": {"return_mean": entry(teacher), "fall_rate": entry(0.0)},
                "student": {"return_mean": entry(student), "fall_rate": entry(fall)}}

    swept = {**EVAL, "across_seeds": [point(0.1, 240.0, 200.0, 0.3), point(0.0, 240.0, 230.0, 0.1)]}
    figures = plots.build_figures(write_run(tmp_path / "run", teacher_rows() + distill_rows(), swept))
    ax = axes_titled(figures["sweep"], "Held-out return per episode by ent_coef")
    (student,) = by_gid(ax, "sweep/student/return_mean")
    np.testing.assert_allclose(student.get_xdata(), [0.0, 0.1])  # sorted by the swept value
    np.testing.assert_allclose(student.get_ydata(), [230.0, 200.0])
    assert ax.get_xlabel() == "distill.objective.ent_coef"
    (falls,) = by_gid(axes_titled(figures["sweep"], "Held-out episodes that fell"), "sweep/student/fall_rate")
    np.testing.assert_allclose(falls.get_ydata(), [0.1, 0.3])
    # No sweep (one point, as every run without --sweep has): no figure.
    assert "sweep" not in plots.build_figures(write_run(tmp_path / "one", teacher_rows(), {
        **EVAL, "across_seeds": [point(0.0, 240.0, 230.0, 0.1) | {"values": {}}]}))


def test_the_suite_figure_names_each_tile_type_on_its_axis():
    import matplotlib

    matplotlib.use("Agg")
    summary = {"return_mean": 10.0, "fall_rate": 0.1, "fall_rate_ci95": [0.0, 0.3]}
    entry = lambda condition, strength, unit: {"condition": condition, "strength": strength, "unit": unit,  # noqa: E731
                                               "in_training": True, "teacher": summary, "student": summary}
    evaluation = {"suite": [entry("terrain_type", 0.0, "(stairs_up)"), entry("terrain_type", 1.0, "(gaps)"),
                            entry("terrain_level", 0.0, "index"), entry("terrain_level", 1.0, "index")]}
    fig = plots.suite_figure(evaluation)
    axes = {ax.get_xlabel(): ax for ax in fig.axes}
    assert [t.get_text() for t in axes["terrain type"].get_xticklabels()] == ["stairs_up", "gaps"]
    assert "terrain level (index)" in axes  # a numeric axis keeps its unit

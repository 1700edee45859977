"""Figures of a run directory: teacher and student learning curves, the held-out panel, masks, a summary.

Reads ``run_dir/metrics.jsonl`` (one row per update, every metric a list over
seeds ``[K]``) and, when present, ``run_dir/eval.json``. :func:`build_figures`
returns the matplotlib ``Figure`` objects by name without writing anything;
:func:`plot_run` saves them as ``run_dir/plots/<name>.png``:

* ``teacher.png`` — PPO on privileged observations: return (with the teacher's
  held-out panel return marked at the end), policy and value loss, entropy,
  approximate KL, clip fraction.
* ``student.png`` — distillation: closed-loop return against the teacher's
  held-out return (a reference line with its ± std band), the KL to the teacher
  (the loss is drawn too only where it differs from the KL), action error.
* ``panel.png`` — teacher vs student on the held-out panel: return ± std,
  success and fall rate with their 95 % intervals.
* ``masks.png`` — share of distillation samples masked, per rule.
* ``summary.png`` — the run at a glance: both learning curves, the panel bars
  and the imitation numbers.

Every curve is drawn per seed (thin) with the mean over seeds (thick); the
teacher is blue and the student orange in every figure. A figure (or panel)
whose data are absent is skipped, not drawn empty, and keys this module does not
know are ignored, so new metrics or new ``eval.json`` sections never break it.

matplotlib is imported inside the functions, through ``matplotlib.figure.Figure``
(Agg canvas, no pyplot global state), so ``import distill_jax`` stays fast; if it
is not installed, :func:`plot_run` warns and writes nothing.

Example::

    python -m distill_jax.run.plots runs/my_run      # -> runs/my_run/plots/*.png
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import warnings
from typing import Any, NamedTuple

import numpy as np

DPI = 100
TEACHER_COLOR = "tab:blue"
STUDENT_COLOR = "tab:orange"
MASK_COLORS = ("black", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
AGENTS = {"teacher": ("teacher", TEACHER_COLOR), "student": ("student", STUDENT_COLOR)}
# Margins and gaps between panels, inches: room for tick labels, axis labels, titles, suptitle.
MARGIN_IN = {"left": 0.85, "right": 0.25, "bottom": 0.6, "top": 1.05, "between_x": 0.95, "between_y": 0.95}
# Applied while a figure is built (artists read rcParams when created), so no global state changes.
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
    "legend.fontsize": 8.5, "legend.framealpha": 0.85, "legend.edgecolor": "none", "figure.titlesize": 13,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
}
SUMMARY_STYLE = {**STYLE, "axes.titlesize": 12.5, "axes.labelsize": 11, "xtick.labelsize": 10,
                 "ytick.labelsize": 10, "legend.fontsize": 9.5, "figure.titlesize": 15}


class Metric(NamedTuple):
    """How one logged key is shown.

    Fields: the key; the panel title after "Teacher: " / "Student: "; the y label with
    its unit; a rate drawn in %; a positive quantity that may go on a log axis.
    """

    key: str
    title: str
    ylabel: str
    percent: bool = False
    log: bool = False


RETURN = Metric("episode_return", "episode return during training", "return per episode (sum of rewards)")
TEACHER_METRICS = (
    RETURN,
    Metric("policy_loss", "PPO clipped policy loss", "surrogate loss (normalised advantage)"),
    Metric("value_loss", "value-function loss", "squared error of the return", log=True),
    Metric("entropy", "policy entropy", "entropy (nats)"),
    Metric("approx_kl", "KL between successive policies", "approximate KL (nats)", log=True),
    Metric("clip_fraction", "share of samples clipped by PPO", "samples clipped", percent=True),
)
# Shown only when the separate terms above are missing: the total is their weighted sum.
TEACHER_TOTAL_LOSS = Metric("loss", "PPO total loss", "loss")
STUDENT_RETURN = RETURN._replace(title="closed-loop episode return")
KL = Metric("kl", "KL to the teacher", "KL divergence (nats)", log=True)
DISTILL_LOSS = Metric("loss", "distillation loss", "loss (nats)", log=True)
ACTION_MSE = Metric("mse", "action error to the teacher", "mean squared action error", log=True)
TEACHER_STEPS = "teacher env steps (per seed)"
STUDENT_STEPS = "distillation env steps (per seed)"
# eval.json keys drawn as teacher-vs-student bars, with their panel titles.
PANEL_BARS = (("return_mean", "Held-out panel: episode return"), ("success_rate", "Held-out panel: success rate"),
              ("fall_rate", "Held-out panel: fall rate"))
RATE_LABELS = {"success_rate": "episodes that succeeded", "fall_rate": "episodes that fell"}


class Series(NamedTuple):
    """One metric of one phase over logged updates, sorted by env steps.

    Fields:
      env_steps: ``[N]`` env steps per seed at each update.
      mean: ``[N]`` mean over seeds (NaN where every seed is NaN).
      lo: ``[N]`` min over seeds.
      hi: ``[N]`` max over seeds.
      num_seeds: K, the number of seeds (the widest row).
      per_seed: ``[N, K]`` the values of each seed (NaN where a row was shorter or non-finite).
    """

    env_steps: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    num_seeds: int
    per_seed: np.ndarray


def load_metrics(path: pathlib.Path | str) -> dict[str, list[dict[str, Any]]]:
    """Rows of a ``metrics.jsonl`` grouped by ``phase``, in file order.

    A missing file gives ``{}``; an unparseable line (the half-written last line
    of a killed run) is skipped rather than losing the whole run's plots.
    """
    path = pathlib.Path(path)
    phases: dict[str, list[dict[str, Any]]] = {}
    if not path.exists():
        return phases
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            phases.setdefault(str(row.get("phase", "")), []).append(row)
    return phases


def load_eval(path: pathlib.Path | str) -> dict[str, Any]:
    """``eval.json`` as a dict; ``{}`` when it is missing, unreadable or not an object."""
    path = pathlib.Path(path)
    try:
        evaluation = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return evaluation if isinstance(evaluation, dict) else {}


def _as_float(x: Any) -> float:
    """A JSON number (or None / junk) as a float; anything unusable becomes NaN."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def series(rows: list[dict[str, Any]], key: str) -> Series | None:
    """Per-seed values, mean and min-max band over seeds of ``key`` against ``env_steps``.

    Rows without ``key`` or ``env_steps`` are ignored; ``None`` if none have it.
    When an update appears twice (a resumed run re-logs the updates after its
    last checkpoint) the later row wins, so the curve has no zig-zag.
    """
    by_step: dict[float, list[float]] = {}
    for row in rows:
        if key not in row or "env_steps" not in row:
            continue
        value = row[key]
        values = value if isinstance(value, list) else [value]
        by_step[_as_float(row["env_steps"])] = [_as_float(v) for v in values]
    steps = np.array(sorted(s for s in by_step if not math.isnan(s)), dtype=np.float64)
    if steps.size == 0:
        return None
    width = max(max(len(by_step[s]) for s in steps), 1)
    values = np.full((steps.size, width), np.nan)  # ragged rows are padded with NaN
    for i, s in enumerate(steps):
        values[i, : len(by_step[s])] = by_step[s]
    values[~np.isfinite(values)] = np.nan  # +-inf would blow up the axis limits
    with warnings.catch_warnings():
        # All-NaN rows are expected (e.g. no episode finished yet); they stay NaN gaps.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = np.nanmean(values, 1), np.nanmin(values, 1), np.nanmax(values, 1)
    return Series(steps, mean, lo, hi, width, values)


def same_curve(a: Series, b: Series) -> bool:
    """Whether two series hold the same numbers (e.g. the distillation loss is the KL when ent_coef=0)."""
    return (a.per_seed.shape == b.per_seed.shape and np.array_equal(a.env_steps, b.env_steps)
            and bool(np.allclose(a.per_seed, b.per_seed, rtol=1e-6, atol=1e-12, equal_nan=True)))


def _section(evaluation: dict[str, Any], name: str) -> dict[str, Any]:
    """``evaluation[name]`` when it is a dict (absent or another shape: ``{}``)."""
    section = evaluation.get(name)
    return section if isinstance(section, dict) else {}


def _number(section: dict[str, Any], key: str) -> float:
    """A finite number from ``section[key]``, else NaN."""
    value = _as_float(section.get(key))
    return value if math.isfinite(value) else math.nan


def _interval(section: dict[str, Any], key: str) -> tuple[float, float] | None:
    """``section[key]`` as a finite ``(low, high)`` pair, else ``None``."""
    value = section.get(key)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    low, high = _as_float(value[0]), _as_float(value[1])
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None


SUFFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))


def format_count(x: float) -> str:
    """A count in short form: ``950``, ``100k``, ``409.6k``, ``1.2M``."""
    for scale, suffix in SUFFIXES:
        if abs(x) >= scale:
            return f"{x / scale:.4g}{suffix}"
    return f"{x:.4g}"


def _compact_formatter():
    """Tick labels like ``0``, ``250k``, ``1.25M``, ``0.05``, ``6.4e-5``: one scale per axis, no offset text.

    Thousands get ``k`` from 10,000 up (so returns up to 9999 stay plain), millions ``M``.
    """
    from matplotlib.ticker import Formatter

    class Compact(Formatter):
        def __call__(self, x, pos=None):
            return self.format_ticks([x])[0]

        def format_ticks(self, values):
            values = np.asarray(values, dtype=np.float64)
            finite = values[np.isfinite(values)]
            top = float(np.max(np.abs(finite))) if finite.size else 0.0
            scale, suffix = next(((s, u) for s, u in SUFFIXES if top >= max(s, 1e4)), (1.0, ""))
            if 0 < top < 1e-2:  # 0.000064 -> 6.4e−5: short labels leave room for the y label
                exponent = math.floor(math.log10(top))
                scale, suffix = 10.0 ** exponent, f"e{exponent}"
            scaled = finite / scale
            step = float(np.min(np.diff(np.unique(scaled)))) if np.unique(scaled).size > 1 else 1.0
            # The fewest decimals that still tell neighbouring ticks apart.
            decimals = next((d for d in range(9) if np.allclose(np.round(scaled, d), scaled, rtol=0,
                                                                atol=step * 1e-3)), 8)
            labels = []
            for v in values / scale:
                text = f"{v:.{decimals}f}"
                text = text.rstrip("0").rstrip(".") if "." in text else text  # 2.50M -> 2.5M
                zero = not math.isfinite(v) or float(text) == 0
                labels.append("0" if zero else text.replace("-", "\N{MINUS SIGN}") + suffix)
            return labels

    return Compact()


def _style_x_steps(ax, label: str) -> None:
    """An env-steps x axis: compact labels, as many ticks as fit the axes width without overlap."""
    from matplotlib.ticker import MaxNLocator

    width_in = ax.get_position().width * ax.figure.get_figwidth()
    ax.xaxis.set_major_locator(MaxNLocator(nbins=max(3, int(width_in / 0.8)), steps=[1, 2, 2.5, 5, 10],
                                           min_n_ticks=3))
    ax.xaxis.set_major_formatter(_compact_formatter())
    ax.set_xlabel(label)


def _style_y(ax, metric: Metric, values: np.ndarray | None = None) -> None:
    """Y axis of a metric: % for rates; log scale where ``metric.log`` and the positive ``values`` span
    over two decades (a KL falling from 80 to 0.3 nats; two decades keep two labelled ticks in view);
    else compact linear labels."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    ax.set_ylabel(metric.ylabel)
    if metric.percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
        ax.set_ylim(bottom=0.0)  # a share is never negative
        return
    finite = values[np.isfinite(values)] if values is not None else np.empty(0)
    if metric.log and finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
        return
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(_compact_formatter())


def _grid(fig, rows: int, cols: int, margins: dict[str, float] = MARGIN_IN):
    """A ``GridSpec`` whose margins and gaps are fixed in inches.

    Fixed margins instead of a layout engine: constrained/tight layout re-draws
    the figure several times and made plotting ~3x slower.
    """
    width, height = fig.get_figwidth(), fig.get_figheight()
    axes_w = (width - margins["left"] - margins["right"] - (cols - 1) * margins["between_x"]) / cols
    axes_h = (height - margins["bottom"] - margins["top"] - (rows - 1) * margins["between_y"]) / rows
    return fig.add_gridspec(
        rows, cols, left=margins["left"] / width, right=1 - margins["right"] / width,
        bottom=margins["bottom"] / height, top=1 - margins["top"] / height,
        wspace=margins["between_x"] / axes_w, hspace=margins["between_y"] / axes_h,
    )


def _new_figure(width: float, height: float):
    """A ``Figure`` (inches) on its own Agg canvas: ``fig.canvas.draw()`` renders it, no pyplot involved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: keeps `import distill_jax` light
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _figure(num_panels: int, *, max_cols: int = 3, panel_size: tuple[float, float] = (4.6, 3.4), **margins):
    """A ``Figure`` with ``num_panels`` axes on a grid of at most ``max_cols`` columns.

    ``margins`` override entries of ``MARGIN_IN`` (inches).
    """
    cols = min(num_panels, max_cols)
    rows = math.ceil(num_panels / cols)
    width, height = panel_size[0] * cols, panel_size[1] * rows
    fig = _new_figure(width, height + margins.get("top", MARGIN_IN["top"]) - MARGIN_IN["top"])
    grid = _grid(fig, rows, cols, {**MARGIN_IN, **margins})
    return fig, [fig.add_subplot(grid[i // cols, i % cols]) for i in range(num_panels)]


def draw_seeds(ax, s: Series, color: str, name: str, gid: str, ls: str = "-") -> None:
    """Each seed as a thin line and the mean over seeds as a thick one (a lone seed: one line).

    Lines carry ``gid`` ``<gid>/mean`` and ``<gid>/seed<k>`` so tests can find them.
    """
    if s.num_seeds == 1:
        ax.plot(s.env_steps, s.mean, color=color, ls=ls, lw=1.6, label=f"{name} (1 seed)", gid=f"{gid}/mean")
        return
    labelled = "each seed" in ax.get_legend_handles_labels()[1]  # a second curve on the same axes
    for k in range(s.num_seeds):
        ax.plot(s.env_steps, s.per_seed[:, k], color=color, ls=ls, lw=0.8, alpha=0.35, gid=f"{gid}/seed{k}",
                label="each seed" if k == 0 and not labelled else None)
    ax.plot(s.env_steps, s.mean, color=color, ls=ls, lw=2.2, label=f"{name}, mean of {s.num_seeds} seeds",
            gid=f"{gid}/mean")


def _held_out_return(evaluation: dict[str, Any], agent: str) -> tuple[float, float, str]:
    """``agent``'s panel return: mean, std (NaN when absent) and ``"245.6 ± 2.0"``."""
    section = _section(evaluation, agent)
    mean, std = _number(section, "return_mean"), _number(section, "return_std")
    return mean, std, f"{mean:.1f}" + ("" if math.isnan(std) else f" ± {std:.1f}")


def _panel_result(ax, evaluation: dict[str, Any], agent: str, x: float) -> None:
    """``agent``'s held-out return (± std) as a marker at ``x``, the end of its training curve."""
    mean, std, text = _held_out_return(evaluation, agent)
    if math.isnan(mean):
        return
    name, color = AGENTS[agent]
    drawn = ax.errorbar([x], [mean], yerr=None if math.isnan(std) else [std], fmt="D", ms=7, color=color,
                        mec="black", capsize=4, zorder=5, label=f"{name} on held-out panel: {text}")
    drawn.lines[0].set_gid(f"{agent}_panel_return")  # the marker, not its error bar caps


def _teacher_reference(ax, evaluation: dict[str, Any]) -> None:
    """The teacher's held-out return as a labelled horizontal line with its ± std band."""
    mean, std, text = _held_out_return(evaluation, "teacher")
    if math.isnan(mean):
        return
    if std > 0:  # False for NaN too
        ax.axhspan(mean - std, mean + std, color=TEACHER_COLOR, alpha=0.12, lw=0)
    ax.axhline(mean, color=TEACHER_COLOR, ls="--", lw=1.5, gid="teacher_reference",
               label=f"teacher on held-out panel: {text}")


def _curve(ax, s: Series, metric: Metric, agent: str, steps_label: str) -> None:
    name, color = AGENTS[agent]
    draw_seeds(ax, s, color, name, gid=f"{agent}/{metric.key}")
    ax.set_title(f"{name.capitalize()}: {metric.title}")
    _style_y(ax, metric, s.per_seed)
    _style_x_steps(ax, steps_label)


def _legend(ax) -> None:
    """A legend where it tells something the title does not: several seeds, a reference, a marker."""
    if len(ax.get_legend_handles_labels()[1]) >= 2:
        ax.legend(loc="best")



def _phase_note(rows: list[dict[str, Any]], found: list[Series]) -> str:
    """``2 seeds, 409.6k env steps per seed, 41 s`` for a figure's suptitle."""
    k = max(s.num_seeds for s in found)
    steps = max(float(np.max(s.env_steps)) for s in found)
    seconds = sum(v for row in rows if math.isfinite(v := _as_float(row.get("seconds", 0.0))))
    note = f"{k} seed{'s' if k > 1 else ''}, {format_count(steps)} env steps per seed"
    return note + (f", {seconds:.0f} s in compiled calls" if seconds > 0 else "")


def teacher_figure(rows: list[dict[str, Any]], evaluation: dict[str, Any]):
    """``teacher``: PPO curves, one panel per metric present; ``None`` without teacher rows."""
    metrics = list(TEACHER_METRICS)
    if not any(series(rows, m.key) is not None for m in metrics[1:3]):
        metrics.insert(1, TEACHER_TOTAL_LOSS)
    found = [(m, s) for m in metrics if (s := series(rows, m.key)) is not None]
    if not found:
        return None
    fig, axes = _figure(len(found))
    for ax, (metric, s) in zip(axes, found):
        _curve(ax, s, metric, "teacher", TEACHER_STEPS)
        if metric is RETURN:
            _panel_result(ax, evaluation, "teacher", float(s.env_steps[-1]))
        _legend(ax)
    fig.suptitle("Teacher: PPO on privileged observations\n" + _phase_note(rows, [s for _, s in found]))
    return fig


def _imitation_curves(rows: list[dict[str, Any]]) -> list[tuple[Metric, Series]]:
    """The KL and the distillation loss, the loss dropped where it equals the KL."""
    kl, loss = series(rows, KL.key), series(rows, DISTILL_LOSS.key)
    if kl is not None and loss is not None and same_curve(kl, loss):
        return [(KL._replace(title=KL.title + " (= the loss)"), kl)]
    return [(m, s) for m, s in ((KL, kl), (DISTILL_LOSS, loss)) if s is not None]


def _draw_imitation(ax, curves: list[tuple[Metric, Series]]) -> None:
    for (metric, s), ls in zip(curves, ("-", "--")):
        name = "KL" if metric.key == KL.key else "loss"
        draw_seeds(ax, s, STUDENT_COLOR, name, gid=f"student/{metric.key}", ls=ls)
    first = curves[0][0]
    ax.set_title(f"Student: {first.title}" if len(curves) == 1 else "Student: loss and KL to the teacher")
    values = np.concatenate([s.per_seed.ravel() for _, s in curves])
    _style_y(ax, first if len(curves) == 1 else first._replace(ylabel="loss and KL (nats)"), values)
    _style_x_steps(ax, STUDENT_STEPS)


def student_figure(rows: list[dict[str, Any]], evaluation: dict[str, Any]):
    """``student``: closed-loop return against the teacher reference, KL (and loss), action error."""
    ret, mse = series(rows, RETURN.key), series(rows, ACTION_MSE.key)
    imitation = _imitation_curves(rows)
    panels = int(ret is not None) + int(bool(imitation)) + int(mse is not None)
    if panels == 0:
        return None
    fig, axes = _figure(panels)
    axes = iter(axes)
    if ret is not None:
        ax = next(axes)
        _teacher_reference(ax, evaluation)
        _curve(ax, ret, STUDENT_RETURN, "student", STUDENT_STEPS)
        _panel_result(ax, evaluation, "student", float(ret.env_steps[-1]))
        _legend(ax)
    if imitation:
        ax = next(axes)
        _draw_imitation(ax, imitation)
        _legend(ax)
    if mse is not None:
        ax = next(axes)
        _curve(ax, mse, ACTION_MSE, "student", STUDENT_STEPS)
        _legend(ax)
    found = [s for s in (ret, mse, *(s for _, s in imitation)) if s is not None]
    fig.suptitle("Student: distillation onto deployable observations\n" + _phase_note(rows, found))
    return fig


def _bars(ax, evaluation: dict[str, Any], key: str, agents: list[str]) -> bool:
    """Teacher vs student bars of ``key``: a return (± std) or a rate (95 % interval) with the numbers
    under each bar. False when no agent has ``key``."""
    sections = [_section(evaluation, a) for a in agents]
    values = [_number(s, key) for s in sections]
    numbers = [_held_out_return(evaluation, a)[2] for a in agents]
    if all(math.isnan(v) for v in values):
        return False
    x = np.arange(len(agents))
    colors = [AGENTS[a][1] for a in agents]
    if key == "return_mean":
        yerr = [0.0 if math.isnan(e := _number(s, "return_std")) else e for s in sections]
        ax.set_ylabel("return per episode (mean ± std)")
    else:
        intervals = [_interval(s, f"{key}_ci95") for s in sections]
        yerr = (np.array([[max(v - lo, 0.0), max(hi - v, 0.0)] for v, (lo, hi) in zip(values, intervals)]).T
                if all(intervals) and not any(math.isnan(v) for v in values) else None)
        numbers = [f"{v:.0%}" + (f"\n({iv[0]:.0%}–{iv[1]:.0%})" if iv else "") for v, iv in zip(values, intervals)]
        what = RATE_LABELS.get(key, key.replace("_", " "))
        _style_y(ax, Metric(key, "", what + (" (95 % CI)" if yerr is not None else ""), percent=True))
        ax.set_ylim(0.0, 1.05)  # rates: a fixed scale makes 0 % vs 100 % readable at a glance
    ax.bar(x, np.nan_to_num(values), yerr=yerr, capsize=6, color=colors, width=0.6, gid=f"bars/{key}")
    ax.set_xticks(x, [f"{AGENTS[a][0]}\n{n}" for a, n in zip(agents, numbers)])
    ax.set_xlim(-0.6, len(agents) - 0.4)
    ax.set_xlabel("policy")
    ax.grid(axis="x", visible=False)
    return True



def _panel_agents(evaluation: dict[str, Any]) -> list[str]:
    return [a for a in AGENTS if _section(evaluation, a)]


def _panel_note(evaluation: dict[str, Any], agents: list[str]) -> str:
    """``64 episodes per policy, seeds unseen in training`` (plus the distribution when shifted)."""
    n = _number(_section(evaluation, agents[0]), "episodes")
    note = f"{n:.0f} episodes per policy, seeds unseen in training" if not math.isnan(n) else "seeds unseen in training"
    if _section(evaluation, "panel").get("distribution") == "shifted":
        note += ", shifted environment"
    return note


def panel_figure(evaluation: dict[str, Any]):
    """``panel``: teacher vs student on the held-out panel; ``None`` without either section."""
    agents = _panel_agents(evaluation)
    if not agents:
        return None
    fig, axes = _figure(len(PANEL_BARS), panel_size=(3.8, 3.8), bottom=1.05)
    drawn = 0
    for ax, (key, title) in zip(axes, PANEL_BARS):
        if _bars(ax, evaluation, key, agents):
            ax.set_title(title)
            drawn += 1
        else:
            ax.set_visible(False)
    if drawn == 0:
        return None
    fig.suptitle("Teacher vs student on the held-out panel\n" + _panel_note(evaluation, agents))
    return fig


SWEEP_PANELS = (("return_mean", "return per episode", False), ("fall_rate", "episodes that fell", True))


def _across(group: dict[str, Any], agent: str, key: str) -> tuple[float, tuple[float, float] | None]:
    """A sweep point's mean over seeds of ``agent``'s ``key`` and its 95 % interval (``None``: one seed)."""
    entry = group.get(agent, {}).get(key)
    if not isinstance(entry, dict):
        return math.nan, None
    ci = entry.get("ci95")
    return _as_float(entry.get("mean")), (tuple(map(_as_float, ci)) if isinstance(ci, list) and len(ci) == 2 else None)


def sweep_figure(evaluation: dict[str, Any]):
    """``sweep``: held-out return and fall rate against the first swept coefficient, teacher and
    student as lines with their 95 % interval over seeds (one line per value of any other swept
    axis); ``None`` without a sweep of two or more points."""
    groups = [g for g in evaluation.get("across_seeds", []) if isinstance(g, dict) and isinstance(g.get("values"), dict)]
    if len(groups) < 2 or not groups[0]["values"]:
        return None
    axis, *others = list(groups[0]["values"])
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for g in groups:
        lines.setdefault(tuple(g["values"].get(o) for o in others), []).append(g)
    fig, axes = _figure(len(SWEEP_PANELS), panel_size=(4.8, 3.6), left=1.0)
    for ax, (key, label, percent) in zip(axes, SWEEP_PANELS):
        for agent, (name, color) in AGENTS.items():
            for n, (rest, members) in enumerate(lines.items()):
                members = sorted(members, key=lambda g: g["values"][axis])
                x = np.array([g["values"][axis] for g in members], float)
                y, ci = zip(*(_across(g, agent, key) for g in members))
                if all(math.isnan(v) for v in y):
                    continue
                suffix = "".join(f", {o}={v:g}" for o, v in zip(others, rest))
                ax.plot(x, y, color=color, marker="o", ls=("-", "--", ":", "-.")[n % 4], gid=f"sweep/{agent}/{key}",
                        label=f"{name}{suffix}")
                if all(c is not None for c in ci):
                    ax.fill_between(x, [c[0] for c in ci], [c[1] for c in ci], color=color, alpha=0.15, lw=0)
        ax.set_title(f"Held-out {label} by {axis.rsplit('.', 1)[-1]}")
        ax.set_xlabel(axis)
        seeds = groups[0].get("num_seeds", 1)
        _style_y(ax, Metric(key, "", label + ("\n(mean over seeds, 95 % CI)" if seeds > 1 else ""), percent=percent))
        if percent:
            ax.set_ylim(0.0, 1.05)
        _legend(ax)
    seeds = groups[0].get("num_seeds", 1)
    fig.suptitle(f"Sweep: every member on the same held-out panel\n{seeds} seed{'s' if seeds > 1 else ''} per point")
    return fig


SUITE_AGENTS = {**AGENTS, "baseline": ("deployable-only baseline", "tab:gray")}


def suite_figure(evaluation: dict[str, Any]):
    """``suite``: for each perturbation condition with several strengths, the held-out return (top
    row) and fall rate (bottom row) against strength, teacher, student and baseline as lines with
    the fall rate's 95 % interval; strengths outside the training distribution on a grey band.
    ``None`` without a suite."""
    entries = [e for e in evaluation.get("suite", []) if isinstance(e, dict) and "condition" in e]
    by_condition: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_condition.setdefault(e["condition"], []).append(e)
    conditions = {name: sorted(es, key=lambda e: e["strength"]) for name, es in by_condition.items() if len(es) > 1}
    if not conditions:
        return None
    from matplotlib.ticker import PercentFormatter

    cols = len(conditions)
    fig = _new_figure(3.3 * cols + 1.2, 6.6)
    grid = fig.add_gridspec(2, cols, left=0.9 / (3.3 * cols + 1.2), right=0.98, bottom=0.1, top=0.84,
                            wspace=0.35, hspace=0.45)
    for col, (name, es) in enumerate(conditions.items()):
        x = np.array([e["strength"] for e in es], float)
        for row, (key, label) in enumerate((("return_mean", "return per episode"), ("fall_rate", "episodes that fell"))):
            ax = fig.add_subplot(grid[row, col])
            for agent, (agent_name, color) in SUITE_AGENTS.items():
                if not all(isinstance(e.get(agent), dict) for e in es):
                    continue
                y = np.array([_number(e[agent], key) for e in es])
                ax.plot(x, y, color=color, marker="o", ms=4, label=agent_name, gid=f"suite/{name}/{agent}/{key}")
                if key == "fall_rate":
                    intervals = [_interval(e[agent], "fall_rate_ci95") for e in es]
                    if all(intervals):
                        ax.fill_between(x, [i[0] for i in intervals], [i[1] for i in intervals], color=color,
                                        alpha=0.12, lw=0)
            for e in es:
                if not e.get("in_training", True):
                    ax.axvspan(e["strength"] - 0.02 * np.ptp(x), e["strength"] + 0.02 * np.ptp(x),
                               color="0.85", lw=0, zorder=0)
            units = [e.get("unit", "") for e in es]
            if len(set(units)) > 1:  # a categorical condition (a tile type per point): each tick named
                ax.set_xticks(x, [u.strip("()") for u in units], rotation=30, fontsize=7)
                ax.set_xlabel(name.replace("_", " "), fontsize=8)
            else:
                ax.set_xlabel(f"{name.replace('_', ' ')} ({units[0]})", fontsize=8)
            if row == 0:
                ax.set_title(name.replace("_", " ").capitalize())
            if col == 0:
                _style_y(ax, Metric(key, "", label, percent=key == "fall_rate"))
            elif key == "fall_rate":
                ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            if key == "fall_rate":
                ax.set_ylim(0.0, 1.05)
            if row == 0 and col == 0:
                ax.legend(loc="best", fontsize=7)
    fig.suptitle("Perturbation suite: every policy on the same held-out seeds, noise and kicks\n"
                 "grey bands: strengths outside the training distribution")
    return fig


def masks_figure(rows: list[dict[str, Any]]):
    """``masks``: share of distillation samples masked by each ``masked/*`` rule (``any`` in black)."""
    keys = sorted({k for row in rows for k in row if k.startswith("masked/")}, key=lambda k: (k != "masked/any", k))
    found = [(k, s) for k in keys if (s := series(rows, k)) is not None]
    if not found:
        return None
    fig, (ax,) = _figure(1, panel_size=(7.5, 4.4), top=0.5)  # one panel: its title is enough
    for (key, s), color in zip(found, MASK_COLORS * len(found)):
        rule = key.removeprefix("masked/").replace("_", " ")
        for k in range(s.num_seeds if s.num_seeds > 1 else 0):
            ax.plot(s.env_steps, s.per_seed[:, k], color=color, lw=0.7, alpha=0.3, gid=f"{key}/seed{k}")
        union = rule == "any"  # on top, dashed: the other rules' lines run along it where one rule dominates
        ax.plot(s.env_steps, s.mean, color=color, lw=2.0 if union else 1.5, ls="--" if union else "-",
                zorder=3 if union else 2, label=rule, gid=f"{key}/mean")
    _style_y(ax, Metric("masked", "", "samples masked from the loss", percent=True))
    _style_x_steps(ax, STUDENT_STEPS)
    ax.set_title("Distillation: samples masked from the loss, by rule")
    k = max(s.num_seeds for _, s in found)
    ax.legend(title="rule" + (f" (mean of {k} seeds)" if k > 1 else ""), loc="best", alignment="left")
    return fig


def _imitation_summary(ax, rows: list[dict[str, Any]], evaluation: dict[str, Any]) -> None:
    """The KL curve, with the held-out panel's KL at the end and its masked share and action error in the legend."""
    curves = _imitation_curves(rows)[:1]  # the KL (or the loss when no KL is logged)
    _draw_imitation(ax, curves)
    if curves[0][0].key == KL.key:
        ax.set_title("Student: KL to the teacher")  # the summary has no room for "(= the loss)"
    imitation = _section(evaluation, "imitation")
    kl, mse, masked = (_number(imitation, k) for k in ("kl", "action_mse", "masked/any"))
    if not math.isnan(kl) and curves[0][0].key == KL.key:
        ax.plot([curves[0][1].env_steps[-1]], [kl], "D", ms=7, color=STUDENT_COLOR, mec="black", zorder=5,
                label=f"held-out panel: {kl:.3g} nats", gid="student_panel_kl")
    numbers = {f"action MSE on the panel: {mse:.3g}": mse, f"masked on the panel: {masked:.1%} of steps": masked}
    for label in (label for label, value in numbers.items() if not math.isnan(value)):
        ax.plot([], [], " ", label=label)  # a number in the legend, no line
    _legend(ax)


def _story(evaluation: dict[str, Any]) -> str:
    """The summary's headline: the env and the student's share of the teacher's held-out return."""
    env = _section(evaluation, "config").get("env")
    env = env if isinstance(env, str) else "run"
    teacher = _number(_section(evaluation, "teacher"), "return_mean")
    student = _number(_section(evaluation, "student"), "return_mean")
    if not math.isnan(teacher) and not math.isnan(student) and teacher > 0:
        return (f"{env}: the deployable student reaches {student / teacher:.0%} of the privileged teacher's "
                "held-out return")
    return f"{env}: privileged teacher → deployable student"


def summary_figure(phases: dict[str, list[dict[str, Any]]], evaluation: dict[str, Any]):
    """``summary``: both learning curves on top, held-out return and fall-rate bars and the KL below."""
    teacher_rows, distill_rows = phases.get("teacher", []), phases.get("distill", [])
    teacher_ret, student_ret = series(teacher_rows, RETURN.key), series(distill_rows, RETURN.key)
    agents = _panel_agents(evaluation)
    bars = [(k, t) for k, t in PANEL_BARS if k != "success_rate"
            and agents and any(not math.isnan(_number(_section(evaluation, a), k)) for a in agents)]
    has_imitation = bool(_imitation_curves(distill_rows))
    top = [s for s in (teacher_ret, student_ret) if s is not None]
    bottom = len(bars) + int(has_imitation)
    if not top and not bottom:
        return None
    fig = _new_figure(12.0, 8.6 if top and bottom else 4.8)
    margins = {**MARGIN_IN, "left": 0.95, "top": 0.95, "between_x": 1.05, "between_y": 1.25, "bottom": 1.15}
    grid = _grid(fig, int(bool(top)) + int(bool(bottom)), 6, margins)
    row = 0
    if top:
        width = 6 // len(top)
        axes = [fig.add_subplot(grid[0, i * width:(i + 1) * width]) for i in range(len(top))]
        if teacher_ret is not None:
            ax = axes.pop(0)
            _curve(ax, teacher_ret, RETURN, "teacher", TEACHER_STEPS)
            _panel_result(ax, evaluation, "teacher", float(teacher_ret.env_steps[-1]))
            _legend(ax)
        if student_ret is not None:
            ax = axes.pop(0)
            _teacher_reference(ax, evaluation)
            _curve(ax, student_ret, STUDENT_RETURN, "student", STUDENT_STEPS)
            _panel_result(ax, evaluation, "student", float(student_ret.env_steps[-1]))
            _legend(ax)
        if len(fig.axes) == 2:  # one return scale: the two curves compare by eye
            low, high = zip(*(ax.get_ylim() for ax in fig.axes))
            for ax in fig.axes:
                ax.set_ylim(min(low), max(high))
        row = 1
    if bottom:
        width = 6 // bottom
        axes = [fig.add_subplot(grid[row, i * width:(i + 1) * width]) for i in range(bottom)]
        for ax, (key, title) in zip(axes, bars):
            _bars(ax, evaluation, key, agents)
            ax.set_title(title)
        if has_imitation:
            _imitation_summary(axes[-1], distill_rows, evaluation)
    fig.suptitle(_story(evaluation))
    return fig


def _with_style(style: dict[str, Any], build, *args):
    import matplotlib

    with matplotlib.rc_context(style):
        return build(*args)


def build_figures(run_dir: pathlib.Path | str) -> dict[str, Any]:
    """The figures of a run, built but not saved.

    Args:
      run_dir: directory holding ``metrics.jsonl`` and optionally ``eval.json``.

    Returns:
      ``{name: matplotlib.figure.Figure}`` in the order teacher, student, panel,
      masks, summary, sweep, suite; figures without data are left out (a teacher-only run gives
      ``teacher`` and ``summary``).

    Raises:
      FileNotFoundError: ``run_dir`` does not exist.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    phases = load_metrics(run_dir / "metrics.jsonl")
    evaluation = load_eval(run_dir / "eval.json")
    teacher, distill = phases.get("teacher", []), phases.get("distill", [])
    figures = {
        "teacher": _with_style(STYLE, teacher_figure, teacher, evaluation),
        "student": _with_style(STYLE, student_figure, distill, evaluation),
        "panel": _with_style(STYLE, panel_figure, evaluation),
        "masks": _with_style(STYLE, masks_figure, distill),
        "summary": _with_style(SUMMARY_STYLE, summary_figure, phases, evaluation),
        "sweep": _with_style(STYLE, sweep_figure, evaluation),
        "suite": _with_style(STYLE, suite_figure, evaluation),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}


def plot_run(run_dir: pathlib.Path | str) -> list[pathlib.Path]:
    """Writes the figures of :func:`build_figures` as ``run_dir/plots/<name>.png``.

    Returns:
      Paths of the PNGs written, in the order of :func:`build_figures`; ``[]``
      (with a warning) when matplotlib is not installed.

    Raises:
      FileNotFoundError: ``run_dir`` does not exist.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    try:
        import matplotlib  # noqa: F401  (only to know whether plots can be drawn)
    except ImportError:
        warnings.warn("matplotlib is not installed: no plots written", stacklevel=2)
        return []
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for name, fig in build_figures(run_dir).items():
        fig.savefig(out / f"{name}.png", dpi=DPI)
        written.append(out / f"{name}.png")
    return written


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["."]:
        for p in plot_run(arg):
            print(p)

"""PNG plots of a run directory: teacher curves, student curves, eval panel, mask fractions.

Reads ``run_dir/metrics.jsonl`` (one row per update, every metric a list over
seeds ``[K]``) and, when present, ``run_dir/eval.json``; writes PNGs into
``run_dir/plots/``. A plot whose data are absent (e.g. a teacher-only run has
no distill rows and no ``eval.json``) is skipped, not drawn empty.

matplotlib is imported inside the functions, through ``matplotlib.figure.Figure``
(Agg canvas, no pyplot global state), so ``import distill_jax`` stays fast and
plotting works on a headless machine.

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

TEACHER_KEYS = ("episode_return", "loss", "policy_loss", "value_loss", "entropy", "approx_kl")
IMITATION_KEYS = ("loss", "kl", "mse")
EVAL_AGENTS = ("teacher", "student")
DPI = 100
# Figure margins and gaps between panels, inches: room for tick labels, titles, suptitle.
MARGIN_IN = {"left": 0.75, "right": 0.2, "bottom": 0.55, "top": 0.65, "between_x": 0.75, "between_y": 0.85}


class Series(NamedTuple):
    """One metric of one phase, summarised over seeds.

    Fields (all ``[N]`` over logged updates, sorted by env steps):
      env_steps: env steps per seed at each update.
      mean: mean over seeds (NaN where every seed is NaN).
      lo: min over seeds.
      hi: max over seeds.
      num_seeds: K, the number of seeds (the widest row).
    """

    env_steps: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    num_seeds: int


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


def _as_float(x: Any) -> float:
    """A JSON number (or None / junk) as a float; anything unusable becomes NaN."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def series(rows: list[dict[str, Any]], key: str) -> Series | None:
    """Mean and min-max band over seeds of ``key`` against ``env_steps``.

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
    if not by_step:
        return None
    steps = np.array(sorted(s for s in by_step if not math.isnan(s)), dtype=np.float64)
    if steps.size == 0:
        return None
    width = max(len(by_step[s]) for s in steps)
    values = np.full((steps.size, max(width, 1)), np.nan)  # ragged rows are padded with NaN
    for i, s in enumerate(steps):
        values[i, : len(by_step[s])] = by_step[s]
    values[~np.isfinite(values)] = np.nan  # +-inf would blow up the axis limits
    with warnings.catch_warnings():
        # All-NaN rows are expected (e.g. no episode finished yet); they stay NaN gaps.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, lo, hi = np.nanmean(values, 1), np.nanmin(values, 1), np.nanmax(values, 1)
    return Series(steps, mean, lo, hi, width)


def _figure(num_panels: int, *, max_cols: int = 3, panel_size: tuple[float, float] = (4.5, 3.2)):
    """A ``Figure`` with a grid of ``num_panels`` axes (spare grid cells hidden)."""
    from matplotlib.figure import Figure  # lazy: keeps `import distill_jax` free of matplotlib

    cols = min(num_panels, max_cols)
    rows = math.ceil(num_panels / cols)
    width, height = panel_size[0] * cols, panel_size[1] * rows
    fig = Figure(figsize=(width, height), dpi=DPI)
    # Fixed margins in inches instead of a layout engine: constrained/tight layout
    # re-draws the figure several times and made plotting ~3x slower.
    axes_w = (width - MARGIN_IN["left"] - MARGIN_IN["right"]) / cols
    axes_h = (height - MARGIN_IN["bottom"] - MARGIN_IN["top"]) / rows
    fig.subplots_adjust(
        left=MARGIN_IN["left"] / width, right=1 - MARGIN_IN["right"] / width,
        bottom=MARGIN_IN["bottom"] / height, top=1 - MARGIN_IN["top"] / height,
        wspace=MARGIN_IN["between_x"] / (axes_w - MARGIN_IN["between_x"]),
        hspace=MARGIN_IN["between_y"] / (axes_h - MARGIN_IN["between_y"]),
    )
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[num_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:num_panels])


def _draw(ax, s: Series, label: str | None = None, ls: str = "-") -> None:
    """Mean line, plus the min-max band over seeds when there are several."""
    (line,) = ax.plot(s.env_steps, s.mean, label=label, ls=ls, lw=1.5)
    if s.num_seeds > 1:
        ax.fill_between(s.env_steps, s.lo, s.hi, color=line.get_color(), alpha=0.2, lw=0)


def _finish(fig, path: pathlib.Path, title: str) -> pathlib.Path:
    fig.suptitle(title)
    fig.savefig(path, dpi=DPI)
    return path


def plot_teacher(rows: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path | None:
    """``teacher.png``: return and PPO losses vs env steps, one panel per metric."""
    found = [(k, s) for k in TEACHER_KEYS if (s := series(rows, k)) is not None]
    if not found:
        return None
    fig, axes = _figure(len(found))
    for ax, (key, s) in zip(axes, found):
        _draw(ax, s)
        ax.set_title(key)
        ax.set_xlabel("env steps (per seed)")
        ax.grid(alpha=0.3)
    return _finish(fig, path, f"teacher (PPO), {max(s.num_seeds for _, s in found)} seed(s)")


def plot_student(rows: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path | None:
    """``student.png``: imitation loss (and kl/mse) and closed-loop return vs env steps."""
    losses = [(k, s) for k in IMITATION_KEYS if (s := series(rows, k)) is not None]
    ret = series(rows, "episode_return")
    panels = int(bool(losses)) + int(ret is not None)
    if panels == 0:
        return None
    fig, axes = _figure(panels)
    if losses:
        ax = axes.pop(0)
        for (key, s), ls in zip(losses, ("-", "--", ":")):
            _draw(ax, s, label=key, ls=ls)  # loss often equals kl: dashes keep both visible
        ax.set_title("imitation loss")
        ax.legend()
    if ret is not None:
        ax = axes.pop(0)
        _draw(ax, ret)
        ax.set_title("student episode_return (closed loop)")
    for ax in fig.axes:
        ax.set_xlabel("env steps (per seed)")
        ax.grid(alpha=0.3)
    k = max(s.num_seeds for s in [ret, *(s for _, s in losses)] if s is not None)
    return _finish(fig, path, f"student (distillation), {k} seed(s)")


def plot_masks(rows: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path | None:
    """``masks.png``: fraction of distill samples masked by each ``masked/*`` rule."""
    keys = sorted({k for row in rows for k in row if k.startswith("masked/")})
    found = [(k, s) for k in keys if (s := series(rows, k)) is not None]
    if not found:
        return None
    fig, (ax,) = _figure(1, panel_size=(7.0, 4.0))
    for key, s in found:
        _draw(ax, s, label=key.removeprefix("masked/"))
    ax.set_xlabel("env steps (per seed)")
    ax.set_ylabel("masked fraction of samples")
    ax.grid(alpha=0.3)
    ax.legend(title="rule")
    return _finish(fig, path, "distillation masks")


def plot_panel(evaluation: dict[str, Any], path: pathlib.Path) -> pathlib.Path | None:
    """``panel.png``: teacher vs student on the held-out panel (return +- std, success, fall +- 95 % CI)."""
    agents = [a for a in EVAL_AGENTS if isinstance(evaluation.get(a), dict)]
    if not agents:
        return None
    fig, axes = _figure(3, panel_size=(3.6, 3.4))
    x = np.arange(len(agents))
    colors = ["tab:blue", "tab:orange"][: len(agents)]

    def get(agent: str, key: str) -> float:
        return _as_float(evaluation[agent].get(key))

    means = [get(a, "return_mean") for a in agents]
    stds = [0.0 if math.isnan(v := get(a, "return_std")) else v for a in agents]
    axes[0].bar(x, np.nan_to_num(means), yerr=stds, capsize=6, color=colors)
    axes[0].set_title("return (mean ± std)")
    for ax, key in zip(axes[1:], ("success_rate", "fall_rate")):
        rates = np.nan_to_num([get(a, key) for a in agents])
        intervals = [evaluation[a].get(f"{key}_ci95") for a in agents]
        # Error bars from the 95 % Wilson interval (asymmetric), where the evaluation recorded it.
        yerr = (np.array([[r - lo, hi - r] for r, (lo, hi) in zip(rates, intervals)]).T
                if all(intervals) else None)
        ax.bar(x, rates, yerr=yerr, capsize=6, color=colors)
        ax.set_ylim(0.0, 1.05)  # rates: a fixed scale makes 0.0 vs 1.0 readable at a glance
        ax.set_title(f"{key} (95 % CI)" if yerr is not None else key)
    for ax in axes:
        ax.set_xticks(x, agents)
        ax.grid(axis="y", alpha=0.3)
    n = evaluation[agents[0]].get("episodes")
    return _finish(fig, path, "held-out panel" + (f" ({n} episodes)" if n is not None else ""))


def plot_run(run_dir: pathlib.Path | str) -> list[pathlib.Path]:
    """Writes the PNGs of a run into ``run_dir/plots/`` and returns their paths.

    Args:
      run_dir: directory holding ``metrics.jsonl`` and optionally ``eval.json``.

    Returns:
      Paths of the PNGs written, in the order teacher, student, panel, masks;
      plots without data are skipped (a teacher-only run gives ``[teacher.png]``).

    Raises:
      FileNotFoundError: ``run_dir`` does not exist.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    phases = load_metrics(run_dir / "metrics.jsonl")
    eval_path = run_dir / "eval.json"
    evaluation = json.loads(eval_path.read_text()) if eval_path.exists() else {}
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    teacher, distill = phases.get("teacher", []), phases.get("distill", [])
    written = [
        plot_teacher(teacher, out / "teacher.png"),
        plot_student(distill, out / "student.png"),
        plot_panel(evaluation, out / "panel.png"),
        plot_masks(distill, out / "masks.png"),
    ]
    return [p for p in written if p is not None]


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["."]:
        for p in plot_run(arg):
            print(p)

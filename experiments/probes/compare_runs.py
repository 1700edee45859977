"""How far apart two run directories of the same config are: parameters and ``eval.json`` figures.

    python experiments/probes/compare_runs.py RUN_A RUN_B

Prints the largest absolute difference over every leaf of the finished teacher's and student's
parameters and observation statistics, and the numbers of ``eval.json`` (its ``provenance``,
which records the processes, times and memory, left out) that differ, with the largest
difference. Used for the multi-process equality (2 processes x 2 CPU devices against 1 process x
4; experiments/results/multiprocess_cpu.md and tests/test_distributed.py).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
from typing import Any, Iterator

import numpy as np

SKIPPED = ("provenance",)  # how and where the figures were produced, not the figures


def _leaves(tree: Any) -> dict[str, np.ndarray]:
    import jax

    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def param_differences(a: pathlib.Path, b: pathlib.Path) -> dict[str, float]:
    """``{"teacher": max |a - b|, "student": ...}`` over the params and obs statistics of each
    finished policy (restored in this process, whatever layout trained them)."""
    from distill_jax.run import pipeline

    runs = [pipeline.open_run(pathlib.Path(path)) for path in (a, b)]
    out: dict[str, float] = {}
    for name, restore in (("teacher", pipeline.restore_teacher), ("student", pipeline.restore_student)):
        states = [restore(run).state for run in runs]
        left, right = (_leaves({"params": s.params, "obs_stats": s.obs_stats}) for s in states)
        assert left.keys() == right.keys(), f"{name}: the two runs' parameter trees differ"
        out[name] = max(float(np.max(np.abs(left[k].astype(np.float64) - right[k]))) if left[k].size else 0.0
                        for k in left)
    return out


def _numbers(tree: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not path and key in SKIPPED:
                continue
            yield from _numbers(value, f"{path}.{key}" if path else key)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _numbers(value, f"{path}[{i}]")
    elif isinstance(tree, (bool, int, float)) and tree is not None:
        yield path, float(tree)


def eval_differences(a: pathlib.Path, b: pathlib.Path, tol: float = 0.0) -> dict[str, Any]:
    """The numbers of the two ``eval.json`` that differ by more than ``tol`` (NaN equals NaN):
    ``{"compared", "differing": [(path, a, b)], "max_abs_difference", "missing": [path]}``."""
    left, right = (dict(_numbers(json.loads((pathlib.Path(p) / "eval.json").read_text()))) for p in (a, b))
    differing, largest = [], 0.0
    for key in left.keys() & right.keys():
        x, y = left[key], right[key]
        if (math.isnan(x) and math.isnan(y)) or x == y:
            continue
        gap = abs(x - y)
        largest = max(largest, gap)
        if not gap <= tol:
            differing.append((key, x, y))
    return {"compared": len(left.keys() & right.keys()), "differing": sorted(differing),
            "max_abs_difference": largest, "missing": sorted(left.keys() ^ right.keys())}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    a, b = map(pathlib.Path, argv)
    for name, gap in param_differences(a, b).items():
        print(f"{name}: max |difference| over params and obs statistics {gap:.3g}")
    figures = eval_differences(a, b)
    print(f"eval.json: {figures['compared']} numbers compared, {len(figures['differing'])} differ, largest "
          f"|difference| {figures['max_abs_difference']:.3g}; only in one: {figures['missing'][:5]}")
    for key, x, y in figures["differing"][:20]:
        print(f"  {key}: {x!r} vs {y!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Re-run the notebooks top to bottom and commit them with their outputs.

    python notebooks/refresh.py                      # both notebooks, their default budgets, in place
    python notebooks/refresh.py --only quickstart    # one of them
    python notebooks/refresh.py --budget tiny --out /tmp/nb   # every cell, nothing learned (tests)

A reader opening a notebook on GitHub should see the tables, plots and video a real run produces,
so the committed notebooks carry the outputs of their ``default`` budget (the quickstart: the CLI's
default preset with ``--video``; custom_env: 40 iterations of 128 environments per phase), executed
by this script in a fresh kernel of this interpreter. Each notebook records how it was refreshed
in its metadata (``distill_jax_refresh``: command, budget, date, commit, seconds, versions), which
``tests/test_notebooks.py`` reads.

The kernel runs in a fresh temporary directory, so the quickstart's run directory appears as the
relative ``runs/quickstart-...`` a user would see, and the repository is left untouched except for
the notebooks written. The kernel shares the persistent XLA cache given by
``JAX_COMPILATION_CACHE_DIR`` when it is set.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Mapping

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent
REPO = NOTEBOOKS.parent
NAMES = ("quickstart", "custom_env")
CELL_TIMEOUT_S = 900  # one cell compiles and runs a whole pipeline on a loaded 2-core machine

# The environment variables each notebook reads for its budget. "default" sets none (the notebook's
# own defaults, what a reader runs); "tiny" runs every cell and learns nothing.
BUDGETS: dict[str, dict[str, dict[str, str]]] = {
    "default": {"quickstart": {}, "custom_env": {}},
    "tiny": {
        "quickstart": {"DISTILL_JAX_NB_PRESET": "smoke"},
        "custom_env": {"DISTILL_JAX_NB_ITERS": "2", "DISTILL_JAX_NB_NUM_ENVS": "16"},
    },
}


def execute(path: pathlib.Path, env: Mapping[str, str], cwd: pathlib.Path) -> nbformat.NotebookNode:
    """Runs the notebook at ``path`` top to bottom in a fresh kernel of this interpreter, with
    working directory ``cwd`` and environment ``env``; returns it with its outputs.

    Raises:
      nbclient.exceptions.CellExecutionError: a cell raised (the error names the cell).
    """
    nb = nbformat.read(path, as_version=4)
    # With no kernel directories, "python3" resolves to ipykernel's built-in spec, which launches
    # sys.executable -- not whichever "python3" kernel a user or system directory registers.
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=dict(env))
    return nb


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for package in ("distill_jax", "jax", "mujoco", "mujoco-mjx", "brax"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return versions


def refresh(name: str, budget: str, out_dir: pathlib.Path, base_env: Mapping[str, str] | None = None) -> pathlib.Path:
    """Executes ``notebooks/<name>.ipynb`` at ``budget`` and writes it, outputs included, to
    ``out_dir/<name>.ipynb``; returns that path. The notebook's metadata gains ``distill_jax_refresh``."""
    env = {**(base_env if base_env is not None else os.environ), **BUDGETS[budget][name]}
    env.setdefault("MPLBACKEND", "Agg")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"nb-{name}-") as workdir:
        nb = execute(NOTEBOOKS / f"{name}.ipynb", env, pathlib.Path(workdir))
    seconds = time.perf_counter() - start
    command = "python notebooks/refresh.py --only " + name + ("" if budget == "default" else f" --budget {budget}")
    nb.metadata["distill_jax_refresh"] = {
        "command": command,
        "budget": budget,
        "budget_env": BUDGETS[budget][name],
        "date": datetime.date.today().isoformat(),
        "commit": _git_commit(),
        "seconds": round(seconds, 1),
        "python": sys.version.split()[0],
        "versions": _versions(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    nbformat.write(nb, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=NAMES, action="append", help="refresh only this notebook (repeatable)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default",
                        help="'default': what a reader runs (committed); 'tiny': every cell, nothing learned")
    parser.add_argument("--out", type=pathlib.Path, default=NOTEBOOKS,
                        help="where to write the executed notebooks (default: in place)")
    args = parser.parse_args(argv)
    for name in args.only or NAMES:
        print(f"{name}: running at the {args.budget!r} budget ...", flush=True)
        start = time.perf_counter()
        target = refresh(name, args.budget, args.out)
        print(f"{name}: wrote {target} ({time.perf_counter() - start:.0f} s)", flush=True)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The notebooks run top to bottom, on a tiny budget, in a fresh kernel of this interpreter.

Each notebook is executed with nbclient from the repository root; a cell that raises fails the test.
The budgets come from environment variables the notebooks read (``DISTILL_JAX_NB_*``), and the
kernel shares the session's persistent XLA compilation cache (see ``conftest.py``).
"""

import json
import math
import os
import pathlib
import re
import sys

import jax
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 900  # a cell that compiles several XLA programs on a loaded 2-core machine


def kernel_env(**budget: str) -> dict[str, str]:
    """This process's environment plus the notebook budget and the session's XLA cache settings."""
    env = {**os.environ, **budget}
    cache_dir = jax.config.jax_compilation_cache_dir
    if cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(jax.config.jax_persistent_cache_min_compile_time_secs)
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = str(jax.config.jax_persistent_cache_min_entry_size_bytes)
    return env


def execute(name: str, env: dict[str, str]) -> nbformat.NotebookNode:
    """Runs ``notebooks/<name>`` top to bottom with the repository root as working directory."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # With no kernel directories, "python3" resolves to ipykernel's built-in spec, which launches
    # sys.executable -- not whichever "python3" kernel a user or system directory registers.
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute(env=env)  # raises CellExecutionError, naming the cell, if any cell fails
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    return nb


def stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "stream" and o.get("name") == "stdout"
    )


def rich_outputs(nb: nbformat.NotebookNode, mime: str) -> list:
    return [
        o["data"][mime]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type in ("display_data", "execute_result") and mime in o.get("data", {})
    ]


def test_notebooks_start_with_a_colab_only_install_cell():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert 'if "google.colab" in sys.modules:' in first_code.source, path.name
        assert "%pip install" in first_code.source, path.name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: strip outputs"


# Slow: ~55 s on 2 cores, and the same smoke pipeline runs in the default suite through the CLI
# (tests/test_train_cli.py); this checks what the notebook shows. CI runs it with the slow tests.
@pytest.mark.slow
def test_quickstart_runs_the_cli_pipeline_and_shows_its_artifacts(tmp_path):
    run_dir = tmp_path / "quickstart"
    nb = execute("quickstart.ipynb", kernel_env(DISTILL_JAX_NB_PRESET="smoke", DISTILL_JAX_NB_RUN_DIR=str(run_dir)))

    report = json.loads((run_dir / "eval.json").read_text())
    assert {"teacher", "student", "leak_checks", "schema_diff"} <= set(report)
    for role in ("teacher", "student"):
        assert math.isfinite(report[role]["return_mean"]), role
    assert report["leak_checks"] and all(c["passed"] for c in report["leak_checks"].values())

    # The evaluation table is displayed as written, every PNG of the run is shown, and the
    # leak verdicts and the artifact list are printed.
    assert (run_dir / "eval.md").read_text() in rich_outputs(nb, "text/markdown")
    assert len(rich_outputs(nb, "image/png")) == len(list(run_dir.glob("**/*.png")))
    printed = stdout(nb)
    for name in report["leak_checks"]:
        assert re.search(rf"leak check {name}\s+PASSED", printed), name
    assert "FAILED" not in printed
    assert "eval.json" in printed and "metrics.jsonl" in printed


@pytest.mark.slow  # compiles a Brax task's teacher, student and audit (~100 s on 2 cores)
def test_custom_env_trains_distils_and_audits_a_brax_task():
    iters = 2
    nb = execute("custom_env.ipynb", kernel_env(DISTILL_JAX_NB_ITERS=str(iters), DISTILL_JAX_NB_NUM_ENVS="16"))
    printed = stdout(nb)

    # The budget was honoured: exactly `iters` iterations of each phase.
    assert len(re.findall(r"^teacher iter ", printed, re.MULTILINE)) == iters
    assert len(re.findall(r"^student iter ", printed, re.MULTILINE)) == iters
    assert re.search(rf"^teacher iter\s+{iters}/{iters}\s+return\s+\S+", printed, re.MULTILINE)
    teacher_return = re.search(r"^teacher return \(last iteration with completed episodes\): (\S+)$", printed, re.MULTILINE)
    assert teacher_return and math.isfinite(float(teacher_return.group(1))), printed
    kls = [float(x) for x in re.findall(r"^student iter .*?KL (\S+)", printed, re.MULTILINE)]
    assert len(kls) == iters and all(math.isfinite(x) for x in kls)

    # The trained student passes all three leak checks; the peeking actor fails all three.
    for check in ("structural", "dependency", "perturbation"):
        assert re.search(rf"^student leak check {check}\s+PASSED", printed, re.MULTILINE), check
        assert re.search(rf"^peeking actor check {check}\s+FAILED", printed, re.MULTILINE), check
    assert not re.search(r"^student leak check .*FAILED", printed, re.MULTILINE)
    # The schema diffs: the wrappers' additions and the one-line leak the diff exposes.
    assert "+ dyn_params: added to teacher_only" in printed and "+ history: added to student_obs" in printed
    assert "~ velocities: moved from teacher_only to student_obs" in printed


def test_the_kernel_the_tests_start_is_this_interpreter():
    assert KernelSpecManager(kernel_dirs=[]).get_kernel_spec("python3").argv[0] == sys.executable
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "python3", path.name

"""The notebooks run top to bottom, on a tiny budget, in a fresh kernel of this interpreter.

Each notebook is executed by ``notebooks/refresh.py`` (nbclient, a fresh kernel, a temporary working
directory) at its tiny budget; a cell that raises fails the test. The committed notebooks carry the
outputs of the same script at their default budget.
The budgets come from environment variables the notebooks read (``DISTILL_JAX_NB_*``), and the
kernel shares the session's persistent XLA compilation cache (see ``conftest.py``).
"""

import json
import importlib.util
import math
import os
import pathlib
import re
import sys

import jax
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
_spec = importlib.util.spec_from_file_location("notebook_refresh", NOTEBOOKS / "refresh.py")
refresh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refresh)
# What a newcomer would read as an error: third-party warnings and tracebacks in committed outputs.
NOISE = re.compile(r"WARNING:absl|Warning:|Traceback|Failed to import warp|Exception ignored")


def kernel_env(**budget: str) -> dict[str, str]:
    """This process's environment plus the notebook budget and the session's XLA cache settings."""
    env = {**os.environ, **budget}
    cache_dir = jax.config.jax_compilation_cache_dir
    if cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(jax.config.jax_persistent_cache_min_compile_time_secs)
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = str(jax.config.jax_persistent_cache_min_entry_size_bytes)
    return env


def refresh_tiny(name: str, out_dir: pathlib.Path, **env: str) -> nbformat.NotebookNode:
    """The refresh script's own run of ``name`` at its tiny budget; fails if a cell raises or shows an error."""
    path = refresh.refresh(name, "tiny", out_dir, base_env=kernel_env(**env))
    nb = nbformat.read(path, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert nb.metadata["distill_jax_refresh"]["budget"] == "tiny"
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


def test_install_cell_installs_from_a_source_tree_not_a_fixed_address():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert "pip" in first_code.source and 'SOURCE = ""' in first_code.source, path.name
        text = "".join(c.source for c in nb.cells)
        assert not re.search(r"https?://(github|colab)", text), f"{path.name}: a link to a repository that may not exist"


def test_committed_notebooks_carry_the_outputs_of_their_default_budget():
    # A reader on GitHub sees what the notebook does without running it: every code cell was run by
    # notebooks/refresh.py at the budget a reader gets, with no error and no third-party noise.
    for name in refresh.NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        meta = nb.metadata.get("distill_jax_refresh")
        assert meta and meta["budget"] == "default" and meta["budget_env"] == {}, f"{name}: run notebooks/refresh.py"
        assert meta["command"] == f"python notebooks/refresh.py --only {name}"
        code = [c for c in nb.cells if c.cell_type == "code"]
        counts = [c.get("execution_count") for c in code]
        assert counts == list(range(1, len(code) + 1)), f"{name}: not run top to bottom in one kernel: {counts}"
        outputs = [o for c in code for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"], name
        streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        assert not NOISE.search(streams), f"{name}: {NOISE.search(streams).group(0)!r} in the committed outputs"
    quickstart = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    assert rich_outputs(quickstart, "image/png"), "quickstart: no plot in the committed outputs"
    assert rich_outputs(quickstart, "image/gif"), "quickstart: no video in the committed outputs"
    tables = rich_outputs(quickstart, "text/markdown")
    assert any("leak check" in t and "teacher (privileged)" in t for t in tables), "quickstart: no evaluation table"


# Slow: ~55 s on 2 cores, and the same smoke pipeline runs in the default suite through the CLI
# (tests/test_train_cli.py); this checks what the notebook shows. CI runs it with the slow tests.
@pytest.mark.slow
def test_quickstart_runs_the_cli_pipeline_and_shows_its_artifacts(tmp_path):
    run_dir = tmp_path / "quickstart"
    nb = refresh_tiny("quickstart", tmp_path / "notebooks", DISTILL_JAX_NB_RUN_DIR=str(run_dir))

    report = json.loads((run_dir / "eval.json").read_text())
    assert {"teacher", "student", "leak_checks", "schema_diff"} <= set(report)
    for role in ("teacher", "student"):
        assert math.isfinite(report[role]["return_mean"]), role
    assert report["leak_checks"] and all(c["passed"] for c in report["leak_checks"].values())

    # The evaluation table is displayed as written, every PNG of the run is shown, and the
    # leak verdicts and the artifact list are printed.
    assert (run_dir / "eval.md").read_text() in rich_outputs(nb, "text/markdown")
    assert len(rich_outputs(nb, "image/png")) == len(list(run_dir.glob("**/*.png")))
    assert len(rich_outputs(nb, "image/gif")) == len(list(run_dir.glob("videos/*.gif"))) == 1  # the video, inline
    printed = stdout(nb)
    for name in report["leak_checks"]:
        assert re.search(rf"leak check {name}\s+PASSED", printed), name
    assert "FAILED" not in printed
    assert "eval.json" in printed and "metrics.jsonl" in printed


@pytest.mark.slow  # compiles a Brax task's teacher, student and audit (~100 s on 2 cores)
def test_custom_env_trains_distils_and_audits_a_brax_task(tmp_path):
    iters = 2
    assert refresh.BUDGETS["tiny"]["custom_env"]["DISTILL_JAX_NB_ITERS"] == str(iters)
    nb = refresh_tiny("custom_env", tmp_path)
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

"""The README's "## Python API" example runs as written and its results are finite."""

import math
import pathlib
import re

import jax
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_api_block(text: str) -> str:
    """The one ```python block of the README's "## Python API" section."""
    section = re.search(r"^## Python API[ \t]*\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## Python API' section"
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"the '## Python API' section should hold one python block, found {len(blocks)}"
    return blocks[0]


def float_leaves(value):
    """(path, array) for every floating-point array in ``value``, skipping simulator state."""
    flat = jax.tree_util.tree_flatten_with_path(value)[0]
    for path, leaf in flat:
        # Physics states may hold sentinel infinities (e.g. unused contact slots); they are not results.
        if ".physics" in jax.tree_util.keystr(path):
            continue
        if isinstance(leaf, (jax.Array, np.ndarray)) and np.issubdtype(leaf.dtype, np.floating):
            yield jax.tree_util.keystr(path), np.asarray(leaf)


def test_block_extraction_finds_only_that_section():
    text = "# t\n\n## Python API\n\nintro\n\n```python\nx = 1\n```\n\n## Next\n\n```python\ny = 2\n```\n"
    assert python_api_block(text) == "x = 1\n"


def test_python_api_example_runs_and_its_results_are_finite(capsys):
    code = python_api_block(README.read_text())
    namespace = {"__name__": "readme_python_api"}
    exec(compile(code, f"{README}:Python API", "exec"), namespace)  # noqa: S102 -- running the README is the test

    printed = capsys.readouterr().out
    assert printed.strip(), "the example should print its results"
    assert not re.search(r"\b(nan|inf)\b", printed, re.IGNORECASE), printed
    numbers = [float(x) for x in re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", printed)]
    assert numbers and all(math.isfinite(x) for x in numbers), printed

    checked = 0
    for name, value in namespace.items():
        if name.startswith("__"):
            continue
        for path, leaf in float_leaves(value):
            assert np.all(np.isfinite(leaf)), f"{name}{path} is not finite"
            checked += 1
    assert checked > 0, "the example defined no array results"

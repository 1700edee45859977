"""The package layout's rules: the pure core never imports the run shell."""

from __future__ import annotations

import ast
import pathlib

import distill_jax

PACKAGE = pathlib.Path(distill_jax.__file__).parent
SHELL = "distill_jax.run"
# Entry points that are part of the shell although they sit at the top (python -m distill_jax.train,
# python -m distill_jax.render; python -m distill_jax.sim2sim needs no shell but is an entry point too).
ENTRY_POINTS = {"train.py", "render.py", "sim2sim.py"}


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-local imports included), as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def core_modules() -> list[pathlib.Path]:
    shell_dir = PACKAGE / "run"
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if shell_dir not in p.parents and not (p.parent == PACKAGE and p.name in ENTRY_POINTS)]


def test_no_core_module_imports_the_run_shell():
    offenders = {str(p.relative_to(PACKAGE)): sorted(m for m in imported_modules(p) if m == SHELL or m.startswith(SHELL + "."))
                 for p in core_modules()}
    offenders = {name: mods for name, mods in offenders.items() if mods}
    assert not offenders, f"core modules import the run shell: {offenders}"


def test_the_rule_would_catch_a_function_local_import(tmp_path):
    module = tmp_path / "leaky.py"
    module.write_text("def f():\n    from distill_jax.run.report import build_eval\n    return build_eval\n")
    assert "distill_jax.run.report" in imported_modules(module)


def test_the_core_is_most_of_the_package_and_the_shell_is_its_own_folder():
    core = {str(p.relative_to(PACKAGE)) for p in core_modules()}
    assert {"rollout.py", "loop.py", "ppo/update.py", "distill/update.py", "envs/base.py"} <= core
    assert not any(name.startswith("run/") for name in core)
    assert (PACKAGE / "run" / "pipeline.py").is_file() and (PACKAGE / "run" / "checkpoint.py").is_file()


def test_config_names_exactly_the_mask_rules_that_exist():
    from distill_jax.config import MASK_RULES
    from distill_jax.distill.masks import RULES

    assert tuple(MASK_RULES) == tuple(RULES)

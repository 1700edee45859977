"""The command line shared by ``python -m distill_jax.sim2sim`` and ``python -m distill_jax.render``.

Imports only ``argparse``: the render command parses its arguments before MuJoCo is imported
(MuJoCo reads ``MUJOCO_GL`` at import; :func:`distill_jax.run.render.prepare_gl` sets it first).
"""

from __future__ import annotations

import argparse
import pathlib


def episodes_count(text: str) -> int:
    """``--episodes``: a positive integer (argparse type)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def run_dir_parser(command: str, description: str, run_dir_help: str, episodes: int | None,
                   episodes_help: str) -> argparse.ArgumentParser:
    """The shared command line of ``python -m distill_jax.<command> RUN_DIR [--episodes N]``."""
    parser = argparse.ArgumentParser(prog=f"python -m distill_jax.{command}", description=description)
    parser.add_argument("run_dir", type=pathlib.Path, help=run_dir_help)
    parser.add_argument("--episodes", type=episodes_count, default=episodes, help=episodes_help)
    return parser

"""``python -m distill_jax.sim2sim RUN_DIR``: the exported ONNX student in MuJoCo's C engine, next to the MJX panel.

Imports no JAX (only NumPy, MuJoCo and ONNX Runtime); the implementation is
:mod:`distill_jax.deploy.sim2sim`.
"""

from __future__ import annotations

import sys

from distill_jax.deploy.sim2sim import build_parser, main, sim2sim

__all__ = ["build_parser", "main", "sim2sim"]

if __name__ == "__main__":
    sys.exit(main())

"""``python -m distill_jax.train``: the command line of the pipeline.

The command itself lives in the run shell, :mod:`distill_jax.run.cli`; this module is the entry
point the README names, and re-exports what scripts and tests call.
"""

from __future__ import annotations

import sys

from distill_jax.run.cli import build_parser, main, resolve_config

__all__ = ["build_parser", "main", "resolve_config"]

if __name__ == "__main__":
    sys.exit(main())

"""XLA compiler options for the pipeline's compiled programs.

On the CPU, jaxlib 0.10's XLA hands many small fused reductions to YNNPACK
("``ynn_fusion``" thunks). MJX's constraint solver is full of them (``[B, nv, nc]``
reductions inside its line-search ``while`` loops), and each call costs far more
than the loop XLA would emit itself; with an extra leading axis (e.g. a ``vmap``
over seeds, even of size 1) they get about 3× slower again. Measured on 2 CPU
cores, ``brax`` ``inverted_pendulum`` at 1024 environments, 16-step rollouts
(``experiments/probes/update_parts.py``):

* raw ``mjx.step`` rollout: 26k env-steps/s with YNNPACK fusions, 56-65k without;
* one PPO teacher update, seed-vmapped as training runs it: 8.1k → 31.5k.

So the programs this package compiles for training and evaluation ask XLA
for no YNNPACK fusions on the CPU. Nothing changes on GPU/TPU, and nothing
changes where the user already chose the option in ``XLA_FLAGS`` or where the
installed jaxlib does not know it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
# An empty list of fusion types: XLA emits its own loops for every fusion.
CPU_OPTIONS: dict[str, str] = {YNN_FUSION_OPTION: ""}


@functools.cache
def _cpu_accepts(options: tuple[tuple[str, str], ...]) -> bool:
    """Whether this jaxlib's CPU compiler accepts ``options`` (probed once per process)."""
    try:
        cpu_zero = jax.device_put(jnp.zeros(()), jax.local_devices(backend="cpu")[0])  # jit follows its input
        jax.jit(lambda x: x + 1, compiler_options=dict(options))(cpu_zero)
    except Exception:  # an unknown option or value: a newer or older jaxlib
        return False
    return True


def compiler_options(devices: Sequence[Any] | None = None) -> dict[str, Any]:
    """Options for ``jax.jit(..., compiler_options=...)`` of a program on ``devices``.

    Args:
      devices: the devices the program runs on (default: ``jax.devices()``).

    Returns:
      :data:`CPU_OPTIONS` for CPU devices when jaxlib accepts them and
      ``XLA_FLAGS`` does not set the option itself; ``{}`` otherwise.
    """
    devices = list(devices) if devices else jax.devices()
    if devices[0].platform != "cpu" or YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}
    return dict(CPU_OPTIONS) if _cpu_accepts(tuple(CPU_OPTIONS.items())) else {}


__all__ = ["CPU_OPTIONS", "YNN_FUSION_OPTION", "compiler_options"]

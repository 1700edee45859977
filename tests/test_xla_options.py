"""The CPU compiler options: they turn off YNNPACK fusions in the programs the pipeline compiles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from distill_jax import loop, xla_options

YNN_FUSION = "__ynn_fusion"


def solver_like_reduction(j: jax.Array, w: jax.Array) -> jax.Array:
    """``[B, nv, nc] * [B, nv] -> [B, nc]``: the shape of reduction MJX's solver runs in its line search."""
    return jnp.sum(j * w[..., None], axis=-2)


def compiled_text(fn, *args, **jit_kwargs) -> str:
    return jax.jit(fn, **jit_kwargs).lower(*args).compile().as_text()


@pytest.fixture
def operands():
    key_j, key_w = jax.random.split(jax.random.PRNGKey(0))
    return jax.random.normal(key_j, (1024, 2, 3)), jax.random.normal(key_w, (1024, 2))


@pytest.fixture
def default_uses_ynn(operands):
    if YNN_FUSION not in compiled_text(solver_like_reduction, *operands):
        pytest.skip("this jaxlib emits no YNNPACK fusions on the CPU; the options have nothing to turn off")


def test_options_turn_off_ynnpack_fusions_and_keep_values(operands, default_uses_ynn, monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    options = xla_options.compiler_options()
    assert options == xla_options.CPU_OPTIONS
    assert YNN_FUSION not in compiled_text(solver_like_reduction, *operands, compiler_options=options)
    j, w = (np.asarray(x, np.float64) for x in operands)
    expected = np.einsum("bvc,bv->bc", j, w)  # computed independently, in NumPy
    got = jax.jit(solver_like_reduction, compiler_options=options)(*operands)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_a_choice_in_xla_flags_wins(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--{xla_options.YNN_FUSION_OPTION}=LIBRARY_FUSION_TYPE_REDUCE")
    assert xla_options.compiler_options() == {}


@struct.dataclass
class ToyState:
    env_state: jax.Array  # [K, B, nv, nc]
    weights: jax.Array  # [K, B, nv]
    update_step: jax.Array  # [K]


def test_the_training_loop_compiles_with_the_options(operands, default_uses_ynn, monkeypatch):
    """``run_phase``'s compiled call (``loop.chunk_program``) carries the options."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)

    def step(state, frozen):
        del frozen
        moved = state.env_state + solver_like_reduction(state.env_state, state.weights)[:, None, :]
        return state.replace(env_state=moved, update_step=state.update_step + 1), {"update": state.update_step}

    j, w = operands
    state = ToyState(env_state=j[None], weights=w[None], update_step=jnp.zeros((1,), jnp.int32))
    mesh = loop.make_mesh(None, num_envs=j.shape[0])

    def program_text() -> str:
        program = loop.chunk_program(step, loop.state_sharding(state, mesh), mesh, 2, vmap_frozen=False)
        return program.lower(state, None).compile().as_text()

    assert YNN_FUSION not in program_text()
    # The check can fail: once XLA_FLAGS names the option (XLA read the variable at start-up,
    # so this compile keeps XLA's defaults) the same program has YNNPACK fusions.
    monkeypatch.setenv("XLA_FLAGS", f"--{xla_options.YNN_FUSION_OPTION}=LIBRARY_FUSION_TYPE_REDUCE")
    assert YNN_FUSION in program_text()

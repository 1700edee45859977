"""Small pytree operations shared across the package (seed slices, per-row selects)."""

from __future__ import annotations

from typing import TypeVar

import jax
import jax.numpy as jnp

Tree = TypeVar("Tree")


def first_seed(tree: Tree) -> Tree:
    """Seed 0 of a multi-seed pytree: every leaf ``[K, ...]`` becomes ``[...]``."""
    return jax.tree.map(lambda x: x[0], tree)


def select_rows(mask: jax.Array, on_true: Tree, on_false: Tree) -> Tree:
    """Per leading-axis row, ``on_true`` where ``mask`` holds, else ``on_false``.

    ``mask`` is ``[B]`` (bool or 0/1); every leaf of both trees is ``[B, ...]``
    with the same structure. The mask is broadcast over each leaf's trailing
    axes, so one flag picks a whole row (an env's state, a step's action).
    """
    mask = jnp.asarray(mask).astype(bool)

    def pick(t: jax.Array, f: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (t.ndim - mask.ndim)), t, f)

    return jax.tree_util.tree_map(pick, on_true, on_false)

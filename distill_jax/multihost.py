"""Arrays between one process's memory and a mesh that spans several processes.

With ``jax.distributed`` initialised, ``jax.devices()`` lists every process's devices and a
compiled program over a mesh of them is one SPMD program that each process runs on its own
devices. Its inputs must then be *global* arrays: each process holds only the shards on its
devices. Everything before and after training is host-local (initial states computed alike in
every process from the same seeds; evaluation and export on one process), so a phase moves its
state onto the mesh with :func:`put` and back with :func:`gather`; a checkpoint is written from
global arrays (:func:`to_global`), each process writing the shards it holds.

With one process :func:`put` is ``jax.device_put`` and the others return their input, so
single-process runs are unchanged.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

GLOBAL_AXIS = "all_devices"
_barriers = itertools.count()  # every process passes the same barriers in the same order


def is_global(x: Any) -> bool:
    """Whether ``x`` is an array with shards on other processes' devices."""
    return isinstance(x, jax.Array) and not x.is_fully_addressable


@functools.lru_cache(maxsize=None)
def _global_mesh(count: int) -> Mesh:
    return Mesh(np.asarray(jax.devices()), (GLOBAL_AXIS,))


def replicated() -> NamedSharding:
    """Every leaf whole on every device of every process (a mesh over ``jax.devices()``)."""
    return NamedSharding(_global_mesh(jax.device_count()), PartitionSpec())


def put(tree: Any, shardings: Any) -> Any:
    """``tree`` placed with ``shardings`` (a matching tree, or one sharding for every leaf).

    A host-local leaf must hold the same value in every process (the whole array, not this
    process's part): each process keeps the slices its devices own
    (``jax.make_array_from_process_local_data`` given the global shape, which is the leaf's own).
    A leaf that is already global is resharded where its sharding differs.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    if not isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(_put_leaf, tree, shardings)
    return jax.tree.map(lambda x: _put_leaf(x, shardings), tree)


def _put_leaf(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    if is_global(x):
        return x if x.sharding == sharding else jax.device_put(x, sharding)
    value = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, value, value.shape)


def to_global(tree: Any) -> Any:
    """``tree`` with every host-local leaf replicated over all processes' devices (global leaves
    kept): what a collective checkpoint write needs, so that each process does not write a whole
    copy of a host-local array of its own. Identity with one process."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(lambda x: x if is_global(x) else _put_leaf(x, replicated()), tree)


def gather(tree: Any) -> Any:
    """``tree`` with every global leaf replaced by its whole value as a host-local array (on this
    process's first device), the same in every process; host-local leaves are kept.

    Collective: every process must call it with the same tree. A replicated leaf is read from this
    process's own copy; the sharded ones are replicated by one compiled identity program (leaf by
    leaf would compile one per shape).
    """
    if jax.process_count() == 1:
        return tree
    leaves, treedef = jax.tree.flatten(tree)
    where = [i for i, x in enumerate(leaves) if is_global(x) and not x.is_fully_replicated]
    for i, x in enumerate(leaves):
        if is_global(x) and x.is_fully_replicated:
            leaves[i] = x.addressable_data(0)
    if where:
        picked = [leaves[i] for i in where]
        identity = jax.jit(lambda xs: xs, out_shardings=[NamedSharding(x.sharding.mesh, PartitionSpec())
                                                         for x in picked])
        whole = compiled_everywhere(identity, picked, name="gather")(picked)
        for i, x in zip(where, whole):
            leaves[i] = x.addressable_data(0)
    return jax.tree.unflatten(treedef, leaves)


def wait_for_all(name: str, timeout_s: float = 3600.0) -> None:
    """Returns when every process has called ``wait_for_all`` as often (no-op with one process).

    Through the coordination service, not a device collective. Why: on the CPU a collective waits
    30 s for its peers (gloo's context set-up, not configurable), less than one process may take
    longer than another to compile the same program, or to load it from the XLA cache; so a
    program with collectives is compiled first, everywhere, and run after this wait.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the client jax.distributed.initialize made

    distributed.global_state.client.wait_at_barrier(f"distill_jax/multihost/{next(_barriers)}/{name}",
                                                    int(timeout_s * 1000))


def compiled_everywhere(program: Any, *args: Any, name: str = "program") -> Any:
    """``program`` (a ``jax.jit`` function) compiled for ``args``, once every process has compiled
    it (:func:`wait_for_all`); ``program`` itself with one process, whose first call compiles."""
    if jax.process_count() == 1:
        return program
    compiled = program.lower(*args).compile()
    wait_for_all(f"compiled {name}")
    return compiled


def replicated_specs(abstract: Any) -> Any:
    """``abstract`` (``jax.ShapeDtypeStruct`` leaves) with every leaf replicated over all
    processes' devices: a restore every process reads whole (then :func:`gather` makes it local)."""
    sharding = replicated()
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)


__all__ = ["compiled_everywhere", "gather", "is_global", "put", "replicated", "replicated_specs", "to_global",
           "wait_for_all"]

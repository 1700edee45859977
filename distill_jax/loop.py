"""The outer training loop shared by the teacher and distillation phases.

A phase is a per-seed pure iteration ``step(state) -> (state, metrics)`` whose
state is a ``flax.struct`` dataclass with an ``env_state`` field and an
``update_step`` counter. :func:`run_phase` vmaps it over a leading seed axis,
shards the environment axis over a device mesh, compiles ``scan`` over a fixed
number of iterations per call and, between calls, only checks finiteness, logs
and hands the state to a callback (checkpointing). The Python loop is the
outermost, logging level.

Several processes (``jax.distributed``): every process calls :func:`run_phase` with the same
state; the mesh spans ``jax.devices()`` of all of them, the state is placed on it with
:func:`distill_jax.multihost.put` (each process keeps the environments of its own devices), and
the one SPMD program averages gradients over the global batch (the loss is a mean over the
sharded env axis, so XLA inserts the all-reduce). ``on_chunk`` sees the global state (a
checkpoint write is collective); the returned state is gathered back to every process whole
(:func:`distill_jax.multihost.gather`), so what follows a phase is the same as with one process.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from distill_jax import multihost
from distill_jax.config import ConfigError
from distill_jax.xla_options import compiler_options

ENV_AXIS = "envs"


class NonFiniteError(FloatingPointError):
    """Training produced NaN/Inf; the message names the update step and field."""


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """``[K, 2]`` keys: seed index ``k`` uses the key of a single run with ``seed + k``."""
    if num_seeds < 1:
        raise ConfigError(f"num_seeds={num_seeds!r}: must be a positive integer")
    return jnp.stack([jax.random.PRNGKey(seed + k) for k in range(num_seeds)])


def init_per_seed(init: Callable[..., Any], seed: int, num_seeds: int, hparams: Any = None) -> Any:
    """``init(key)`` for each of :func:`seed_keys`, stacked on a leading seed axis ``[K]``.

    With ``hparams`` (coefficients stacked on a leading member axis ``[G * K]``, e.g. from
    :func:`distill_jax.hyperparams.member_coefficients`), member ``g * K + k`` is
    ``init(key_k, hparams=hparams[g * K + k])``: every grid point of a sweep starts from the same
    seeds (common random numbers), so members differ only by their coefficients.

    Seeds are initialised one after another (``lax.map``), not by ``vmap``: a vmapped
    orthogonal initialiser becomes batched LAPACK QRs, and jaxlib 0.10's CPU QR kernel
    blocks its thread-pool worker while it waits for sub-tasks on that same pool. With
    several such QRs (one per layer) running at once on a 2-core machine every worker
    waits and the program hangs. Unbatched QRs run inline; the result is unchanged.
    """
    keys = seed_keys(seed, num_seeds)
    if hparams is None:
        return jax.jit(lambda keys: jax.lax.map(init, keys))(keys)
    members = int(jax.tree.leaves(hparams)[0].shape[0])
    if members % num_seeds:
        raise ConfigError(f"{members} sets of coefficients cannot be split over {num_seeds} seeds")
    keys = jnp.tile(keys, (members // num_seeds, 1))
    return jax.jit(lambda keys, hp: jax.lax.map(lambda kh: init(kh[0], hparams=kh[1]), (keys, hp)))(keys, hparams)


def make_mesh(devices: list | None, num_envs: int) -> Mesh:
    """A 1-D mesh over ``devices`` (default: ``jax.devices()``, every process's) for ``num_envs`` environments.

    Raises:
      ConfigError: ``num_envs`` not divisible by the number of devices.
    """
    devices = list(devices or jax.devices())
    if num_envs % len(devices):
        processes = len({d.process_index for d in devices})
        where = f" of {processes} processes" if processes > 1 else ""
        raise ConfigError(
            f"num_envs={num_envs}: must be divisible by the {len(devices)} devices{where} it is sharded over"
        )
    return Mesh(np.asarray(devices), (ENV_AXIS,))


def state_sharding(state: Any, mesh: Mesh) -> Any:
    """Shards ``state.env_state`` leaves on their env axis (axis 1, after seeds); replicates the rest."""
    replicated = NamedSharding(mesh, PartitionSpec())
    by_env = NamedSharding(mesh, PartitionSpec(None, ENV_AXIS))
    shardings = {
        f.name: jax.tree.map(lambda _: replicated, getattr(state, f.name))
        for f in dataclasses.fields(state)
        if f.name != "env_state"
    }
    shardings["env_state"] = jax.tree.map(lambda x: by_env if x.ndim >= 2 else replicated, state.env_state)
    return state.replace(**shardings)


def strong_types(tree: Any) -> Any:
    """``tree`` with every leaf cast to its own dtype, which drops JAX's weak typing."""
    return jax.tree.map(lambda x: jnp.asarray(x).astype(jnp.asarray(x).dtype), tree)


def finiteness(tree: Any, prefix: str) -> dict[str, jax.Array]:
    """``{prefix/path: all-finite}`` per leaf, for the non-finite guard (:func:`check_finite`)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{prefix}{jax.tree_util.keystr(path)}": jnp.all(jnp.isfinite(leaf)) for path, leaf in flat}


def check_finite(metrics: dict[str, Any], first_update: int) -> None:
    """Raises :class:`NonFiniteError` naming the first update, seed and field that is not finite.

    ``metrics["finite"]`` maps field names to bool arrays ``[U, K]``
    (iterations of this call × seeds).
    """
    finite = {k: np.asarray(v) for k, v in metrics["finite"].items()}
    # Report in data-flow order (observations, rewards, loss, parameters): the first
    # non-finite one is the likely cause of the others. (Dict order is lost in jit.)
    flow = ("obs", "reward", "loss", "params")
    rank = lambda name: next((i for i, p in enumerate(flow) if name.startswith(p)), len(flow))  # noqa: E731
    bad = [(tuple(np.argwhere(~ok)[0]), rank(name), name) for name, ok in finite.items() if not ok.all()]
    if not bad:
        return
    (u, k), _, name = min(bad)
    raise NonFiniteError(
        f"non-finite values in {name} at update {first_update + int(u) + 1} (seed index {int(k)}); "
        "training stopped, the last good checkpoint is kept"
    )


def iterations_per_call(total: int, target: int) -> int:
    """The largest divisor of ``total`` not above ``target``: every call compiles to one shape."""
    target = max(1, min(target, total))
    return max(d for d in range(1, target + 1) if total % d == 0)


def host_rows(metrics: dict[str, Any], first_update: int, batch_size: int) -> list[dict[str, Any]]:
    """One JSON-able row per iteration; per-seed values become lists ``[K]``."""
    metrics = {k: np.asarray(v) for k, v in metrics.items() if k != "finite"}
    n = next(iter(metrics.values())).shape[0]
    rows = []
    for i in range(n):
        update = first_update + i + 1
        rows.append({"update": update, "env_steps": update * batch_size,
                     **{k: v[i].tolist() for k, v in metrics.items()}})
    return rows


def chunk_program(
    step: Callable[[Any, Any], tuple[Any, dict[str, Any]]],
    sharding: Any,
    mesh: Mesh,
    iterations: int,
    *,
    vmap_frozen: bool,
) -> Callable[[Any, Any], tuple[Any, dict[str, Any]]]:
    """The compiled call of :func:`run_phase`: ``iterations`` of ``step`` vmapped over seeds.

    ``(state [K], frozen [K] or None) -> (state, metrics [iterations, K])``; the state
    is donated and comes back with ``sharding``. Compiled with
    :func:`distill_jax.xla_options.compiler_options` for the mesh's devices.
    """
    vstep = jax.vmap(step, in_axes=(0, 0 if vmap_frozen else None))

    # Metrics replicated: every process reads them whole (a process can read only its own shards).
    @functools.partial(jax.jit, out_shardings=(sharding, NamedSharding(mesh, PartitionSpec())), donate_argnums=0,
                       compiler_options=compiler_options(list(mesh.devices.flat)))
    def run(s, f):
        s, metrics = jax.lax.scan(lambda c, _: vstep(c, f), s, None, length=iterations)
        return strong_types(s), metrics

    return run


def run_phase(
    state: Any,
    step: Callable[[Any, Any], tuple[Any, dict[str, Any]]],
    *,
    frozen: Any = None,
    total_updates: int,
    batch_size: int,
    num_envs: int,
    updates_per_call: int | None = None,
    devices: list | None = None,
    log_fn: Callable[[dict[str, Any]], None] | None = None,
    on_chunk: Callable[[Any, int], None] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Runs ``step`` (vmapped over seeds) until ``state.update_step`` reaches ``total_updates``.

    Args:
      state: per-seed states stacked on a leading seed axis ``[K]``.
      step: one iteration for one seed, ``step(state, frozen) -> (state, metrics)``.
      frozen: per-seed inputs that are not trained (e.g. a frozen teacher),
        stacked on a leading seed axis, or ``None``.
      total_updates: iterations per seed.
      batch_size: env steps per iteration per seed (for the step counter).
      num_envs: environments per seed (sharded over ``devices``).
      updates_per_call: iterations per compiled call (default: ~10 calls).
      devices: devices to shard environments over (default: ``jax.devices()``, every process's).
      log_fn: receives one row per iteration; the last row of a call also has
        ``seconds`` and ``env_steps_per_second`` (all seeds).
      on_chunk: ``(state, updates_done)`` after every finite call.

    Returns:
      ``(state, history)``.

    Raises:
      NonFiniteError: NaN/Inf in any ``metrics["finite"]`` field; ``on_chunk``
        is not called for that call.
    """
    mesh = make_mesh(devices, num_envs)
    # Strong dtypes throughout: a weak-typed leaf (e.g. a Brax reward after a step)
    # would change the carried state's type and recompile every call.
    state = strong_types(state)
    sharding = state_sharding(state, mesh)
    state = multihost.put(state, sharding)
    num_seeds = int(np.asarray(state.update_step).shape[0])
    done = int(np.asarray(state.update_step)[0])
    # Chunking depends on ``total_updates`` only, so a resumed run (``done`` at a chunk
    # boundary) compiles the same program and reproduces the uninterrupted run.
    per_call = iterations_per_call(total_updates, updates_per_call or max(1, total_updates // 10))
    if (total_updates - done) % per_call:
        per_call = iterations_per_call(total_updates - done, per_call)
    run = chunk_program(step, sharding, mesh, per_call, vmap_frozen=frozen is not None)
    frozen = multihost.put(frozen, NamedSharding(mesh, PartitionSpec()))
    # With several processes: compiled (or loaded from the XLA cache) by all before any runs it.
    run = multihost.compiled_everywhere(run, state, frozen, name="chunk")

    history: list[dict[str, Any]] = []
    while done < total_updates:
        t0 = time.perf_counter()
        state, metrics = run(state, frozen)
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - t0
        check_finite(metrics, done)
        rows = host_rows(metrics, done, batch_size)
        rows[-1]["seconds"] = elapsed
        rows[-1]["env_steps_per_second"] = per_call * batch_size * num_seeds / elapsed
        done += per_call
        history.extend(rows)
        if log_fn is not None:
            for row in rows:
                log_fn(row)
        if on_chunk is not None:
            on_chunk(state, done)
    return multihost.gather(state), history

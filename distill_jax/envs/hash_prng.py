"""A counter-hash PRNG for the per-step noise of the env wrappers.

Why not ``jax.random``: threefry spends about 20 rounds of 32-bit arithmetic
per pair of words, and on CPU, with small physics models, drawing sensor noise
and restart keys with it costs more than the physics it decorates. Here a word
is ``mix(mix(counter ^ a) + b)``, two rounds of a 32-bit avalanche mixer over a
counter, with ``(a, b)`` derived from the key's two words: a few integer ops.

What it guarantees: the stream is a deterministic function of the key (same
key -> same numbers), keys are threefry-shaped (raw ``uint32[..., 2]`` or typed),
so callers can mix it with ``jax.random``, and the normals pass the statistical
checks in ``tests/test_wrappers.py``. Good enough for sensor noise and reset
keys; not a cryptographic or general-purpose generator.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _mix32(x: jax.Array) -> jax.Array:
    # A 32-bit avalanche mixer (lowbias32 constants): every input bit affects every output bit.
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _threefry_words(rng: jax.Array, caller: str) -> jax.Array:
    """The raw ``uint32[..., 2]`` words of a raw or typed threefry key (batched or not)."""
    raw = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    if raw.shape[-1:] != (2,) or raw.dtype != jnp.uint32:
        raise TypeError(f"{caller} needs threefry keys (uint32[..., 2]), got {raw.dtype}{list(raw.shape)}")
    return raw


def _hash_words(raw: jax.Array, counters: jax.Array) -> jax.Array:
    """Word ``mix(mix(counter ^ a) + b)`` per counter, ``(a, b)`` derived from the key words ``raw[..., :2]``.

    ``counters`` broadcasts against ``raw[..., 0]`` (a vector of counters for one
    key, or one counter for a batch of keys).
    """
    a = raw[..., 0] * jnp.uint32(0x9E3779B9) ^ raw[..., 1]
    return _mix32(_mix32(counters ^ a) + raw[..., 1])


def _like_key(words: jax.Array, like: jax.Array) -> jax.Array:
    """``words`` (``uint32[..., 2]``) as a key of the same kind (raw or typed) as ``like``."""
    if jnp.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(words, impl=jax.random.key_impl(like))
    return words


def hash_normal(rng: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``(next_rng, z[n])``: standard normals and a new key, from one raw ``uint32[2]`` key.

    Counter-based: word ``i`` is ``mix(mix(i ^ a) + b)`` with ``(a, b)`` derived
    from the key; the first two words form the next key, the rest feed
    Box-Muller. Cheap on CPU (no threefry rounds); see
    :class:`~distill_jax.envs.wrappers.SensorNoise`.
    """
    raw = _threefry_words(rng, "hash_normal")
    if raw.shape != (2,):
        raise TypeError(f"hash_normal needs one threefry key (uint32[2]), got {raw.dtype}{list(raw.shape)}")
    bits = _hash_words(raw, jnp.arange(2 + 2 * ((n + 1) // 2), dtype=jnp.uint32))
    next_rng = _like_key(bits[:2], rng)
    u = ((bits[2:] >> 8).astype(jnp.float32) + 0.5) * (1.0 / 16777216.0)  # in (0, 1)
    u1, u2 = u[0::2], u[1::2]
    radius = jnp.sqrt(-2.0 * jnp.log(u1))
    angle = (2.0 * np.pi) * u2
    z = jnp.concatenate([radius * jnp.cos(angle), radius * jnp.sin(angle)])[:n]
    return next_rng, z


def hash_fold(rng: jax.Array, salt: int) -> jax.Array:
    """A new key from ``rng`` and an integer ``salt`` by the counter hash of :func:`hash_normal`.

    Like ``jax.random.fold_in``, but a few integer ops instead of threefry
    rounds; for raw ``uint32[..., 2]`` keys or typed keys, batched or not.
    """
    raw = _threefry_words(rng, "hash_fold")
    words = jnp.stack([_hash_words(raw, jnp.uint32(2 * salt + i)) for i in (0, 1)], axis=-1)
    return _like_key(words, rng)

"""Pure, vmap-safe environment wrappers.

Single-instance wrappers (compose in this order, innermost first)::

    task -> DomainRandomization -> [ActionLatency] -> SensorNoise -> ObservationHistory -> TimeLimit

and the batching wrapper that goes outside all of them::

    VmapAutoReset(env, num_envs)

Every wrapper keeps its own carried values under its own keys of
``EnvState.info`` and leaves other keys alone, adds its settings to the
fingerprint's ``"wrappers"`` list and, when it adds observation fields,
extends the schema (with field specs).

PRNG use: a wrapper that needs randomness during a step derives it from
``state.rng`` and stores a new key there (``jax.random.split``, or the cheaper
counter hash of :func:`hash_normal` in SensorNoise), so the stored key is never
one that was used for sampling and the same reset key gives the same episode.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.envs.base import Env, EnvState, Wrapper
from distill_jax.envs.randomization import ModelRandomizer, ParamRange
from distill_jax.schema import FieldSpec, ObservationSchema
from distill_jax.treeops import select_rows


def _add_wrapper_entry(fp: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    fp = dict(fp)
    fp["wrappers"] = list(fp.get("wrappers", [])) + [entry]
    return fp


def _extend_schema(schema: ObservationSchema, category: str, name: str, spec: FieldSpec) -> ObservationSchema:
    if name in schema.all_fields:
        raise ValueError(f"observation field {name!r} already exists in the schema ({schema.category_of(name)})")
    specs = dict(schema.fields)
    specs[name] = spec
    return dataclasses.replace(
        schema, **{category: getattr(schema, category) + (name,)}, fields=tuple(specs.items())
    )


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
    Box-Muller. Cheap on CPU (no threefry rounds); see :class:`SensorNoise`.
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


# ----------------------------------------------------------------- TimeLimit
class TimeLimit(Wrapper):
    """Truncates episodes after ``episode_length`` control steps.

    Counts steps in ``info["steps"]`` (int32). The step that reaches the limit
    gets ``truncated = 1`` unless it also terminated, so ``terminated`` and
    ``truncated`` are never both 1.
    """

    def __init__(self, env: Env, episode_length: int):
        super().__init__(env)
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self._episode_length = int(episode_length)

    @property
    def episode_length(self) -> int:
        return self._episode_length

    def reset(self, key: jax.Array) -> EnvState:
        state = self.env.reset(key)
        return state.replace(info={**state.info, "steps": jnp.zeros((), jnp.int32)})

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        steps = state.info["steps"] + 1
        nxt = self.env.step(state, action)
        hit = (steps >= self._episode_length).astype(jnp.float32)
        truncated = jnp.where(nxt.terminated > 0, 0.0, jnp.maximum(nxt.truncated, hit))
        return nxt.replace(truncated=truncated, info={**nxt.info, "steps": steps})

    def fingerprint(self) -> dict[str, Any]:
        fp = _add_wrapper_entry(self.env.fingerprint(), {"type": "TimeLimit", "episode_length": self._episode_length})
        fp["episode_length"] = self._episode_length
        return fp


# ------------------------------------------------------- DomainRandomization
class DomainRandomization(Wrapper):
    """Samples physical parameters per episode and simulates the resulting model.

    The wrapped env must be the task itself (an :class:`~distill_jax.envs.mjx_env.MjxEnv`
    or an adapter offering ``mj_model``, ``mjx_model``, ``reset_with_model`` and
    ``step_with_model``). Values are drawn at reset, stored in
    ``state.params[range.name]`` (unchanged by ``step``), and exposed,
    normalised to [-1, 1], as the teacher-only observation field ``obs_field``
    (``"dyn_params"``, shape ``[len(ranges)]``; carried in ``info["dyn_params"]``
    so it is bit-identical within an episode). The per-env model is rebuilt
    from ``state.params`` on every step: a handful of elementwise ops, cheaper
    than carrying a model per env. Simulating per-env models is itself dearer
    than one shared model (XLA can no longer fold model constants): about 10 %
    for the cart-pole, see ``experiments/results/envs_cpu.md``.
    """

    def __init__(self, env: Env, ranges: Sequence[ParamRange], obs_field: str = "dyn_params"):
        super().__init__(env)
        for attr in ("mj_model", "mjx_model", "reset_with_model", "step_with_model"):
            if isinstance(env, Wrapper) or not hasattr(env, attr):
                raise TypeError(
                    "DomainRandomization must wrap the task itself (an MjxEnv or adapter with "
                    f"mj_model/mjx_model/reset_with_model/step_with_model); got {type(env).__name__}"
                )
        if not ranges:
            raise ValueError("DomainRandomization needs at least one ParamRange")
        self.ranges = tuple(ranges)
        self.obs_field = obs_field
        self.randomizer = ModelRandomizer(self.ranges, env.mj_model)

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        return _extend_schema(self.env.schema, "teacher_only", self.obs_field, FieldSpec((len(self.ranges),)))

    def model_for(self, params: Mapping[str, jax.Array]):
        """The per-episode model for ``params`` (as stored in ``state.params``)."""
        return self.randomizer.apply(self.env.mjx_model, self.randomizer.values_from_params(params))

    def reset(self, key: jax.Array) -> EnvState:
        k_params, k_env = jax.random.split(key)
        values = self.randomizer.sample(k_params)
        state = self.env.reset_with_model(k_env, self.randomizer.apply(self.env.mjx_model, values))
        normalized = self.randomizer.normalize(values).astype(jnp.float32)
        return state.replace(
            obs={**state.obs, self.obs_field: normalized},
            params={**state.params, **self.randomizer.as_params(values)},
            info={**state.info, "dyn_params": normalized},
        )

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        model = self.randomizer.apply(self.env.mjx_model, self.randomizer.values_from_params(state.params))
        nxt = self.env.step_with_model(state, action, model)
        # Carried, not recomputed: bit-identical within the episode.
        normalized = state.info["dyn_params"]
        # Re-attach to info too: a task's step may rebuild its info dict.
        return nxt.replace(
            obs={**nxt.obs, self.obs_field: normalized},
            params=state.params,
            info={**nxt.info, "dyn_params": normalized},
        )

    def fingerprint(self) -> dict[str, Any]:
        fp = self.env.fingerprint()
        fp["randomization"] = [r.to_dict() for r in self.ranges]
        return _add_wrapper_entry(fp, {"type": "DomainRandomization", "obs_field": self.obs_field})


# ------------------------------------------------------------- ActionLatency
class ActionLatency(Wrapper):
    """Actuation latency: the command of ``d`` control steps ago is applied, ``d`` drawn per episode.

    ``d`` is uniform on ``{min_delay, ..., max_delay}`` at reset and fixed for the
    episode; the commands of the last ``max_delay`` steps are carried in
    ``info["action_buffer"]`` (zeros before the first command). The delay is
    privileged: it is exposed, normalised to [0, 1], as the teacher-only field
    ``obs_field`` (``"action_latency"``, shape ``[1]``), which a student must infer
    from its history. Compose it outside :class:`DomainRandomization` and inside
    :class:`ObservationHistory`, so the history records *commanded* actions (what
    a robot knows); a task's own ``last_action`` field then reports the applied one.
    """

    def __init__(self, env: Env, max_delay: int, min_delay: int = 0, obs_field: str = "action_latency"):
        super().__init__(env)
        if not 0 <= int(min_delay) <= int(max_delay) or int(max_delay) < 1:
            raise ValueError(f"ActionLatency needs 0 <= min_delay <= max_delay and max_delay >= 1; "
                             f"got min_delay={min_delay}, max_delay={max_delay}")
        self.min_delay, self.max_delay, self.obs_field = int(min_delay), int(max_delay), obs_field

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        return _extend_schema(self.env.schema, "teacher_only", self.obs_field, FieldSpec((1,)))

    def _with_delay_obs(self, state: EnvState, delay: jax.Array) -> EnvState:
        value = (delay.astype(jnp.float32) / self.max_delay).reshape(1)
        return state.replace(obs={**state.obs, self.obs_field: value})

    def reset(self, key: jax.Array) -> EnvState:
        k_delay, k_env = jax.random.split(key)
        delay = jax.random.randint(k_delay, (), self.min_delay, self.max_delay + 1)
        state = self.env.reset(k_env)
        buffer = jnp.zeros((self.max_delay, self.env.action_size), jnp.float32)
        state = state.replace(info={**state.info, "action_buffer": buffer, "action_delay": delay})
        return self._with_delay_obs(state, delay)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        delay = state.info["action_delay"]
        # Row k of ``history`` is the command of ``max_delay - k`` steps ago; the last row is now.
        history = jnp.concatenate([state.info["action_buffer"], jnp.asarray(action, jnp.float32)[None]], axis=0)
        applied = history[self.max_delay - delay]
        nxt = self.env.step(state, applied)
        nxt = nxt.replace(info={**nxt.info, "action_buffer": history[1:], "action_delay": delay})
        return self._with_delay_obs(nxt, delay)

    def fingerprint(self) -> dict[str, Any]:
        return _add_wrapper_entry(
            self.env.fingerprint(),
            {"type": "ActionLatency", "min_delay": self.min_delay, "max_delay": self.max_delay,
             "obs_field": self.obs_field},
        )


# --------------------------------------------------------------- SensorNoise
class SensorNoise(Wrapper):
    """Adds zero-mean Gaussian noise to deployable observation fields.

    Args:
      env: inner env.
      stds: ``{field: std}``; each field must be in ``schema.student_obs``.
        Fields with std 0 are left untouched.

    Randomness comes from ``state.rng``, which is advanced every step. For
    speed the draw uses a counter-based integer hash of the key (two rounds of
    a 32-bit avalanche mixer) and the Box-Muller transform instead of
    ``jax.random.split`` + ``jax.random.normal``: on CPU, with small physics
    models, threefry costs more than the physics it decorates. The stream is
    a deterministic function of ``state.rng``, so same key -> same noise; it is
    statistically sound for sensor noise (tested), not for cryptography.
    """

    def __init__(self, env: Env, stds: Mapping[str, float]):
        super().__init__(env)
        schema = env.schema
        self.stds = {k: float(v) for k, v in stds.items() if float(v) != 0.0}
        for name, std in stds.items():
            if name not in schema.student_obs:
                where = schema.category_of(name) if name in schema.all_fields else "not in the schema"
                raise ValueError(f"SensorNoise: field {name!r} is not a deployable (student_obs) field ({where})")
            if float(std) < 0:
                raise ValueError(f"SensorNoise: std for {name!r} must be >= 0, got {std}")
        specs = schema.field_specs
        self._shapes = {k: specs[k].shape for k in self.stds}
        self._sizes = {k: int(np.prod(s)) for k, s in self._shapes.items()}
        self._total = sum(self._sizes.values())
        self._std_vec = np.concatenate(
            [np.full(self._sizes[k], v, np.float32) for k, v in self.stds.items()]
        ) if self.stds else np.zeros(0, np.float32)

    def _noisy(self, state: EnvState) -> EnvState:
        if not self.stds:
            return state
        rng, eps = hash_normal(state.rng, self._total)
        eps = eps * self._std_vec
        obs = dict(state.obs)
        offset = 0
        for name in self.stds:
            n = self._sizes[name]
            obs[name] = obs[name] + eps[offset: offset + n].reshape(self._shapes[name])
            offset += n
        return state.replace(obs=obs, rng=rng)

    def reset(self, key: jax.Array) -> EnvState:
        return self._noisy(self.env.reset(key))

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        return self._noisy(self.env.step(state, action))

    def fingerprint(self) -> dict[str, Any]:
        return _add_wrapper_entry(self.env.fingerprint(), {"type": "SensorNoise", "std": dict(sorted(self.stds.items()))})


# -------------------------------------------------------- ObservationHistory
class ObservationHistory(Wrapper):
    """Adds the deployable field ``"history"``: the last ``length`` observations.

    Row ``k`` of ``obs["history"]`` (shape ``[length, D]``) is the flattened
    concatenation of ``fields`` at step ``t - length + 1 + k`` followed, with
    ``include_actions``, by the action that led to that step (clipped to
    [-1, 1]; zeros for the first step). The last row is therefore the current
    step, rows are oldest first. ``D = sum(field sizes) + action_size``.

    At an episode start (``fill``):

    * ``"first"`` (default): every row repeats the first observation with a
      zero action (so finite differences start at zero velocity);
    * ``"zeros"``: rows before the first step are all zeros.

    The buffer is carried in ``info["history"]`` so an outer wrapper that
    edits ``obs`` cannot corrupt it.
    """

    def __init__(
        self,
        env: Env,
        fields: Sequence[str],
        length: int,
        include_actions: bool = True,
        fill: str = "first",
        obs_field: str = "history",
    ):
        super().__init__(env)
        schema = env.schema
        fields = tuple(fields)
        if not fields and not include_actions:
            raise ValueError("ObservationHistory needs at least one field or include_actions=True")
        for name in fields:
            if name not in schema.student_obs:
                raise ValueError(
                    f"ObservationHistory: field {name!r} is not a deployable (student_obs) field; "
                    f"history is a student input and may only stack {list(schema.student_obs)}"
                )
        if int(length) < 1:
            raise ValueError(f"history length must be >= 1, got {length}")
        if fill not in ("first", "zeros"):
            raise ValueError(f"fill must be 'first' or 'zeros', got {fill!r}")
        self.fields = fields
        self.length = int(length)
        self.include_actions = bool(include_actions)
        self.fill = fill
        self.obs_field = obs_field
        specs = schema.field_specs
        self._row_size = sum(math.prod(specs[f].shape) for f in fields) + (env.action_size if include_actions else 0)

    @property
    def row_size(self) -> int:
        return self._row_size

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        return _extend_schema(
            self.env.schema, "student_obs", self.obs_field, FieldSpec((self.length, self._row_size))
        )

    def _row(self, obs, action) -> jax.Array:
        parts = [jnp.reshape(obs[f], (-1,)).astype(jnp.float32) for f in self.fields]
        if self.include_actions:
            parts.append(jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0).reshape(-1))
        return jnp.concatenate(parts)

    def reset(self, key: jax.Array) -> EnvState:
        state = self.env.reset(key)
        row = self._row(state.obs, jnp.zeros((self.env.action_size,), jnp.float32))
        if self.fill == "first":
            hist = jnp.tile(row[None], (self.length, 1))
        else:
            hist = jnp.zeros((self.length, self._row_size), jnp.float32).at[-1].set(row)
        return state.replace(obs={**state.obs, self.obs_field: hist}, info={**state.info, "history": hist})

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        nxt = self.env.step(state, action)
        row = self._row(nxt.obs, action)
        hist = jnp.concatenate([state.info["history"][1:], row[None]], axis=0)
        return nxt.replace(obs={**nxt.obs, self.obs_field: hist}, info={**nxt.info, "history": hist})

    def fingerprint(self) -> dict[str, Any]:
        return _add_wrapper_entry(
            self.env.fingerprint(),
            {
                "type": "ObservationHistory",
                "fields": list(self.fields),
                "length": self.length,
                "include_actions": self.include_actions,
                "fill": self.fill,
            },
        )


# ------------------------------------------------------------- VmapAutoReset
AUTORESET_INFO_KEYS = (
    "final_obs",
    "episode_return",
    "episode_length",
    "episode_return_completed",
    "episode_length_completed",
    "episode_completed",
    "reset_pool",
    "reset_pool_used",
    "reset_pool_clock",
)


class VmapAutoReset(Wrapper):
    """A batch of ``num_envs`` independent envs that restart when done.

    ``reset(key) -> EnvState`` with a leading ``[num_envs]`` axis on every
    leaf; ``step(state, actions[num_envs, A])`` steps all envs with ``vmap``
    and resets the finished ones (``done = max(terminated, truncated)``).

    For a finished env the returned state holds the *new* episode (its first
    observation, ``first = 1``, fresh physics / params / rng / info) while
    ``reward``, ``terminated``, ``truncated`` and ``metrics`` describe the
    transition just taken. Added ``info`` entries (all ``[num_envs, ...]``):

    * ``final_obs``: the observation the step produced before any reset (the
      true last observation of a finished episode; equal to ``obs`` for the
      others), for bootstrapping the value on truncation;
    * ``episode_return`` / ``episode_length``: running sums of the current episode;
    * ``episode_return_completed`` / ``episode_length_completed``: return and
      length of the episode that finished at this step (0 where none did);
    * ``episode_completed``: float mask of envs whose episode finished at this step.

    The reset key of env ``i`` is split from its own ``state.rng``, so results
    do not depend on the batch layout or on ``reset_chunk``.

    Only finished envs are reset: their indices are gathered and reset in
    chunks of ``reset_chunk`` envs (default ``max(1, num_envs // 16)``) by a
    loop whose trip count is ``ceil(n_done / reset_chunk)`` (zero on most
    steps), then scattered back. Resetting every env and selecting would cost
    a full reset per step, which for small models is as dear as the physics.

    ``reset_pool=True`` bounds the reset cost per step instead, for tasks whose
    short episodes make resets a visible share of a step. Env ``i`` then
    restarts from the initial state kept in slot ``i`` of ``info["reset_pool"]``
    (made by the task's own ``reset``), with a new ``rng`` derived from its
    own, so noise and later randomness differ even when a slot is used twice.
    A slot is marked used (``info["reset_pool_used"]``) when its env restarts
    from it. Every ``refill_every`` steps (default 4) at most ``reset_chunk``
    used slots (default ``max(1, num_envs // 16)``, chosen from a random
    offset) are refilled by fresh resets in one batched call: on average
    ``reset_chunk / refill_every`` new initial states per step (``num_envs //
    64`` by default). Refills are batched across steps because a reset call
    has a fixed cost (the task's ``reset``, e.g. an ``mjx.forward``, is many
    small ops) that on CPU outweighs its per-env cost at these sizes. While
    fewer envs restart than that budget, every episode starts from a never
    used initial state; Brax's own auto-reset is the other extreme (one
    initial state per env, never refilled). The pool doubles the env state's
    memory, and results depend on ``reset_chunk`` and ``refill_every``.
    """

    def __init__(
        self,
        env: Env,
        num_envs: int,
        reset_chunk: int | None = None,
        reset_pool: bool = False,
        refill_every: int | None = None,
    ):
        super().__init__(env)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if reset_chunk is not None and int(reset_chunk) < 1:
            raise ValueError(f"reset_chunk must be >= 1, got {reset_chunk}")
        if refill_every is not None and (not reset_pool or int(refill_every) < 1):
            raise ValueError(f"refill_every needs reset_pool=True and must be >= 1, got {refill_every}")
        self.num_envs = int(num_envs)
        self.reset_pool = bool(reset_pool)
        self.refill_every = (4 if refill_every is None else int(refill_every)) if self.reset_pool else 1
        default_chunk = max(1, self.num_envs // 16)
        self.reset_chunk = min(default_chunk if reset_chunk is None else int(reset_chunk), self.num_envs)

    @classmethod
    def for_phase(cls, env: Env, config: Any) -> "VmapAutoReset":
        """The batched env a training phase's config asks for (its ``num_envs`` and ``reset_pool``).

        ``config`` is a :class:`~distill_jax.config.PPOConfig` or
        :class:`~distill_jax.config.DistillConfig`; one builder so that a phase
        and a checkpoint restore of it always batch the env the same way.
        """
        return cls(env, config.num_envs, reset_pool=config.reset_pool)

    @property
    def batch_size(self) -> int:
        return self.num_envs

    def reset(self, key: jax.Array) -> EnvState:
        return self.reset_with_keys(jax.random.split(key, self.num_envs))

    def reset_with_keys(self, keys: jax.Array) -> EnvState:
        """Resets env ``i`` with ``keys[i]`` (``[num_envs, 2]``), e.g. an evaluation panel's seeds."""
        state = jax.vmap(self.env.reset)(keys)
        zeros_f = jnp.zeros((self.num_envs,), jnp.float32)
        zeros_i = jnp.zeros((self.num_envs,), jnp.int32)
        info = {
            **state.info,
            "final_obs": state.obs,
            "episode_return": zeros_f,
            "episode_length": zeros_i,
            "episode_return_completed": zeros_f,
            "episode_length_completed": zeros_i,
            "episode_completed": zeros_f,
        }
        if self.reset_pool:
            # fold_in(k, 1) differs from the keys reset(k) derives (it splits k).
            pool_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
            info["reset_pool"] = jax.vmap(self.env.reset)(pool_keys).replace(metrics={})
            info["reset_pool_used"] = zeros_f
            # Steps since the last refill, kept per env (all equal) rather than as a scalar:
            # every info leaf has the env axis, which the training loop shards over devices.
            info["reset_pool_clock"] = zeros_i
        return state.replace(info=info)

    def step(self, state: EnvState, actions: jax.Array) -> EnvState:
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"actions must have leading axis {self.num_envs}, got shape {actions.shape}")
        has_pool = "reset_pool" in state.info
        if has_pool != self.reset_pool:
            # A state from the other restart mode would otherwise fail deep inside
            # the step (pool mode) or silently drop its pool (fresh mode).
            raise ValueError(
                f"state.info {'has' if has_pool else 'lacks'} 'reset_pool' but this VmapAutoReset has "
                f"reset_pool={self.reset_pool}: step a state made by this wrapper's reset()"
            )
        inner = state.replace(info={k: v for k, v in state.info.items() if k not in AUTORESET_INFO_KEYS})
        nxt = jax.vmap(self.env.step)(inner, actions)
        done = nxt.done > 0
        pool_info = {}
        if self.reset_pool:
            after, pool_info = self._restart_from_pool(nxt, done, state.info)
        else:
            after = self._reset_finished(nxt, done)

        ret = state.info["episode_return"] + nxt.reward
        length = state.info["episode_length"] + 1
        info = {
            **after.info,
            "final_obs": nxt.obs,
            "episode_return": jnp.where(done, 0.0, ret),
            "episode_length": jnp.where(done, 0, length),
            "episode_return_completed": jnp.where(done, ret, 0.0),
            "episode_length_completed": jnp.where(done, length, 0),
            "episode_completed": done.astype(jnp.float32),
            **pool_info,
        }
        return after.replace(info=info)

    def _reset_finished(self, stepped: EnvState, done: jax.Array) -> EnvState:
        n, k = self.num_envs, self.reset_chunk
        # Indices of finished envs first, padded with the out-of-range index n,
        # which the scatter below drops.
        order = jnp.nonzero(done, size=n, fill_value=n)[0]
        padded = jnp.concatenate([order, jnp.full((k,), n, order.dtype)])
        n_chunks = (jnp.sum(done.astype(jnp.int32)) + k - 1) // k

        def reset_chunk(i, s: EnvState) -> EnvState:
            idx = jax.lax.dynamic_slice(padded, (i * k,), (k,))
            rngs = s.rng[jnp.minimum(idx, n - 1)]
            return self._reset_rows(s, idx, jax.vmap(lambda r: jax.random.split(r)[1])(rngs))

        merged = jax.lax.fori_loop(0, n_chunks, reset_chunk, stepped.replace(metrics={}))
        return self._with_outcome(merged, stepped)

    def _restart_from_pool(
        self, stepped: EnvState, done: jax.Array, info: Mapping[str, Any]
    ) -> tuple[EnvState, dict[str, jax.Array | EnvState]]:
        n, k = self.num_envs, self.reset_chunk
        pool = info["reset_pool"]
        # A select over the batch, not the chunked scatter of fresh resets: with
        # many envs finishing per step (the case the pool is for) one select
        # beats several scatter passes over every leaf of the state (measured on
        # the inverted pendulum, experiments/results/envs_cpu.md). Keys come from
        # the counter hash: threefry over every env's key would cost a good part
        # of the resets the pool saves.
        starts = pool.replace(rng=hash_fold(stepped.rng, 1))
        merged = select_rows(done, starts, stepped.replace(metrics={}))
        used = jnp.maximum(info["reset_pool_used"], done.astype(jnp.float32))
        clock = info["reset_pool_clock"] + 1
        due = clock[0] >= self.refill_every

        def refill(_, carry: tuple[EnvState, jax.Array]) -> tuple[EnvState, jax.Array]:
            p, u = carry
            # The first k used slots, counted from a random offset.
            offset = jax.random.randint(hash_fold(stepped.rng[0], 3), (), 0, n)
            rotated = jnp.nonzero(jnp.roll(u > 0, -offset), size=k, fill_value=n)[0]
            idx = jnp.where(rotated < n, (rotated + offset) % n, n)
            p = self._reset_rows(p, idx, hash_fold(stepped.rng[jnp.minimum(idx, n - 1)], 2))
            return p, u.at[idx].set(0.0, mode="drop")

        # A trip count of 0 or 1 rather than lax.cond: under an outer vmap (seeds)
        # a cond runs both branches on every step, a loop only when a refill is due.
        trips = (due & jnp.any(used > 0)).astype(jnp.int32)
        pool, used = jax.lax.fori_loop(0, trips, refill, (pool, used))
        pool_info = {"reset_pool": pool, "reset_pool_used": used, "reset_pool_clock": jnp.where(due, 0, clock)}
        return self._with_outcome(merged, stepped), pool_info

    def _reset_rows(self, target: EnvState, idx: jax.Array, keys: jax.Array) -> EnvState:
        """``target`` with row ``idx[j]`` replaced by a fresh reset from ``keys[j]``.

        Out-of-range indices (the padding ``num_envs``) are dropped by the scatter.
        """
        fresh = jax.vmap(self.env.reset)(keys).replace(metrics={})
        return jax.tree_util.tree_map(lambda a, b: a.at[idx].set(b, mode="drop"), target, fresh)

    @staticmethod
    def _with_outcome(merged: EnvState, stepped: EnvState) -> EnvState:
        # The transition's outcome is what the step produced, whatever was reset.
        return merged.replace(
            reward=stepped.reward,
            terminated=stepped.terminated,
            truncated=stepped.truncated,
            metrics=stepped.metrics,
        )

    def fingerprint(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "VmapAutoReset"}
        if self.reset_pool:
            entry.update(reset_pool=True, refill_chunk=self.reset_chunk, refill_every=self.refill_every)
        return _add_wrapper_entry(self.env.fingerprint(), entry)

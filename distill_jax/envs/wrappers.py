"""Pure, vmap-safe single-instance environment wrappers.

Compose in this order, innermost first::

    task -> DomainRandomization -> [ActionLatency] -> SensorNoise -> ObservationHistory -> TimeLimit

and batch the result with :class:`~distill_jax.envs.autoreset.VmapAutoReset`.

Every wrapper keeps its own carried values under its own keys of
``EnvState.info`` and leaves other keys alone, adds its settings to the
fingerprint's ``"wrappers"`` list and, when it adds observation fields,
extends the schema (with field specs).

PRNG use: a wrapper that needs randomness during a step derives it from
``state.rng`` and stores a new key there (``jax.random.split``, or the cheaper
counter hash of :func:`~distill_jax.envs.hash_prng.hash_normal` in SensorNoise), so the stored key is never
one that was used for sampling and the same reset key gives the same episode.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.envs.base import Env, EnvState, Wrapper, add_wrapper_entry
from distill_jax.envs.hash_prng import hash_normal
from distill_jax.envs.randomization import ModelRandomizer, ParamRange
from distill_jax.schema import FieldSpec, ObservationSchema


def _extend_schema(schema: ObservationSchema, category: str, name: str, spec: FieldSpec) -> ObservationSchema:
    if name in schema.all_fields:
        raise ValueError(f"observation field {name!r} already exists in the schema ({schema.category_of(name)})")
    specs = dict(schema.fields)
    specs[name] = spec
    return dataclasses.replace(
        schema, **{category: getattr(schema, category) + (name,)}, fields=tuple(specs.items())
    )


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
        fp = add_wrapper_entry(self.env.fingerprint(), {"type": "TimeLimit", "episode_length": self._episode_length})
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
        self.sampling_bounds: tuple[Any, Any] | None = None  # see with_sampling_bounds

    def with_sampling_bounds(self, low: Any, high: Any) -> "DomainRandomization":
        """A copy that draws the parameters from ``[low, high]`` (``[len(ranges)]`` each, may be traced)
        instead of the training ranges. ``dyn_params`` still normalises over the training ranges, so
        a value outside them shows the teacher an entry beyond [-1, 1], as it would in deployment.
        The evaluation suite (:mod:`distill_jax.suite`) builds its conditions from it."""
        new = copy.copy(self)
        new.sampling_bounds = (low, high)
        return new

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        return _extend_schema(self.env.schema, "teacher_only", self.obs_field, FieldSpec((len(self.ranges),)))

    def model_for(self, params: Mapping[str, jax.Array]):
        """The per-episode model for ``params`` (as stored in ``state.params``)."""
        return self.randomizer.apply(self.env.mjx_model, self.randomizer.values_from_params(params))

    def reset(self, key: jax.Array) -> EnvState:
        k_params, k_env = jax.random.split(key)
        values = self.randomizer.sample(k_params, *(self.sampling_bounds or (None, None)))
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
        return add_wrapper_entry(fp, {"type": "DomainRandomization", "obs_field": self.obs_field})


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
        self.fixed_delay: Any = None  # see with_delay

    def with_delay(self, delay: Any) -> "ActionLatency":
        """A copy whose every episode has the delay ``delay`` (an int in ``[0, max_delay]``, may be
        traced; a negative one keeps the random draw) instead of a random one; the random draw still
        consumes its key, so the rest of the episode sees the same random numbers. Used by the
        evaluation suite's latency condition."""
        new = copy.copy(self)
        new.fixed_delay = delay
        return new

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        return _extend_schema(self.env.schema, "teacher_only", self.obs_field, FieldSpec((1,)))

    def _with_delay_obs(self, state: EnvState, delay: jax.Array) -> EnvState:
        value = (delay.astype(jnp.float32) / self.max_delay).reshape(1)
        return state.replace(obs={**state.obs, self.obs_field: value})

    def reset(self, key: jax.Array) -> EnvState:
        k_delay, k_env = jax.random.split(key)
        delay = jax.random.randint(k_delay, (), self.min_delay, self.max_delay + 1)
        if self.fixed_delay is not None:
            fixed = jnp.asarray(self.fixed_delay, delay.dtype)
            delay = jnp.where(fixed >= 0, jnp.minimum(fixed, self.max_delay), delay)
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
        return add_wrapper_entry(
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
        self.scale: Any = 1.0  # see with_scale

    def with_scale(self, factor: Any) -> "SensorNoise":
        """A copy whose noise is ``factor`` times the declared standard deviations (may be traced), from
        the same random numbers. Used by the evaluation suite's sensor-noise condition."""
        new = copy.copy(self)
        new.scale = factor
        return new

    def _noisy(self, state: EnvState) -> EnvState:
        if not self.stds:
            return state
        rng, eps = hash_normal(state.rng, self._total)
        eps = eps * (self._std_vec if isinstance(self.scale, float) and self.scale == 1.0 else self._std_vec * self.scale)
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
        return add_wrapper_entry(self.env.fingerprint(), {"type": "SensorNoise", "std": dict(sorted(self.stds.items()))})


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

    ``teacher_reads=False`` lists the field in the schema's ``teacher_ignores``: the student
    reads it, the teacher actor does not (a teacher that reads the exact state has no use for a
    history that estimates it; Lee et al. 2020's teacher reads none).
    """

    def __init__(
        self,
        env: Env,
        fields: Sequence[str],
        length: int,
        include_actions: bool = True,
        fill: str = "first",
        obs_field: str = "history",
        teacher_reads: bool = True,
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
        if not isinstance(teacher_reads, bool):  # bool("no") would pass silently
            raise ValueError(f"ObservationHistory: teacher_reads (the history_for_teacher override) must be true or "
                             f"false, got {teacher_reads!r}")
        self.teacher_reads = teacher_reads
        specs = schema.field_specs
        self._row_size = sum(math.prod(specs[f].shape) for f in fields) + (env.action_size if include_actions else 0)

    @property
    def row_size(self) -> int:
        return self._row_size

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        schema = _extend_schema(
            self.env.schema, "student_obs", self.obs_field, FieldSpec((self.length, self._row_size))
        )
        if self.teacher_reads:
            return schema
        return dataclasses.replace(schema, teacher_ignores=schema.teacher_ignores + (self.obs_field,))

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
        return add_wrapper_entry(
            self.env.fingerprint(),
            {
                "type": "ObservationHistory",
                "fields": list(self.fields),
                "length": self.length,
                "include_actions": self.include_actions,
                "fill": self.fill,
                # Only when off: earlier runs' fingerprints stay as they were.
                **({} if self.teacher_reads else {"teacher_reads": False}),
            },
        )

"""The environment contract: Brax-style ``reset``/``step`` over named observations.

Every environment in distill_jax is a *single-instance*, pure description of a
task: ``reset(key) -> EnvState`` and ``step(state, action) -> EnvState`` act on
one environment (no batch axis) and are made batched by ``jax.vmap`` inside the
wrappers. ``EnvState.obs`` is a ``dict[str, Array]`` whose keys are exactly the
env's :class:`~distill_jax.schema.ObservationSchema` fields.

Signals that invalid-step masks and GAE need are explicit fields rather than
entries of an untyped ``info`` dict:

* ``terminated`` – 1.0 when the episode ended in a failure / absorbing state
  (a fall): no bootstrapping from the next state.
* ``truncated``  – 1.0 when the episode was cut by the time limit: the value of
  the next state *is* bootstrapped.
* ``first``      – 1.0 when ``obs`` is the first observation of an episode
  (right after a reset or an automatic reset).

All flags are float32 scalars (per environment) so they can be used directly as
multiplicative masks.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from distill_jax.hashing import fingerprint_hash  # noqa: F401  (re-exported: tasks import it from here)
from distill_jax.schema import FieldSpec, ObservationSchema

Observation = dict[str, jax.Array]


@struct.dataclass
class EnvState:
    """State of one environment (or a batch of them, with leading batch axes).

    Attributes:
      physics: simulator state (``mjx.Data`` or a Brax pipeline state).
      obs: named observation fields, ``{name: [*field_shape]}``.
      reward: scalar reward of the step that produced this state.
      terminated: 1.0 if that step ended the episode in failure.
      truncated: 1.0 if that step hit the time limit (and did not fail).
      first: 1.0 if ``obs`` is the first observation of an episode.
      params: randomised physical parameters of this episode, ``{name: array}``
        (empty without domain randomisation); fixed within an episode.
      rng: PRNG key owned by this environment (noise, pushes, auto-reset).
      info: task-specific carried values (step counter, command, last action…).
      metrics: per-step diagnostics (reward terms…), all scalars.
    """

    physics: Any
    obs: Observation
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    first: jax.Array
    rng: jax.Array
    params: dict[str, jax.Array] = struct.field(default_factory=dict)
    info: dict[str, Any] = struct.field(default_factory=dict)
    metrics: dict[str, jax.Array] = struct.field(default_factory=dict)

    @property
    def done(self) -> jax.Array:
        """1.0 when the episode ended for any reason (Brax's ``done``)."""
        return jnp.maximum(self.terminated, self.truncated)


class Env(abc.ABC):
    """A single-instance task with named observations (Brax ``Env``-compatible).

    Subclasses implement :meth:`reset`, :meth:`step`, :attr:`action_size`,
    :attr:`schema` and :meth:`fingerprint`. ``observation_size`` (a dict of
    per-field shapes) is derived from the schema's field specs.
    """

    name: str = "env"
    version: str = "0"

    @abc.abstractmethod
    def reset(self, key: jax.Array) -> EnvState:
        """Starts a new episode. ``key``: PRNG key. Returns an unbatched state."""

    @abc.abstractmethod
    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        """Advances one control step. ``action``: ``[action_size]`` in [-1, 1]."""

    @property
    @abc.abstractmethod
    def action_size(self) -> int:
        """Length of the action vector (actions are in [-1, 1])."""

    @property
    @abc.abstractmethod
    def schema(self) -> ObservationSchema:
        """Which observation fields each role may read, with per-field specs."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able description of exactly what is simulated.

        Must include ``name``, ``version``, ``reward_terms`` (name -> weight),
        ``reset_distribution``, ``randomization`` (ranges) and ``model_hash``
        (a hash of the MJCF). Wrappers extend it.
        """

    @property
    def observation_size(self) -> dict[str, tuple[int, ...]]:
        return {name: spec.shape for name, spec in self.schema.fields}

    @property
    def backend(self) -> str:
        return "mjx"

    @property
    def unwrapped(self) -> "Env":
        return self

    @property
    def episode_length(self) -> int | None:
        """Time limit in control steps, if one is in force (set by TimeLimit)."""
        return None


class Wrapper(Env):
    """Delegates everything to ``env``; subclasses override what they change."""

    def __init__(self, env: Env):
        self.env = env

    def reset(self, key: jax.Array) -> EnvState:
        return self.env.reset(key)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        return self.env.step(state, action)

    @property
    def action_size(self) -> int:
        return self.env.action_size

    @property
    def schema(self) -> ObservationSchema:
        return self.env.schema

    def fingerprint(self) -> dict[str, Any]:
        return self.env.fingerprint()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.env.name

    @property
    def version(self) -> str:  # type: ignore[override]
        return self.env.version

    @property
    def backend(self) -> str:
        return self.env.backend

    @property
    def unwrapped(self) -> Env:
        return self.env.unwrapped

    @property
    def episode_length(self) -> int | None:
        return self.env.episode_length

    def __getattr__(self, name: str) -> Any:
        # Reached only for attributes the wrapper lacks: expose the inner env's.
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


def add_wrapper_entry(fp: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of the fingerprint ``fp`` with ``entry`` appended to its ``"wrappers"`` list (innermost first)."""
    fp = dict(fp)
    fp["wrappers"] = list(fp.get("wrappers", [])) + [entry]
    return fp


def field_specs_from_obs(obs: Observation) -> dict[str, FieldSpec]:
    """Per-field specs inferred from one unbatched observation dict."""
    return {k: FieldSpec(tuple(int(d) for d in v.shape), str(v.dtype)) for k, v in obs.items()}


def with_inferred_specs(schema: ObservationSchema, env_reset, key=None) -> ObservationSchema:
    """Attaches field specs to ``schema`` by abstractly evaluating ``env_reset``.

    Uses ``jax.eval_shape`` so no physics is run.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    state = jax.eval_shape(env_reset, key)
    specs = field_specs_from_obs(state.obs)
    return dataclasses.replace(schema, fields=tuple(specs.items()))

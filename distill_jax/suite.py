"""The perturbation suite: named conditions with a strength axis, one program for all of them.

The deployment claim is only as good as the distribution it is tested on. Each task declares named
conditions (:data:`SUITES`): a physical parameter pinned to a value (a pole three times heavier,
slippery feet), more sensor noise, a command delay, velocity kicks. Teacher and student are scored
on every ``(condition, strength)`` point with **common random numbers**: the same panel reset keys,
the same noise stream and the same kick schedule (both come from the episode's key, never from
the actions), so the two policies meet identical disturbances.

A condition is data, not a new program: :class:`Perturbation` holds its knobs as arrays (sampling
bounds of the randomised parameters, a noise multiplier, a command delay, a kick speed), and
:func:`perturbed` rebuilds the task's wrapper stack around them inside a trace. Every condition
has the same structure, so the evaluation vmaps one jitted program over conditions (and members).
A point whose strength lies outside what training covered is marked ``in_training: false``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax.envs.base import Env, EnvState, Wrapper, add_wrapper_entry
from distill_jax.envs.hash_prng import hash_fold
from distill_jax.envs.wrappers import ActionLatency, DomainRandomization, SensorNoise


class SuiteError(ValueError):
    """A suite request the task cannot serve (unknown condition, strength out of range, no suite)."""


class Perturbation(NamedTuple):
    """One condition's knobs (unbatched; a stack of them has a leading condition axis ``[C]``).

    Attributes:
      low, high: ``[P]`` bounds the randomised parameters are drawn from (the training ranges
        where the condition leaves them; equal bounds pin a parameter).
      noise_scale: ``[]`` multiplier of the declared sensor-noise standard deviations.
      delay: ``[]`` int32 command delay in control steps (-1: as trained).
      kick: ``[]`` speed of the velocity kicks (m/s on the task's kicked dofs; 0: none).
      tile: ``[2]`` int32 tile ``(type index, level)`` every episode starts on, for a task that
        spawns on a tile map (its ``with_tile``); -1 in either: drawn as in training.
    """

    low: Any
    high: Any
    noise_scale: Any
    delay: Any
    kick: Any
    tile: Any = None


@dataclasses.dataclass(frozen=True)
class Condition:
    """A named perturbation with a strength axis.

    Attributes:
      name: the condition's name (``pole_mass``).
      knob: what the strength sets: ``"nominal"``, ``"param:<range name>"`` (both bounds of that
        randomised parameter, in its own units: a factor for scale ranges, a value for absolute
        ones), ``"noise"`` (noise multiplier), ``"delay"`` (control steps) or ``"kick"`` (m/s).
      strengths: the default points on the axis.
      limits: the strengths a user may ask for (``(low, high)``, inclusive).
      unit: the strength's unit, in words.

    The ``"tile_type"`` and ``"tile_level"`` knobs pin the tile every episode starts on (strength:
    the type's index or the level); empty ``strengths`` there means every index the env's map has.
    """

    name: str
    knob: str
    strengths: tuple[float, ...]
    limits: tuple[float, float]
    unit: str


@dataclasses.dataclass(frozen=True)
class TaskSuite:
    """A task's declared conditions and how its disturbances are applied.

    Attributes:
      conditions: the named conditions (the first is ``nominal``).
      kick_dofs: ``qvel`` indices a velocity kick pushes (a random direction among them).
      kick_interval: control steps between kicks (the first at half the interval).
      max_delay: the longest command delay a condition may ask for (the delay buffer's size).
    """

    conditions: tuple[Condition, ...]
    kick_dofs: tuple[int, ...]
    kick_interval: int
    max_delay: int = 3


NOMINAL = Condition("nominal", "nominal", (1.0,), (1.0, 1.0), "training distribution")

# The cart-pole's conditions (cartpole_hidden adds its hidden slope).
_CARTPOLE_CONDITIONS = (
    NOMINAL,
    Condition("pole_mass", "param:pole_mass", (0.5, 1.0, 2.0, 3.0), (0.1, 5.0), "× nominal mass"),
    Condition("pole_length", "param:pole_length", (0.6, 1.0, 1.4, 1.8), (0.3, 2.5), "× nominal length"),
    Condition("cart_damping", "param:cart_damping", (0.0, 1.0, 2.0), (0.0, 5.0), "N·s/m"),
    Condition("motor_gain", "param:motor_gain", (0.4, 0.6, 1.0, 1.4), (0.1, 3.0), "× nominal gain"),
    Condition("sensor_noise", "noise", (1.0, 2.0, 4.0), (0.0, 10.0), "× declared noise std"),
    Condition("latency", "delay", (0.0, 1.0, 2.0), (0.0, 3.0), "control steps"),
    Condition("push", "kick", (0.0, 0.5, 1.0), (0.0, 3.0), "m/s cart kick every 50 steps"),
)

_QUADRUPED_CONDITIONS = (
    NOMINAL,
    Condition("friction", "param:friction", (0.3, 0.5, 0.875, 1.25), (0.05, 2.0), "foot friction coefficient"),
    Condition("payload", "param:trunk_mass", (0.8, 1.0, 1.2, 1.5), (0.5, 3.0), "× nominal trunk mass"),
    Condition("motor_strength", "param:motor_strength", (0.7, 0.9, 1.0, 1.1), (0.3, 2.0), "× nominal kp"),
    Condition("sensor_noise", "noise", (1.0, 2.0, 4.0), (0.0, 10.0), "× declared noise std"),
    Condition("latency", "delay", (0.0, 1.0, 2.0, 3.0), (0.0, 3.0), "control steps"),
    Condition("push", "kick", (0.0, 0.5, 1.0, 1.5), (0.0, 3.0), "m/s base kick every 100 steps"),
)

SUITES: dict[str, TaskSuite] = {
    "cartpole": TaskSuite(conditions=_CARTPOLE_CONDITIONS, kick_dofs=(0,), kick_interval=50),
    "cartpole_hidden": TaskSuite(
        conditions=_CARTPOLE_CONDITIONS + (
            Condition("slope", "param:slope", (0.0, 0.1, 0.2, 0.3), (-0.5, 0.5), "rad track slope (down towards +x)"),),
        kick_dofs=(0,),
        kick_interval=50,
    ),
    "quadruped_rough": TaskSuite(conditions=_QUADRUPED_CONDITIONS, kick_dofs=(0, 1), kick_interval=100),
    # The tile map's: every episode on one tile type (each in turn), or at one level (each in turn).
    "quadruped_terrain": TaskSuite(
        conditions=_QUADRUPED_CONDITIONS + (
            Condition("terrain_type", "tile_type", (), (0, 63), "tile type index (the map's terrain.types order)"),
            Condition("terrain_level", "tile_level", (), (0, 63), "index, 0 = easiest"),
        ),
        kick_dofs=(0, 1),
        kick_interval=100,
    ),
}


class SuitePoint(NamedTuple):
    """One ``(condition, strength)`` of a suite, resolved against an env."""

    condition: str
    strength: float
    unit: str
    in_training: bool
    perturbation: Perturbation  # numpy values


# ------------------------------------------------------------------ the stack
def _chain(env: Env) -> list[Env]:
    """The wrappers of ``env`` from the outside in, ending with the task."""
    out = [env]
    while isinstance(out[-1], Wrapper):
        out.append(out[-1].env)
    return out


def _find(env: Env, kind: type) -> Any:
    return next((e for e in _chain(env) if isinstance(e, kind)), None)


class CommandDelay(Wrapper):
    """Applies the command of ``delay`` control steps ago (zeros before the first); no observation
    field, so the perturbed env keeps the trained schema. For tasks trained without latency."""

    def __init__(self, env: Env, max_delay: int, delay: Any):
        super().__init__(env)
        self.max_delay, self.delay = int(max_delay), delay

    def reset(self, key: jax.Array) -> EnvState:
        state = self.env.reset(key)
        buffer = jnp.zeros((self.max_delay, self.env.action_size), jnp.float32)
        return state.replace(info={**state.info, "suite/command_buffer": buffer})

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        history = jnp.concatenate([state.info["suite/command_buffer"], jnp.asarray(action, jnp.float32)[None]])
        delay = jnp.clip(jnp.asarray(self.delay, jnp.int32), 0, self.max_delay)
        nxt = self.env.step(state, history[self.max_delay - delay])
        return nxt.replace(info={**nxt.info, "suite/command_buffer": history[1:]})

    def fingerprint(self) -> dict[str, Any]:
        return add_wrapper_entry(self.env.fingerprint(), {"type": "CommandDelay", "max_delay": self.max_delay})


class VelocityKicks(Wrapper):
    """Adds ``kick`` m/s to the task's ``dofs`` velocities every ``interval`` control steps, in a
    direction drawn from the episode's random stream (the same for every policy on the same panel
    seed). Needs an MJX task (``state.physics`` an ``mjx.Data``) under a ``TimeLimit``."""

    def __init__(self, env: Env, dofs: tuple[int, ...], interval: int, kick: Any):
        super().__init__(env)
        self.dofs, self.interval, self.kick = tuple(dofs), int(interval), kick

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        nxt = self.env.step(state, action)
        due = (nxt.info["steps"] % self.interval) == self.interval // 2
        raw = jax.random.key_data(hash_fold(nxt.rng, 7919)) if jnp.issubdtype(nxt.rng.dtype, jax.dtypes.prng_key) \
            else hash_fold(nxt.rng, 7919)
        angle = (raw[..., 0] >> 8).astype(jnp.float32) * (2.0 * jnp.pi / 2.0**24)
        direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)])[: len(self.dofs)]
        if len(self.dofs) == 1:
            direction = jnp.sign(direction)
        dv = jnp.where(due, jnp.asarray(self.kick, jnp.float32), 0.0) * direction
        qvel = nxt.physics.qvel.at[jnp.asarray(self.dofs)].add(dv)
        return nxt.replace(physics=nxt.physics.replace(qvel=qvel))


def tile_task(env: Env) -> Any:
    """The task under ``env``'s wrappers if it can pin the tile its episodes start on (``with_tile``;
    its ``panel_groups`` name the map's tile types and levels)."""
    task = _chain(env)[-1]
    return task if hasattr(type(task), "with_tile") else None


def _with_tile(env: Env, tile: Any) -> Env:
    """``env`` with its task's start tile pinned to ``tile`` (wrappers copied around it)."""
    if not isinstance(env, Wrapper):
        return env.with_tile(tile)
    new = copy.copy(env)
    new.env = _with_tile(env.env, tile)
    return new


def perturbed(env: Env, p: Perturbation, suite: TaskSuite) -> Env:
    """``env``'s wrapper stack rebuilt around the knobs of ``p`` (arrays, may be traced).

    Domain randomisation draws from ``p``'s bounds, sensor noise is scaled, a trained
    :class:`~distill_jax.envs.wrappers.ActionLatency` gets ``p.delay`` (else a
    :class:`CommandDelay` sits just outside the physics, inside any history, so histories record
    the commanded actions as on a robot), and :class:`VelocityKicks` wraps the whole.
    """
    has_latency = _find(env, ActionLatency) is not None
    if p.tile is not None and tile_task(env) is not None:
        env = _with_tile(env, p.tile)

    def rebuild(e: Env) -> Env:
        if isinstance(e, DomainRandomization) or not isinstance(e, Wrapper):
            core = e.with_sampling_bounds(p.low, p.high) if isinstance(e, DomainRandomization) else e
            return core if has_latency else CommandDelay(core, suite.max_delay, p.delay)
        new = copy.copy(e)
        new.env = rebuild(e.env)
        if isinstance(new, SensorNoise):
            new = new.with_scale(p.noise_scale)
        elif isinstance(new, ActionLatency):
            new = new.with_delay(p.delay)
        return new

    return VelocityKicks(rebuild(env), suite.kick_dofs, suite.kick_interval, p.kick)


# --------------------------------------------------------------- resolution
def declared(env_name: str) -> TaskSuite | None:
    """The suite ``env_name`` declares, if any."""
    return SUITES.get(env_name)


def nominal(env: Env) -> Perturbation:
    """The knobs of the training distribution (numpy)."""
    dr = _find(env, DomainRandomization)
    low = np.asarray(dr.randomizer.low, np.float32) if dr is not None else np.zeros(0, np.float32)
    high = np.asarray(dr.randomizer.high, np.float32) if dr is not None else np.zeros(0, np.float32)
    return Perturbation(low, high, np.float32(1.0), np.int32(-1), np.float32(0.0), np.full(2, -1, np.int32))


def _point(env: Env, condition: Condition, strength: float) -> SuitePoint:
    base = nominal(env)
    knob = condition.knob
    if knob == "nominal":
        return SuitePoint(condition.name, strength, condition.unit, True, base)
    if knob.startswith("param:"):
        name = knob.split(":", 1)[1]
        dr = _find(env, DomainRandomization)
        names = () if dr is None else dr.randomizer.names
        if name not in names:
            raise SuiteError(f"suite condition {condition.name!r} pins the randomised parameter {name!r}, but the "
                             f"env randomises {list(names)} (randomize=false?)")
        i = names.index(name)
        low, high = base.low.copy(), base.high.copy()
        inside = bool(base.low[i] - 1e-6 <= strength <= base.high[i] + 1e-6)
        low[i] = high[i] = strength
        return SuitePoint(condition.name, strength, condition.unit, inside, base._replace(low=low, high=high))
    if knob == "noise":
        if _find(env, SensorNoise) is None:
            raise SuiteError(f"suite condition {condition.name!r} scales sensor noise, but the env adds none")
        return SuitePoint(condition.name, strength, condition.unit, strength == 1.0,
                          base._replace(noise_scale=np.float32(strength)))
    if knob == "delay":
        latency = _find(env, ActionLatency)
        trained = range(latency.min_delay, latency.max_delay + 1) if latency is not None else range(0, 1)
        if latency is not None and strength > latency.max_delay:
            raise SuiteError(f"suite condition {condition.name!r}: a delay of {strength:g} steps exceeds the env's "
                             f"max_action_delay={latency.max_delay}")
        return SuitePoint(condition.name, strength, condition.unit, int(strength) in trained,
                          base._replace(delay=np.int32(strength)))
    if knob in ("tile_type", "tile_level"):
        task = tile_task(env)
        if task is None:
            raise SuiteError(f"suite condition {condition.name!r} pins the start tile, but the env does not spawn on "
                             "a tile map")
        names = _tile_names(task)[knob]
        count = len(names)
        if strength != int(strength) or not 0 <= strength < count:
            raise SuiteError(f"suite condition {condition.name!r}: strength {strength:g} is not one of the map's "
                             f"{count} {'types' if knob == 'tile_type' else 'levels'} (0-{count - 1})")
        tile = base.tile.copy()
        tile[0 if knob == "tile_type" else 1] = int(strength)
        # A type's index means little in a table: the unit names it.
        unit = f"({names[int(strength)]})" if knob == "tile_type" else condition.unit
        return SuitePoint(condition.name, strength, unit, True, base._replace(tile=tile))
    if knob == "kick":
        return SuitePoint(condition.name, strength, condition.unit, strength == 0.0,
                          base._replace(kick=np.float32(strength)))
    raise SuiteError(f"suite condition {condition.name!r}: unknown knob {knob!r}")


def _tile_names(task: Any) -> dict[str, tuple[str, ...]]:
    """The names of a tile task's types and levels by knob (``tile_type``, ``tile_level``), in index order."""
    groups = task.panel_groups
    return {"tile_type": tuple(groups["terrain_type"]), "tile_level": tuple(groups["terrain_level"])}


def resolve(env: Env, env_name: str, conditions: tuple[str, ...] = (),
            strengths: tuple[tuple[str, tuple[float, ...]], ...] = ()) -> list[SuitePoint]:
    """The suite's points for ``env``: every declared condition (or those named in ``conditions``),
    at its declared strengths (or those ``strengths`` gives for it).

    Raises:
      SuiteError: the task declares no suite, an unknown condition name, a strength outside the
        condition's declared limits or not an integer for a delay, or a condition the env cannot
        serve (a parameter it does not randomise, noise it does not add). One line, naming it.
    """
    suite = declared(env_name)
    if suite is None:
        raise SuiteError(f"the task {env_name!r} declares no perturbation suite (tasks with one: {sorted(SUITES)})")
    by_name = {c.name: c for c in suite.conditions}
    for name in (*conditions, *(n for n, _ in strengths)):
        if name not in by_name:
            raise SuiteError(f"unknown suite condition {name!r} for {env_name!r}; declared: {list(by_name)}")
    chosen = [by_name[n] for n in conditions] if conditions else list(suite.conditions)
    asked = dict(strengths)
    points = []
    for condition in chosen:
        default = condition.strengths
        if not default and condition.knob in ("tile_type", "tile_level") and tile_task(env) is not None:
            default = tuple(float(i) for i in range(len(_tile_names(tile_task(env))[condition.knob])))  # all of them
        values = tuple(float(v) for v in asked.get(condition.name, default))
        low, high = condition.limits
        for value in values:
            if not low <= value <= high:
                raise SuiteError(f"suite condition {condition.name!r}: strength {value:g} is outside its declared "
                                 f"range [{low:g}, {high:g}] ({condition.unit})")
            if condition.knob == "delay" and value != int(value):
                raise SuiteError(f"suite condition {condition.name!r}: a delay is a whole number of steps, got {value:g}")
            points.append(_point(env, condition, value))
    return points


def stack(points: list[SuitePoint]) -> Perturbation:
    """The points' perturbations stacked on a leading condition axis ``[C]`` (jax arrays)."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *[p.perturbation for p in points])

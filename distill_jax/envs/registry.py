"""Named, fully wrapped single-instance environments.

``get_env(name, **overrides)`` builds the task and its default wrapper stack::

    task -> DomainRandomization -> SensorNoise -> ObservationHistory -> TimeLimit

(batch it with ``VmapAutoReset(env, num_envs)``). Overrides common to the
built-in tasks:

=====================  ====================================================
``episode_length``     TimeLimit in control steps
``randomize``          False drops DomainRandomization (no ``dyn_params``)
``ranges``             a sequence of ``ParamRange`` replacing the defaults
``noise_std``          float (every default noisy field) or ``{field: std}``
``history_length``     rows of the ``history`` field; 0 drops the wrapper
``history_fields``     deployable fields stacked in ``history``
``history_actions``    include past actions in ``history``
``history_fill``       ``"first"`` or ``"zeros"`` (see ObservationHistory)
=====================  ====================================================

Defaults per task:

* ``cartpole``: episode 250 steps (10 s); randomised pole mass and length, cart
  damping, motor gain; noise std 0.01 on ``cart_pos`` and ``pole_angle``;
  history of 8 rows (x, cos θ, sin θ, action).
* ``cartpole_hidden``: the cart-pole on a hidden slope (±0.2 rad) with the same
  randomisation and noise, history of 16 rows; see
  :mod:`distill_jax.envs.cartpole_hidden`.
* ``brax_inverted_pendulum``: episode 1000; randomised pole mass, slider
  damping, motor gain; no noise; history of 4 rows (proprio, action).
* ``brax_ant``: episode 1000; randomised torso mass, friction, motor gain; no
  noise; history of 4 rows (proprio, action).
* ``quadruped_rough``: see :mod:`distill_jax.envs.quadruped.factory`.
* ``quadruped_terrain``: the quadruped's stack around the tile-terrain task with a
  height scan; see :mod:`distill_jax.envs.quadruped.terrain_task`.

``cartpole`` also accepts every :class:`~distill_jax.envs.cartpole.CartpoleConfig`
field; Brax tasks accept ``brax_kwargs`` (a dict for ``get_environment``).

Entries may be registered lazily by import path (``"module:function"``); such a
module is imported only when its env is requested, so importing this module
never imports Brax, Playground or task modules under development.

An env needs no registration to be used: ``get_env("package.module:factory",
**overrides)`` imports ``package.module`` and returns ``factory(**overrides)``,
which must be an :class:`~distill_jax.envs.base.Env` (so ``--env
my_pkg.tasks:make_task`` trains a task that lives outside this package).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from distill_jax.envs.base import Env

Factory = Callable[..., Env]


@dataclasses.dataclass(frozen=True)
class _Entry:
    factory: Factory | str
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_env(name: str, factory: Factory | str, description: str = "") -> None:
    """Registers ``factory(**overrides) -> Env`` (or its ``"module:function"`` path)."""
    if name in _REGISTRY:
        raise ValueError(f"environment {name!r} is already registered")
    if isinstance(factory, str) and ":" not in factory:
        raise ValueError(f"a lazy factory path must look like 'package.module:function', got {factory!r}")
    _REGISTRY[name] = _Entry(factory, description)


IMPORT_PATH_FORM = "'package.module:factory' (a function returning an Env)"


def list_envs() -> list[str]:
    """The registered names accepted by :func:`get_env`, sorted.

    :func:`get_env` also accepts any ``"package.module:factory"`` import path,
    which this list cannot enumerate.
    """
    return sorted(_REGISTRY)


def describe_envs() -> dict[str, str]:
    return {n: _REGISTRY[n].description for n in list_envs()}


def _import_factory(path: str, env_name: str) -> Factory:
    """The callable named by ``path`` (``"package.module:function"``) for the env ``env_name``.

    Raises:
      ValueError: naming the module that cannot be imported, or the attribute
        that is missing or not callable.
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"environment {env_name!r}: an import path must look like {IMPORT_PATH_FORM}, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"environment {env_name!r}: cannot import module {module_name!r} "
                         f"({type(e).__name__}: {e})") from e
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"environment {env_name!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ValueError(f"environment {env_name!r}: {path!r} is not callable ({type(factory).__name__} {factory!r})")
    return factory


def get_env(name: str, **overrides: Any) -> Env:
    """The fully wrapped single-instance env ``name`` with ``overrides`` applied.

    Args:
      name: a registered name (:func:`list_envs`) or an import path
        ``"package.module:factory"``; ``factory(**overrides)`` must return an
        :class:`~distill_jax.envs.base.Env`.

    Raises:
      ValueError: unknown ``name`` (listing the valid ones), an import path
        whose module cannot be imported or lacks the factory, a factory that
        returns no ``Env``, or an unknown override (naming it and the valid ones).
    """
    if name in _REGISTRY:
        factory = _REGISTRY[name].factory
        if isinstance(factory, str):
            factory = _import_factory(factory, name)
    elif ":" in name:
        factory = _import_factory(name, name)
    else:
        raise ValueError(f"unknown environment {name!r}; valid names: {list_envs()}, or an import path {IMPORT_PATH_FORM}")
    env = factory(**overrides)
    if not isinstance(env, Env):
        raise ValueError(f"environment {name!r}: the factory returned a {type(env).__name__}, not a "
                         "distill_jax.envs.base.Env")
    return env


# -------------------------------------------------------------- the stack
_STACK_DEFAULTS = {
    "episode_length": None,
    "randomize": True,
    "ranges": None,
    "noise_std": None,
    "history_length": 0,
    "history_fields": None,
    "history_actions": True,
    "history_fill": "first",
    "history_for_teacher": True,
    "max_action_delay": 0,
}


def _check_overrides(env_name: str, overrides: Mapping[str, Any], valid: Sequence[str]) -> None:
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for environment {env_name!r}; valid overrides: {sorted(valid)}")


def wrap_task(
    task: Env,
    *,
    episode_length: int,
    ranges: Sequence[Any] | None,
    noise_std: Mapping[str, float] | None,
    history_length: int,
    history_fields: Sequence[str],
    history_actions: bool = True,
    history_fill: str = "first",
    history_for_teacher: bool = True,
    max_action_delay: int = 0,
) -> Env:
    """Applies the default stack (DR -> [latency] -> noise -> history -> TimeLimit) to ``task``."""
    from distill_jax.envs.wrappers import (
        ActionLatency,
        DomainRandomization,
        ObservationHistory,
        SensorNoise,
        TimeLimit,
    )

    env: Env = task
    if ranges:
        env = DomainRandomization(env, ranges)
    if max_action_delay:
        env = ActionLatency(env, max_action_delay)
    noise_std = {k: v for k, v in (noise_std or {}).items() if v}
    if noise_std:
        env = SensorNoise(env, noise_std)
    if history_length:
        env = ObservationHistory(env, history_fields, history_length, include_actions=history_actions, fill=history_fill,
                                 teacher_reads=history_for_teacher)
    return TimeLimit(env, episode_length)


def _noise_dict(noise_std: Any, default_fields: Sequence[str]) -> dict[str, float]:
    if noise_std is None:
        return {}
    if isinstance(noise_std, Mapping):
        return {k: float(v) for k, v in noise_std.items()}
    return {f: float(noise_std) for f in default_fields}


# -------------------------------------------------------------- cartpole
CARTPOLE_DEFAULTS = {
    "episode_length": 250,
    "noise_std": 0.01,
    "history_length": 8,
}


def make_cartpole(**overrides: Any) -> Env:
    """Cart-pole balance with randomised dynamics, noisy positions and history."""
    from distill_jax.envs.cartpole import CARTPOLE_RANGES, Cartpole, CartpoleConfig

    config_fields = [f.name for f in dataclasses.fields(CartpoleConfig)]
    _check_overrides("cartpole", overrides, list(_STACK_DEFAULTS) + config_fields)
    s = {**_STACK_DEFAULTS, **CARTPOLE_DEFAULTS, **{k: v for k, v in overrides.items() if k in _STACK_DEFAULTS}}
    task_kw = {k: v for k, v in overrides.items() if k in config_fields and k != "episode_length"}
    task = Cartpole(episode_length=s["episode_length"], **task_kw)
    ranges = (s["ranges"] if s["ranges"] is not None else CARTPOLE_RANGES) if s["randomize"] else None
    return wrap_cartpole_task(task, s, ranges)


def wrap_cartpole_task(task: Env, settings: Mapping[str, Any], ranges: Any) -> Env:
    """A cart-pole-family ``task`` under the default stack, from the resolved stack ``settings``
    (``_STACK_DEFAULTS``' keys); noise and history default to ``cart_pos`` and ``pole_angle``."""
    s = settings
    return wrap_task(
        task,
        episode_length=s["episode_length"],
        ranges=ranges,
        noise_std=_noise_dict(s["noise_std"], ("cart_pos", "pole_angle")),
        history_length=s["history_length"],
        history_fields=s["history_fields"] or ("cart_pos", "pole_angle"),
        history_actions=s["history_actions"],
        history_fill=s["history_fill"],
        history_for_teacher=s["history_for_teacher"],
        max_action_delay=s["max_action_delay"],
    )


# ------------------------------------------------------------------ brax
def _brax_ranges(env_name: str):
    from distill_jax.envs.randomization import ParamRange

    if env_name == "inverted_pendulum":
        return (
            ParamRange("pole_mass", "body_mass:pole", 0.5, 2.0),
            ParamRange("slider_damping", "dof_damping:slider", 0.5, 2.0),
            ParamRange("motor_gain", "actuator_gain:slide", 0.7, 1.3),
        )
    if env_name == "ant":
        return (
            ParamRange("torso_mass", "body_mass:torso", 0.7, 1.5),
            ParamRange("friction", "geom_friction:*", 0.5, 1.5),
            ParamRange("motor_gain", "actuator_gain:*", 0.8, 1.2),
        )
    raise ValueError(f"no default randomisation ranges for brax env {env_name!r}")


def _make_brax(env_name: str, default_episode_length: int, **overrides: Any) -> Env:
    from distill_jax.envs.brax_adapter import BraxEnvAdapter

    registered = f"brax_{env_name}"
    _check_overrides(registered, overrides, list(_STACK_DEFAULTS) + ["brax_kwargs"])
    s = {
        **_STACK_DEFAULTS,
        "episode_length": default_episode_length,
        "noise_std": 0.0,
        "history_length": 4,
        **{k: v for k, v in overrides.items() if k in _STACK_DEFAULTS},
    }
    task = BraxEnvAdapter(env_name, **dict(overrides.get("brax_kwargs") or {}))
    ranges = (s["ranges"] if s["ranges"] is not None else _brax_ranges(env_name)) if s["randomize"] else None
    noise = _noise_dict(s["noise_std"], ("proprio",))
    return wrap_task(
        task,
        episode_length=s["episode_length"],
        ranges=ranges,
        noise_std=noise,
        history_length=s["history_length"],
        history_fields=s["history_fields"] or ("proprio",),
        history_actions=s["history_actions"],
        history_fill=s["history_fill"],
        history_for_teacher=s["history_for_teacher"],
        max_action_delay=s["max_action_delay"],
    )


def make_brax_inverted_pendulum(**overrides: Any) -> Env:
    """Brax ``inverted_pendulum`` (MJX) with randomised pole mass, damping and gain."""
    return _make_brax("inverted_pendulum", 1000, **overrides)


def make_brax_ant(**overrides: Any) -> Env:
    """Brax ``ant`` (MJX) with randomised torso mass, friction and motor gain."""
    return _make_brax("ant", 1000, **overrides)


register_env("cartpole", make_cartpole, "cart-pole balance from a perturbed start (fast on CPU)")
register_env("cartpole_hidden", "distill_jax.envs.cartpole_hidden:make_cartpole_hidden",
             "cart-pole on a hidden slope: privilege matters (fast on CPU)")
register_env("brax_inverted_pendulum", make_brax_inverted_pendulum, "Brax inverted_pendulum via BraxEnvAdapter")
register_env("brax_ant", make_brax_ant, "Brax ant via BraxEnvAdapter")
register_env(
    "quadruped_rough",
    "distill_jax.envs.quadruped.factory:make_quadruped_rough",
    "quadruped locomotion on rough terrain (imported on first use)",
)
register_env(
    "quadruped_terrain",
    "distill_jax.envs.quadruped.terrain_task:make_quadruped_terrain",
    "quadruped on the tiled curriculum terrain with a noisy height scan for the student (imported on first use)",
)

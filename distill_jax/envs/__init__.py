"""Environments: the env contract, wrappers, tasks, adapters and the registry.

Importing this package is cheap: it builds no model and compiles nothing.
Tasks and adapters (``Cartpole``, ``BraxEnvAdapter``, ``PlaygroundEnvAdapter``)
are imported on first attribute access.

Typical use::

    from distill_jax.envs import get_env, VmapAutoReset
    env = VmapAutoReset(get_env("cartpole"), num_envs=256)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    state = jax.jit(env.step)(state, jnp.zeros((256, env.action_size)))
"""

from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.envs.base import Env, EnvState, Wrapper
from distill_jax.envs.randomization import ModelRandomizer, ParamRange
from distill_jax.envs.registry import describe_envs, get_env, list_envs, register_env
from distill_jax.envs.wrappers import (
    ActionLatency,
    DomainRandomization,
    ObservationHistory,
    SensorNoise,
    TimeLimit,
)

_LAZY = {
    "Cartpole": "distill_jax.envs.cartpole",
    "CartpoleConfig": "distill_jax.envs.cartpole",
    "BraxEnvAdapter": "distill_jax.envs.brax_adapter",
    "PlaygroundEnvAdapter": "distill_jax.envs.playground_adapter",
}

__all__ = [
    "Env",
    "EnvState",
    "Wrapper",
    "ParamRange",
    "ModelRandomizer",
    "ActionLatency",
    "DomainRandomization",
    "ObservationHistory",
    "SensorNoise",
    "TimeLimit",
    "VmapAutoReset",
    "get_env",
    "list_envs",
    "describe_envs",
    "register_env",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'distill_jax.envs' has no attribute {name!r}")

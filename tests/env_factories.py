"""Env factories that live outside distill_jax, for ``get_env("env_factories:<name>")`` tests.

Not a test module (no ``test_`` prefix): tests put this folder on ``sys.path``.
"""

from __future__ import annotations

from typing import Any

from distill_jax.envs.cartpole import Cartpole
from distill_jax.envs.wrappers import TimeLimit

NOT_A_FUNCTION = 3


def make_bare_cartpole(episode_length: int = 100, **config: Any) -> TimeLimit:
    """The cart-pole task with only a time limit (no randomisation, noise or history)."""
    return TimeLimit(Cartpole(episode_length=episode_length, **config), episode_length)


def make_a_dict(**overrides: Any) -> dict[str, Any]:
    """A factory that returns something other than an Env."""
    return dict(overrides)

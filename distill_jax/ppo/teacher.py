"""The teacher phase: PPO on privileged observations, K seeds in one program.

``train_teacher`` builds the batched env and the asymmetric actor-critic from
the env's schema, initialises ``K`` independent :class:`TeacherState`s and runs
:func:`~distill_jax.ppo.update.train_step` through the shared outer loop
(:func:`distill_jax.loop.run_phase`: ``vmap`` over seeds, environments sharded
over devices, ``scan`` over iterations, non-finite guard).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

from distill_jax.config import PPOConfig
from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.envs.base import Env
from distill_jax.hyperparams import member_coefficients
from distill_jax.loop import init_per_seed, run_phase
from distill_jax.networks import TeacherNetworks, make_teacher_networks
from distill_jax.ppo.update import TeacherState, init_teacher, train_step


@dataclasses.dataclass
class TeacherResult:
    """What the teacher phase returns.

    Attributes:
      state: final :class:`TeacherState` with a leading seed axis ``[K]``.
      nets: the actor/critic modules (to apply ``state.params``).
      env: the batched env used for training.
      history: one row per iteration; per-seed values are lists ``[K]``.
    """

    state: TeacherState
    nets: TeacherNetworks
    env: Env
    history: list[dict[str, Any]]


class TeacherBuild(NamedTuple):
    """What the teacher phase trains with, built once (:func:`build_teacher`) and handed to
    :func:`train_teacher` and to whoever restores its checkpoints."""

    env: Env  # the task batched to config.num_envs with auto-reset
    nets: TeacherNetworks  # actor and asymmetric critic, built from the env's schema


def build_teacher(env: Env, config: PPOConfig) -> TeacherBuild:
    """The batched env and the networks the teacher phase of ``config`` uses on the unbatched ``env``."""
    return TeacherBuild(env=VmapAutoReset.for_phase(env, config),
                        nets=make_teacher_networks(env.schema, env.action_size, config.network))


def initial_teacher_states(
    batched_env: Env, nets: TeacherNetworks, config: PPOConfig, seed: int, num_seeds: int,
    sweep_points: list[dict[str, float]] | None = None,
) -> TeacherState:
    """Fresh :class:`TeacherState`s stacked on a leading member axis ``[G * K]``: ``num_seeds``
    seeds for each of the ``G`` sweep points (``{path relative to config: value}``; ``None``: one
    point, the config's own coefficients, so ``[K]``).

    Wrap in ``jax.eval_shape`` for a restore template without computing anything.
    """
    init = functools.partial(init_teacher, env=batched_env, nets=nets, config=config)
    return init_per_seed(init, seed, num_seeds, member_coefficients(config, sweep_points or [{}], num_seeds))


def train_teacher(
    env: Env,
    config: PPOConfig,
    *,
    seed: int = 0,
    num_seeds: int = 1,
    updates_per_call: int | None = None,
    devices: list | None = None,
    log_fn: Callable[[dict[str, Any]], None] | None = None,
    on_chunk: Callable[[TeacherState, int], None] | None = None,
    initial_state: TeacherState | None = None,
    build: TeacherBuild | None = None,
    sweep_points: list[dict[str, float]] | None = None,
) -> TeacherResult:
    """Trains ``num_seeds`` PPO teachers on ``env`` (single-instance, e.g. ``get_env(...)``).

    Args:
      env: the unbatched task; it is batched to ``config.num_envs`` here.
      config: PPO hyper-parameters; ``total_env_steps`` is per seed.
      seed: base seed; seed index ``k`` uses ``seed + k``.
      num_seeds: ``K`` independent teachers trained by ``vmap``.
      updates_per_call, devices, log_fn, on_chunk: see :func:`distill_jax.loop.run_phase`.
      initial_state: resume from this state instead of initialising.
      build: the batched env and networks, if the caller built them already
        (:func:`build_teacher` of the same ``env`` and ``config``).
      sweep_points: train every seed at each of these coefficient settings
        (``{path relative to config: value}``, e.g. ``[{"ent_coef": 0.0}, {"ent_coef": 0.01}]``),
        all in one program: the state's leading axis becomes ``[G * K]``, member ``g * K + k``.

    Raises:
      ConfigError: invalid sizes (also ``num_envs`` not divisible by the devices).
      NonFiniteError: NaN/Inf in observations, rewards, loss or parameters.
    """
    config.validate()
    batched_env, nets = build or build_teacher(env, config)
    if initial_state is None:
        initial_state = initial_teacher_states(batched_env, nets, config, seed, num_seeds, sweep_points)

    def step(state, frozen):
        del frozen
        return train_step(state, env=batched_env, nets=nets, config=config)

    state, history = run_phase(
        initial_state,
        step,
        total_updates=config.num_updates,
        batch_size=config.batch_size,
        num_envs=config.num_envs,
        updates_per_call=updates_per_call,
        devices=devices,
        log_fn=log_fn,
        on_chunk=on_chunk,
    )
    return TeacherResult(state=state, nets=nets, env=batched_env, history=history)

"""The distillation phase: a frozen teacher, a student built from deployable fields.

``distill_student`` takes a trained teacher (the result of the teacher phase,
or a restored checkpoint) and trains ``K`` students — student ``k`` learns from
teacher ``k`` — through the shared outer loop (:func:`distill_jax.loop.run_phase`).
No rewards enter the objective; episode returns are only logged.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax

from distill_jax.config import ConfigError, DistillConfig
from distill_jax.distill.student import Student, make_student
from distill_jax.distill.update import FrozenTeacher, StudentState, distill_step, init_student
from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.envs.base import Env
from distill_jax.loop import init_per_seed, run_phase


@dataclasses.dataclass
class DistillResult:
    """What the distillation phase returns (``state`` has a leading seed axis ``[K]``)."""

    state: StudentState
    student: Student
    env: Env
    history: list[dict[str, Any]]


def build_student(env: Env, config: DistillConfig, latent_size: int = 0) -> Student:
    """The student ``config`` describes; ``latent_size``: the teacher's latent, used if ``latent_coef > 0``."""
    return make_student(
        env.schema,
        env.action_size,
        kind=config.student_kind,
        hidden=config.student_hidden,
        gru_size=config.gru_size,
        activation=config.student_activation,
        student_fields=config.student_fields,
        latent_size=latent_size if config.latent_coef > 0 else 0,
    )


class DistillBuild(NamedTuple):
    """What the distillation phase trains with, built once (:func:`build_distillation`) and handed
    to :func:`distill_student` and to whoever restores its checkpoints."""

    env: Env  # the task batched to config.num_envs with auto-reset
    student: Student  # built from the schema's deployable fields


def build_distillation(env: Env, config: DistillConfig, latent_size: int = 0) -> DistillBuild:
    """The batched env and the student the distillation phase of ``config`` uses on the unbatched ``env``;
    ``latent_size``: the teacher's privileged latent (used if the config matches latents)."""
    return DistillBuild(env=VmapAutoReset.for_phase(env, config), student=build_student(env, config, latent_size))


def initial_student_states(
    batched_env: Env, student: Student, config: DistillConfig, seed: int, num_seeds: int
) -> StudentState:
    """``num_seeds`` fresh :class:`StudentState`s stacked on a leading seed axis ``[K]``."""
    init = functools.partial(init_student, env=batched_env, student=student, config=config)
    return init_per_seed(init, seed, num_seeds)


def distill_student(
    env: Env,
    teacher_actor: Any,
    teacher: FrozenTeacher,
    config: DistillConfig,
    *,
    seed: int = 0,
    updates_per_call: int | None = None,
    devices: list | None = None,
    log_fn: Callable[[dict[str, Any]], None] | None = None,
    on_chunk: Callable[[StudentState, int], None] | None = None,
    initial_state: StudentState | None = None,
    build: DistillBuild | None = None,
) -> DistillResult:
    """Trains one student per teacher seed on ``env`` (single-instance).

    Args:
      env: the unbatched task (the same one the teacher was trained on).
      teacher_actor: the teacher's actor module (``TeacherNetworks.actor``).
      teacher: frozen teacher params and normaliser stats with a leading seed
        axis ``[K]`` (e.g. ``FrozenTeacher(result.state.params["actor"],
        result.state.obs_stats)``).
      config: distillation hyper-parameters.
      seed: base seed; student ``k`` uses ``seed + k``.
      updates_per_call, devices, log_fn, on_chunk: see :func:`distill_jax.loop.run_phase`.
      initial_state: resume from this state instead of initialising.
      build: the batched env and student, if the caller built them already
        (:func:`build_distillation` of the same ``env``, ``config`` and teacher latent).
    """
    config.validate()
    num_seeds = int(jax.tree.leaves(teacher.params)[0].shape[0])
    batched_env, student = build or build_distillation(env, config, getattr(teacher_actor, "latent_size", 0))
    if config.latent_coef > 0 and student.sequence_with_latent is None:
        raise ConfigError("distill.latent_coef > 0 needs a teacher with a privileged latent (EncodedTeacher)")
    if initial_state is None:
        initial_state = initial_student_states(batched_env, student, config, seed, num_seeds)

    def step(state, frozen_teacher):
        return distill_step(
            state, frozen_teacher, env=batched_env, teacher_actor=teacher_actor, student=student, config=config
        )

    state, history = run_phase(
        initial_state,
        step,
        frozen=teacher,
        total_updates=config.num_updates,
        batch_size=config.batch_size,
        num_envs=config.num_envs,
        updates_per_call=updates_per_call,
        devices=devices,
        log_fn=log_fn,
        on_chunk=on_chunk,
    )
    return DistillResult(state=state, student=student, env=batched_env, history=history)

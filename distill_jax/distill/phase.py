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
from distill_jax.hyperparams import member_coefficients
from distill_jax.loop import init_per_seed, run_phase


@dataclasses.dataclass
class DistillResult:
    """What the distillation phase returns (``state`` has a leading seed axis ``[K]``)."""

    state: StudentState
    student: Student
    env: Env
    history: list[dict[str, Any]]


def build_student(env: Env, config: DistillConfig, latent_size: int = 0) -> Student:
    """The student ``config.student`` describes; ``latent_size``: the teacher's latent, used if the
    student has a latent head."""
    student = config.student
    return make_student(
        env.schema,
        env.action_size,
        kind=student.kind,
        hidden=student.hidden,
        gru_size=student.gru_size,
        activation=student.activation,
        student_fields=student.fields,
        latent_size=latent_size if student.latent_head else 0,
        scan=student.scan_spec(),
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
    batched_env: Env, student: Student, config: DistillConfig, seed: int, num_seeds: int,
    sweep_points: list[dict[str, float]] | None = None,
) -> StudentState:
    """Fresh :class:`StudentState`s stacked on a leading member axis ``[G * K]`` (``num_seeds`` seeds
    for each of the ``G`` sweep points; ``None``: the config's own coefficients, ``[K]``)."""
    init = functools.partial(init_student, env=batched_env, student=student, config=config)
    return init_per_seed(init, seed, num_seeds, member_coefficients(config, sweep_points or [{}], num_seeds))


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
    sweep_points: list[dict[str, float]] | None = None,
) -> DistillResult:
    """Trains one student per teacher seed on ``env`` (single-instance).

    Args:
      env: the unbatched task (the same one the teacher was trained on).
      teacher_actor: the teacher's actor module (``TeacherNetworks.actor``).
      teacher: frozen teacher params and normaliser stats with a leading member
        axis ``[G * K]`` (e.g. ``FrozenTeacher(result.state.params["actor"],
        result.state.obs_stats)``): student member ``m`` learns from teacher ``m``.
      config: distillation hyper-parameters.
      seed: base seed; student ``k`` uses ``seed + k``.
      updates_per_call, devices, log_fn, on_chunk: see :func:`distill_jax.loop.run_phase`.
      initial_state: resume from this state instead of initialising.
      build: the batched env and student, if the caller built them already
        (:func:`build_distillation` of the same ``env``, ``config`` and teacher latent).
      sweep_points: the ``G`` coefficient settings (``{path relative to config: value}``) the
        members train with, member ``g * K + k`` at point ``g`` (``None``: one point).
    """
    config.validate()
    members = int(jax.tree.leaves(teacher.params)[0].shape[0])
    points = sweep_points or [{}]
    if members % len(points):
        raise ConfigError(f"{members} teachers cannot be split over {len(points)} sweep points")
    batched_env, student = build or build_distillation(env, config, getattr(teacher_actor, "latent_size", 0))
    if config.student.latent_head and student.sequence_with_latent is None:
        raise ConfigError("distill.student.latent_head needs a teacher with a privileged latent (EncodedTeacher)")
    if initial_state is None:
        initial_state = initial_student_states(batched_env, student, config, seed, members // len(points), points)

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

"""Students built from the schema's deployable fields only.

A :class:`Student` bundles pure functions over one flax module so feed-forward
and recurrent students share the collection and update code:

* ``init(key, one_obs) -> params``
* ``initial_carry(batch_size) -> carry`` (``None`` for feed-forward students)
* ``step(params, carry, obs[B], first[B]) -> (carry, dist[B])`` — acting
* ``sequence(params, carry0, obs[T, B], first[T, B]) -> dist[T, B]`` — training
  (a GRU replays the unroll from the carry it had at step 0, resetting its
  memory where ``first``; truncated back-propagation through the unroll)

Kinds: ``"mlp"`` (current deployable fields, including a stacked ``history``
field if the env provides one) and ``"gru"``. ``student_fields`` restricts the
student to a subset of ``schema.student_obs`` (e.g. a memoryless student that
ignores ``history``) by building it from a narrower schema. ``scan`` makes it perceptive:
its grid fields (e.g. ``height_scan``) go through a scan encoder before the trunk
(:class:`~distill_jax.networks.ScanSpec`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax

from distill_jax.distributions import TanhGaussian
from distill_jax.networks import ScanSpec, make_actor, make_gru_student, unroll_gru
from distill_jax.schema import ObservationSchema, SchemaError


class Student(NamedTuple):
    kind: str
    schema: ObservationSchema  # the (possibly narrowed) schema the student is built from
    module: Any
    init: Callable[[jax.Array, dict], Any]
    initial_carry: Callable[[int], Any]
    step: Callable[[Any, Any, dict, jax.Array], tuple[Any, TanhGaussian]]
    sequence: Callable[[Any, Any, dict, jax.Array], TanhGaussian]
    # (params, carry, obs[T, B], first[T, B]) -> (dist, predicted teacher latent [T, B, Z]); latent students only.
    sequence_with_latent: Callable[[Any, Any, dict, jax.Array], tuple[TanhGaussian, jax.Array]] | None = None


def student_schema(schema: ObservationSchema, student_fields: tuple[str, ...] | None) -> ObservationSchema:
    """``schema`` with ``student_obs`` narrowed to ``student_fields`` (dropped fields leave it)."""
    if student_fields is None:
        return schema
    outside = [f for f in student_fields if f not in schema.student_obs]
    if outside:
        raise SchemaError(
            f"student_fields {outside} are not deployable fields of the env; "
            f"student_obs is {list(schema.student_obs)}"
        )
    dropped = set(schema.student_obs) - set(student_fields)
    return dataclasses.replace(
        schema,
        student_obs=tuple(student_fields),
        teacher_ignores=tuple(n for n in schema.teacher_ignores if n in student_fields),
        fields=tuple((n, s) for n, s in schema.fields if n not in dropped),
    )


def make_student(
    schema: ObservationSchema,
    action_size: int,
    *,
    kind: str = "mlp",
    hidden: tuple[int, ...] = (128, 128),
    gru_size: int = 64,
    activation: str = "elu",
    student_fields: tuple[str, ...] | None = None,
    latent_size: int = 0,
    scan: ScanSpec | None = None,
) -> Student:
    """Builds a student actor that can read only ``schema.student_obs`` (or ``student_fields``).

    ``latent_size > 0`` (MLP only) adds a head that predicts an RMA-style teacher
    latent from the student's features, for auxiliary feature matching.
    """
    schema = student_schema(schema, student_fields)
    if kind == "mlp":
        module = make_actor(schema, "student", action_size, hidden=hidden, activation=activation,
                            latent_size=latent_size, scan=scan)

        def step(params, carry, obs, first):
            del first
            return carry, module.apply(params, obs)

        def sequence(params, carry, obs, first):
            del carry, first
            return module.apply(params, obs)

        def sequence_with_latent(params, carry, obs, first):
            del carry, first
            dist, sown = module.apply(params, obs, mutable=["intermediates"])
            return dist, sown["intermediates"]["latent"][0]

        return Student(kind, schema, module, module.init, lambda batch: None, step, sequence,
                       sequence_with_latent if latent_size else None)

    if kind == "gru":
        if latent_size:
            raise ValueError("latent matching is implemented for MLP students; got kind='gru'")
        module = make_gru_student(
            schema, action_size, encoder=hidden[:1], gru_size=gru_size, head=hidden[1:] or hidden[:1],
            activation=activation, scan=scan,
        )

        def init(key, one_obs):
            return module.init(key, module.initial_carry(()), one_obs, jax.numpy.zeros(()))

        def step(params, carry, obs, first):
            return module.apply(params, carry, obs, first)

        def sequence(params, carry, obs, first):
            return unroll_gru(module, params, carry, obs, first)[1]

        return Student(kind, schema, module, init, lambda batch: module.initial_carry((batch,)), step, sequence)

    raise ValueError(f"unknown student kind {kind!r}; expected 'mlp' or 'gru'")

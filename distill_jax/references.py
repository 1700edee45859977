"""Reference policies that make the evaluation's claims testable.

* The **deployable-only baseline** answers the teacher claim ("privileged state improves expert
  behaviour"): the same PPO, networks and budget as the teacher, but an actor built from a schema
  in which the teacher-only fields are critic-only, so it acts from exactly what the student reads
  (history included) while its critic stays asymmetric. Teacher − baseline is the value of
  privilege; student − baseline says whether distillation beats learning from deployable fields.
* The **oracle student** backs the diagnosis of observation insufficiency: the student's own
  architecture, objective and budget, given the teacher-only fields as if they were deployable.
  If it imitates well where the real student cannot, the deployable fields are what is missing.
  It exists only for diagnosis and is never exported.

Both are the ordinary phases run on a :class:`SchemaView` of the task: the same simulation and
observation dict, with the schema (and so what each network is *built* to read) re-declared.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from distill_jax.envs.base import Env, Wrapper
from distill_jax.schema import ObservationSchema


def deployable_actor_schema(schema: ObservationSchema) -> ObservationSchema:
    """``schema`` with its teacher-only fields moved to critic-only: an actor built for the teacher
    role reads ``student_obs`` alone (the fields the teacher ignores included: they are what the
    baseline has to act from), the critic still reads everything."""
    return dataclasses.replace(schema, teacher_only=(), critic_only=schema.teacher_only + schema.critic_only,
                               teacher_ignores=())


def privileged_student_schema(schema: ObservationSchema) -> ObservationSchema:
    """``schema`` with its teacher-only fields declared deployable: a student built from it reads them."""
    return dataclasses.replace(schema, student_obs=schema.student_obs + schema.teacher_only, teacher_only=())


class SchemaView(Wrapper):
    """``env`` with its observation schema re-declared; reset, step and observations are untouched.

    ``view`` names the re-declaration in the fingerprint, so a checkpoint of a reference policy can
    never be restored as the teacher's or the student's.
    """

    def __init__(self, env: Env, schema: ObservationSchema, view: str):
        super().__init__(env)
        if set(schema.all_fields) != set(env.schema.all_fields):
            raise ValueError(f"a SchemaView re-declares fields, it cannot add or drop them: "
                             f"{sorted(set(schema.all_fields) ^ set(env.schema.all_fields))}")
        self._schema, self.view = schema, view

    @functools.cached_property
    def schema(self) -> ObservationSchema:  # type: ignore[override]
        return self._schema

    def fingerprint(self) -> dict[str, Any]:
        fp = self.env.fingerprint()
        return {**fp, "wrappers": [*fp.get("wrappers", []), {"type": "SchemaView", "view": self.view}]}


def baseline_env(env: Env) -> SchemaView:
    """The task as the deployable-only baseline's PPO sees it (:func:`deployable_actor_schema`)."""
    return SchemaView(env, deployable_actor_schema(env.schema), "deployable_actor")


def oracle_env(env: Env) -> SchemaView:
    """The task as the oracle student's distillation sees it (:func:`privileged_student_schema`)."""
    return SchemaView(env, privileged_student_schema(env.schema), "privileged_student")

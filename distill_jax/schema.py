"""The observation schema: which named observation fields each role may read.

An environment emits one observation *dict* per step. The schema splits its
field names into three disjoint lists:

* ``student_obs``  – deployable fields (proprioception, commands, noisy sensors,
  history). Every role may read them; they are the exported actor's contract.
* ``teacher_only`` – privileged simulator state (terrain heights, contact
  forces, friction, exact base velocity). Read by the teacher actor and critic.
* ``critic_only``  – extra training-time signals for the value function only.

``teacher_ignores`` names deployable fields the teacher actor does not read: what a
deployed policy must reconstruct and the teacher reads directly (an observation
history, when the teacher reads the exact state it summarises, as in Lee et al. 2020
and RMA). The student and the critic read them; the schema diff lists them as added.

Derived views (``fields_for(role)``):

=================  ==============================================
role               fields
=================  ==============================================
``"student"``      ``student_obs``
``"teacher"``      ``student_obs`` (less ``teacher_ignores``) ``+ teacher_only``
``"critic"``       ``student_obs + teacher_only + critic_only``
=================  ==============================================

The schema is a frozen, hashable dataclass so it can be a static argument of
``jax.jit`` and the key of a network factory; it round-trips through JSON with
a stable key order so it can live inside checkpoints and evaluation artifacts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Role = Literal["student", "teacher", "critic"]
ROLES: tuple[Role, ...] = ("student", "teacher", "critic")

# The three disjoint field lists, in the order the roles widen.
CATEGORIES = ("student_obs", "teacher_only", "critic_only")

SCHEMA_FORMAT_VERSION = 1


class SchemaError(ValueError):
    """An observation schema, or data checked against one, is malformed."""


class MissingFieldError(SchemaError):
    """A field a role needs is absent from the observation."""


class PrivilegedFieldError(SchemaError):
    """A privileged (teacher-only or critic-only) field reached the student."""


class UnknownFieldError(SchemaError):
    """A field that the schema does not list at all reached a guarded input."""


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """Per-step shape and dtype of one observation field (no batch axes)."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self):
        shape = tuple(self.shape)
        if any((not isinstance(d, int)) or d < 0 for d in shape):
            raise SchemaError(f"FieldSpec shape must be non-negative ints, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", str(self.dtype))


def _as_name_tuple(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise SchemaError(f"{what} must be a sequence of field names, got the string {value!r}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise SchemaError(f"{what} holds an invalid field name {name!r}")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SchemaError(f"field {name!r} is listed twice in {what}")
        seen.add(name)
    return names


@dataclasses.dataclass(frozen=True)
class ObservationSchema:
    """Which observation fields each role may read (see the module docstring).

    Attributes:
      student_obs: deployable field names, in the order networks concatenate them.
      teacher_only: privileged field names the teacher actor may also read.
      critic_only: field names only the critic may read.
      teacher_ignores: names of ``student_obs`` the teacher actor does not read (module docstring).
      mask_rule: names of the invalid-step rules in force during distillation
        (e.g. ``("falls", "timeouts", "resets", "saturated_actions")``).
      mask_thresholds: ``(name, value)`` pairs parameterising those rules
        (e.g. ``(("saturation", 0.99),)``); saved with the schema.
      eval_wrapper: name of the wrapper that runs the student at evaluation.
      fields: optional ``(name, FieldSpec)`` pairs giving per-step shapes and
        dtypes; when given they must cover exactly the listed fields.
    """

    student_obs: tuple[str, ...]
    teacher_only: tuple[str, ...] = ()
    critic_only: tuple[str, ...] = ()
    teacher_ignores: tuple[str, ...] = ()
    mask_rule: tuple[str, ...] = ()
    mask_thresholds: tuple[tuple[str, float], ...] = ()
    eval_wrapper: str = "student_actor_only"
    fields: tuple[tuple[str, FieldSpec], ...] = ()

    def __post_init__(self):
        lists = {c: _as_name_tuple(getattr(self, c), c) for c in CATEGORIES}
        if not lists["student_obs"]:
            raise SchemaError("student_obs must name at least one deployable field")
        owner: dict[str, str] = {}
        for category, names in lists.items():
            for name in names:
                if name in owner:
                    raise SchemaError(
                        f"field {name!r} is listed in both {owner[name]} and {category}; "
                        "the three field lists must be disjoint"
                    )
                owner[name] = category
            object.__setattr__(self, category, names)
        ignored = _as_name_tuple(self.teacher_ignores, "teacher_ignores")
        outside = [name for name in ignored if name not in lists["student_obs"]]
        if outside:
            raise SchemaError(f"teacher_ignores names {outside}, not in student_obs {list(lists['student_obs'])}: "
                              "the teacher can only ignore deployable fields")
        if len(ignored) == len(lists["student_obs"]) and not lists["teacher_only"]:
            raise SchemaError("teacher_ignores leaves the teacher actor no field to read")
        object.__setattr__(self, "teacher_ignores", ignored)
        object.__setattr__(self, "mask_rule", _as_name_tuple(self.mask_rule, "mask_rule"))
        thresholds = tuple((str(k), float(v)) for k, v in dict(self.mask_thresholds).items())
        object.__setattr__(self, "mask_thresholds", tuple(sorted(thresholds)))
        if not isinstance(self.eval_wrapper, str) or not self.eval_wrapper:
            raise SchemaError(f"eval_wrapper must be a non-empty string, got {self.eval_wrapper!r}")
        specs = tuple(
            (str(name), spec if isinstance(spec, FieldSpec) else FieldSpec(**spec))
            for name, spec in (self.fields.items() if isinstance(self.fields, Mapping) else self.fields)
        )
        if specs:
            spec_names = [name for name, _ in specs]
            extra = sorted(set(spec_names) - set(owner))
            missing = sorted(set(owner) - set(spec_names))
            if extra or missing:
                raise SchemaError(
                    f"field specs must cover exactly the schema's fields: "
                    f"specs for unlisted fields {extra}, no spec for {missing}"
                )
        object.__setattr__(self, "fields", tuple(sorted(specs)))

    # ------------------------------------------------------------------ views
    @property
    def all_fields(self) -> tuple[str, ...]:
        return self.student_obs + self.teacher_only + self.critic_only

    @property
    def privileged(self) -> tuple[str, ...]:
        """Every field the student actor must never read."""
        return self.teacher_only + self.critic_only

    @property
    def field_specs(self) -> dict[str, FieldSpec]:
        return dict(self.fields)

    def category_of(self, name: str) -> str:
        """Which of ``student_obs`` / ``teacher_only`` / ``critic_only`` lists ``name``."""
        for category in CATEGORIES:
            if name in getattr(self, category):
                return category
        raise UnknownFieldError(f"field {name!r} is not in the observation schema")

    def fields_for(self, role: Role) -> tuple[str, ...]:
        """The field names ``role`` may read, in network concatenation order."""
        if role == "student":
            return self.student_obs
        if role == "teacher":
            return tuple(n for n in self.student_obs if n not in self.teacher_ignores) + self.teacher_only
        if role == "critic":
            return self.all_fields
        raise SchemaError(f"unknown role {role!r}; expected one of {ROLES}")

    # ------------------------------------------------------------- selection
    def select(self, obs: Mapping[str, Any], role: Role) -> dict[str, Any]:
        """Returns exactly the fields ``role`` may read from ``obs``.

        Works on batched or unbatched dicts (and inside ``jit``): only keys are
        inspected. Fields other roles may read are dropped; use
        :meth:`guard_student` where dropping would hide a bug.

        Raises:
          MissingFieldError: naming every field of ``role`` absent from ``obs``.
        """
        names = self.fields_for(role)
        missing = [n for n in names if n not in obs]
        if missing:
            raise MissingFieldError(
                f"observation lacks field(s) {missing} needed by role {role!r}; "
                f"it has {sorted(obs)}"
            )
        return {n: obs[n] for n in names}

    def guard_student(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """Admits a student input only if it holds exactly the deployable fields.

        This is the check the exported student and the evaluation wrapper put in
        front of the student actor: a privileged field is *rejected*, never
        silently dropped, so a leaky wrapper fails loudly.

        Raises:
          PrivilegedFieldError: naming each teacher-only / critic-only field given.
          UnknownFieldError: naming each field the schema does not list.
          MissingFieldError: naming each absent student field.
        """
        privileged = [n for n in obs if n in self.teacher_only or n in self.critic_only]
        if privileged:
            roles = ", ".join(f"{n!r} ({self.category_of(n)})" for n in privileged)
            raise PrivilegedFieldError(
                f"privileged field(s) passed to the student actor: {roles}; "
                f"the student may read only {list(self.student_obs)}"
            )
        unknown = [n for n in obs if n not in self.student_obs]
        if unknown:
            raise UnknownFieldError(
                f"field(s) {unknown} are not in the schema's student_obs {list(self.student_obs)}"
            )
        return self.select(obs, "student")

    def check_shapes(self, obs: Mapping[str, Any], role: Role) -> None:
        """Checks each field of ``role`` against its FieldSpec (trailing dims).

        Leading axes beyond the spec's rank are treated as batch axes and must
        agree across fields. A no-op for fields without specs.
        """
        specs = self.field_specs
        batch_shape = None
        for name, value in self.select(obs, role).items():
            if name not in specs:
                continue
            spec = specs[name]
            shape = tuple(getattr(value, "shape", ()))
            rank = len(spec.shape)
            if len(shape) < rank or shape[len(shape) - rank:] != spec.shape:
                raise SchemaError(
                    f"field {name!r} has shape {shape}; expected (..., {', '.join(map(str, spec.shape))})"
                )
            lead = shape[: len(shape) - rank]
            if batch_shape is None:
                batch_shape = lead
            elif lead != batch_shape:
                raise SchemaError(
                    f"field {name!r} has batch shape {lead} but earlier fields have {batch_shape}"
                )
            dtype = str(getattr(value, "dtype", spec.dtype))
            if dtype != spec.dtype:
                raise SchemaError(f"field {name!r} has dtype {dtype}; expected {spec.dtype}")

    # ------------------------------------------------------------------ diff
    def diff(self, other: "ObservationSchema") -> "SchemaDiff":
        """Fields added, removed or moved between categories from ``self`` to ``other``."""
        changes = []
        mine = {n: self.category_of(n) for n in self.all_fields}
        theirs = {n: other.category_of(n) for n in other.all_fields}
        for name in sorted(set(mine) | set(theirs)):
            before, after = mine.get(name), theirs.get(name)
            if before != after:
                changes.append(FieldChange(name, before, after))
        return SchemaDiff(tuple(changes))

    def student_leak_report(self) -> dict[str, Any]:
        """The diff from the teacher actor's inputs to the student actor's inputs.

        ``passed`` is True iff no teacher-only or critic-only field is among
        the student actor's inputs and every removed field is privileged.
        ``added_for_student``: the deployable fields the teacher does not read (``teacher_ignores``).
        """
        teacher_inputs = self.fields_for("teacher")
        student_inputs = self.fields_for("student")
        removed = [n for n in teacher_inputs if n not in student_inputs]
        leaked = [n for n in student_inputs if n in self.privileged]
        return {
            "teacher_actor_inputs": list(teacher_inputs),
            "student_actor_inputs": list(student_inputs),
            "removed_from_student": removed,
            "added_for_student": [n for n in student_inputs if n not in teacher_inputs],
            "privileged_in_student": leaked,
            "passed": not leaked and sorted(removed) == sorted(self.teacher_only),
        }

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": SCHEMA_FORMAT_VERSION,
            "student_obs": list(self.student_obs),
            "teacher_only": list(self.teacher_only),
            "critic_only": list(self.critic_only),
            # Only when set: the schemas stored in existing runs' checkpoints stay equal to today's.
            **({"teacher_ignores": list(self.teacher_ignores)} if self.teacher_ignores else {}),
            "mask_rule": list(self.mask_rule),
            "mask_thresholds": dict(self.mask_thresholds),
            "eval_wrapper": self.eval_wrapper,
            "fields": {n: {"shape": list(s.shape), "dtype": s.dtype} for n, s in self.fields},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ObservationSchema":
        data = dict(data)
        version = data.pop("format_version", SCHEMA_FORMAT_VERSION)
        if version != SCHEMA_FORMAT_VERSION:
            raise SchemaError(
                f"schema format_version {version} is not supported (expected {SCHEMA_FORMAT_VERSION})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SchemaError(f"unknown schema key(s) {unknown}; expected a subset of {sorted(known)}")
        if "student_obs" not in data:
            raise SchemaError("schema dict lacks the required key 'student_obs'")
        fields = data.pop("fields", {}) or {}
        specs = tuple(
            (name, FieldSpec(tuple(spec["shape"]), spec.get("dtype", "float32")))
            for name, spec in fields.items()
        )
        thresholds = tuple(dict(data.pop("mask_thresholds", {}) or {}).items())
        return cls(**data, fields=specs, mask_thresholds=thresholds)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ObservationSchema":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SchemaError(f"schema JSON is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise SchemaError(f"schema JSON must be an object, got {type(data).__name__}")
        return cls.from_dict(data)

    def with_fields(self, specs: Mapping[str, FieldSpec] | Iterable[tuple[str, FieldSpec]]) -> "ObservationSchema":
        """A copy with per-field specs attached (e.g. inferred from an env)."""
        items = specs.items() if isinstance(specs, Mapping) else specs
        return dataclasses.replace(self, fields=tuple(items))


@dataclasses.dataclass(frozen=True)
class FieldChange:
    """One field whose category differs between two schemas (None = absent)."""

    field: str
    before: str | None
    after: str | None

    @property
    def kind(self) -> str:
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "moved"

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.field}: added to {self.after}"
        if self.kind == "removed":
            return f"- {self.field}: removed from {self.before}"
        return f"~ {self.field}: moved from {self.before} to {self.after}"


@dataclasses.dataclass(frozen=True)
class SchemaDiff:
    """The changes between two schemas; empty means same fields in same roles."""

    changes: tuple[FieldChange, ...]

    def __bool__(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "moved": []}
        for c in self.changes:
            out[c.kind].append({"field": c.field, "from": c.before, "to": c.after})
        return out

    def __str__(self) -> str:
        return "\n".join(str(c) for c in self.changes) if self.changes else "(no differences)"

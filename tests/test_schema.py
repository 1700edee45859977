"""Behaviour of the observation schema: disjointness, selection, guard, diff, JSON."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.schema import (
    FieldSpec,
    MissingFieldError,
    ObservationSchema,
    PrivilegedFieldError,
    SchemaError,
    UnknownFieldError,
)


def make_schema(**kw) -> ObservationSchema:
    base = dict(
        student_obs=("joint_pos", "joint_vel", "command", "history"),
        teacher_only=("terrain_heights", "contact_forces"),
        critic_only=("base_velocity",),
        mask_rule=("falls", "timeouts", "saturated_actions"),
        mask_thresholds=(("saturation", 0.99),),
        fields=(
            ("joint_pos", FieldSpec((12,))),
            ("joint_vel", FieldSpec((12,))),
            ("command", FieldSpec((3,))),
            ("history", FieldSpec((5, 27))),
            ("terrain_heights", FieldSpec((4, 9))),
            ("contact_forces", FieldSpec((4,))),
            ("base_velocity", FieldSpec((3,))),
        ),
    )
    base.update(kw)
    return ObservationSchema(**base)


def make_obs(schema: ObservationSchema, batch=()) -> dict:
    return {n: np.ones(batch + s.shape, np.float32) for n, s in schema.fields}


@pytest.mark.parametrize(
    "lists, field",
    [
        (dict(student_obs=("a", "b"), teacher_only=("b",)), "b"),
        (dict(student_obs=("a",), critic_only=("a",)), "a"),
        (dict(student_obs=("a",), teacher_only=("t",), critic_only=("t",)), "t"),
    ],
)
def test_overlapping_lists_rejected_naming_field(lists, field):
    with pytest.raises(SchemaError, match=f"'{field}'"):
        ObservationSchema(**lists)


def test_duplicate_within_a_list_and_empty_student_rejected():
    with pytest.raises(SchemaError, match="'a' is listed twice"):
        ObservationSchema(student_obs=("a", "a"))
    with pytest.raises(SchemaError, match="at least one"):
        ObservationSchema(student_obs=())
    with pytest.raises(SchemaError, match="string"):
        ObservationSchema(student_obs="joint_pos")


def test_specs_must_cover_exactly_the_fields():
    with pytest.raises(SchemaError, match=r"no spec for \['b'\]"):
        ObservationSchema(student_obs=("a", "b"), fields=(("a", FieldSpec((1,))),))
    with pytest.raises(SchemaError, match=r"unlisted fields \['z'\]"):
        ObservationSchema(student_obs=("a",), fields=(("a", FieldSpec((1,))), ("z", FieldSpec((1,)))))


def test_schema_is_hashable_and_usable_as_static_jit_arg():
    schema = make_schema()
    assert hash(schema) == hash(make_schema())
    f = jax.jit(lambda obs, s: sum(jnp.sum(v) for v in s.select(obs, "student").values()), static_argnums=1)
    obs = make_obs(schema)
    assert float(f(obs, schema)) == 12 + 12 + 3 + 5 * 27


@pytest.mark.parametrize("batch", [(), (7,), (3, 5)])
def test_select_returns_exactly_the_allowed_keys(batch):
    schema = make_schema()
    obs = make_obs(schema, batch)
    student = schema.select(obs, "student")
    teacher = schema.select(obs, "teacher")
    critic = schema.select(obs, "critic")
    assert list(student) == ["joint_pos", "joint_vel", "command", "history"]
    assert list(teacher) == list(student) + ["terrain_heights", "contact_forces"]
    assert list(critic) == list(teacher) + ["base_velocity"]
    for name, value in critic.items():
        assert value is obs[name]
        assert value.shape[: len(batch)] == batch


def test_select_names_missing_fields_and_rejects_unknown_role():
    schema = make_schema()
    obs = make_obs(schema)
    del obs["terrain_heights"]
    schema.select(obs, "student")  # the student does not need it
    with pytest.raises(MissingFieldError, match="terrain_heights"):
        schema.select(obs, "teacher")
    with pytest.raises(SchemaError, match="unknown role"):
        schema.select(obs, "actor")


@pytest.mark.parametrize("field", ["terrain_heights", "contact_forces", "base_velocity"])
def test_student_guard_rejects_each_privileged_field(field):
    schema = make_schema()
    student_in = schema.select(make_obs(schema), "student")
    student_in[field] = np.zeros(schema.field_specs[field].shape, np.float32)
    expected = "teacher_only" if field in schema.teacher_only else "critic_only"
    with pytest.raises(PrivilegedFieldError, match=f"'{field}' \\({expected}\\)"):
        schema.guard_student(student_in)


def test_student_guard_passes_clean_input_and_rejects_unknown_or_missing():
    schema = make_schema()
    clean = schema.select(make_obs(schema, (4,)), "student")
    out = schema.guard_student(clean)
    assert list(out) == list(schema.student_obs)
    with pytest.raises(UnknownFieldError, match="'surprise'"):
        schema.guard_student({**clean, "surprise": np.zeros(1)})
    partial = dict(clean)
    del partial["command"]
    with pytest.raises(MissingFieldError, match="command"):
        schema.guard_student(partial)


def test_check_shapes_names_field_and_shape():
    schema = make_schema()
    obs = make_obs(schema, (2,))
    schema.check_shapes(obs, "critic")
    obs["joint_vel"] = np.ones((2, 11), np.float32)
    with pytest.raises(SchemaError, match=r"'joint_vel' has shape \(2, 11\)"):
        schema.check_shapes(obs, "student")
    obs = make_obs(schema, (2,))
    obs["command"] = np.ones((3, 3), np.float32)
    with pytest.raises(SchemaError, match="batch shape"):
        schema.check_shapes(obs, "student")
    obs = make_obs(schema, (2,))
    obs["command"] = obs["command"].astype(np.float64)
    with pytest.raises(SchemaError, match="dtype float64"):
        schema.check_shapes(obs, "student")


def test_json_round_trip_is_equal_and_stable():
    schema = make_schema()
    text = schema.to_json()
    again = ObservationSchema.from_json(text)
    assert again == schema
    assert again.to_json() == text
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_from_json_rejects_bad_input():
    with pytest.raises(SchemaError, match="not valid JSON"):
        ObservationSchema.from_json("{")
    with pytest.raises(SchemaError, match=r"unknown schema key\(s\) \['bogus'\]"):
        ObservationSchema.from_dict({"student_obs": ["a"], "bogus": 1})
    with pytest.raises(SchemaError, match="format_version 99"):
        ObservationSchema.from_dict({"student_obs": ["a"], "format_version": 99})


def test_diff_names_moved_field_and_both_roles():
    a = make_schema()
    b = make_schema(
        student_obs=("joint_pos", "joint_vel", "command", "history", "contact_forces"),
        teacher_only=("terrain_heights",),
    )
    d = a.diff(b)
    assert d.to_dict() == {
        "added": [],
        "removed": [],
        "moved": [{"field": "contact_forces", "from": "teacher_only", "to": "student_obs"}],
    }
    assert str(d) == "~ contact_forces: moved from teacher_only to student_obs"
    assert not a.diff(make_schema())
    assert str(a.diff(a)) == "(no differences)"


def test_diff_added_and_removed():
    a = ObservationSchema(student_obs=("x",), teacher_only=("p",))
    b = ObservationSchema(student_obs=("x", "y"))
    assert a.diff(b).to_dict() == {
        "added": [{"field": "y", "from": None, "to": "student_obs"}],
        "removed": [{"field": "p", "from": "teacher_only", "to": None}],
        "moved": [],
    }


def test_student_leak_report_proves_teacher_fields_removed():
    report = make_schema().student_leak_report()
    assert report["passed"]
    assert report["removed_from_student"] == ["terrain_heights", "contact_forces"]
    assert report["privileged_in_student"] == []
    assert report["added_for_student"] == []


def test_a_field_the_teacher_ignores_is_the_students_and_the_critics_alone():
    schema = make_schema(teacher_ignores=("history",))
    assert schema.fields_for("teacher") == ("joint_pos", "joint_vel", "command", "terrain_heights", "contact_forces")
    assert schema.fields_for("student") == ("joint_pos", "joint_vel", "command", "history")
    assert "history" in schema.fields_for("critic")
    assert list(schema.select(make_obs(schema, (3,)), "teacher")) == list(schema.fields_for("teacher"))
    report = schema.student_leak_report()
    assert report["passed"] and report["added_for_student"] == ["history"]
    assert report["removed_from_student"] == ["terrain_heights", "contact_forces"]
    assert ObservationSchema.from_json(schema.to_json()) == schema
    assert "teacher_ignores" not in make_schema().to_dict()  # stored only when set: older runs' schemas unchanged


@pytest.mark.parametrize("ignored, message", [
    (("terrain_heights",), r"teacher_ignores names \['terrain_heights'\], not in student_obs"),
    (("nope",), r"teacher_ignores names \['nope'\]"),
])
def test_the_teacher_can_ignore_only_deployable_fields(ignored, message):
    with pytest.raises(SchemaError, match=message):
        make_schema(teacher_ignores=ignored)
    with pytest.raises(SchemaError, match="leaves the teacher actor no field"):
        ObservationSchema(student_obs=("a",), teacher_ignores=("a",))

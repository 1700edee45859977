"""The reference policies' schemas: what the deployable-only baseline and the oracle student read."""

from distill_jax.references import deployable_actor_schema, privileged_student_schema
from distill_jax.schema import ObservationSchema

SCHEMA = ObservationSchema(student_obs=("pos", "history"), teacher_only=("params",), critic_only=("vel",),
                           teacher_ignores=("history",))


def test_the_baseline_acts_from_exactly_the_students_fields_even_those_the_teacher_ignores():
    baseline = deployable_actor_schema(SCHEMA)
    assert SCHEMA.fields_for("teacher") == ("pos", "params")
    assert baseline.fields_for("teacher") == SCHEMA.fields_for("student") == ("pos", "history")
    assert set(baseline.fields_for("critic")) == set(SCHEMA.fields_for("critic"))


def test_the_oracle_student_reads_the_deployable_and_the_teacher_only_fields():
    oracle = privileged_student_schema(SCHEMA)
    assert oracle.fields_for("student") == ("pos", "history", "params")
    assert "vel" not in oracle.fields_for("student")

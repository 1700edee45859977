"""The three leak checks pass on a clean student and fail on a leaky one."""

import jax
import jax.numpy as jnp
import pytest

from distill_jax import leak_audit
from distill_jax.distill.student import make_student
from distill_jax.envs import VmapAutoReset, get_env
from distill_jax.evaluate import student_actor_only
from distill_jax.networks import make_actor


@pytest.fixture(scope="module")
def setup():
    env = get_env("cartpole")
    obs = VmapAutoReset(env, 8).reset(jax.random.PRNGKey(0)).obs
    return env, obs


def audit_of(env, inputs, act, obs):
    return leak_audit.audit(env.schema, inputs, act, obs, jax.random.PRNGKey(1))


def test_clean_student_passes_all_three(setup):
    env, obs = setup
    student = make_student(env.schema, env.action_size, hidden=(16,))
    params = student.init(jax.random.PRNGKey(2), jax.tree.map(lambda x: x[0], obs))
    policy = student_actor_only(student, params, None)
    act = lambda o: policy(None, o, jnp.ones(8), jax.random.PRNGKey(0))[1].action  # noqa: E731
    checks = audit_of(env, student.schema.fields_for("student"), act, obs)
    assert all(c["passed"] for c in checks.values()), checks


def test_leaky_student_fails_all_three(setup):
    env, obs = setup
    # A "student" that reads the teacher's inputs, velocities included.
    leaky = make_actor(env.schema, "teacher", env.action_size, hidden=(16,))
    params = leaky.init(jax.random.PRNGKey(3), jax.tree.map(lambda x: x[0], obs))
    act = lambda o: jnp.tanh(leaky.apply(params, o).loc)  # noqa: E731
    checks = audit_of(env, env.schema.fields_for("teacher"), act, obs)
    assert not any(c["passed"] for c in checks.values()), checks
    assert "velocities" in checks["structural"]["detail"]
    assert "velocities" in checks["dependency"]["detail"]

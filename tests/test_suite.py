"""The perturbation suite: declared conditions, one-line refusals, common random numbers, and the
vmapped program equal to separate evaluations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import suite as S
from distill_jax.distill.student import make_student
from distill_jax.distill.update import FrozenTeacher
from distill_jax.envs import get_env
from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.evaluate import (Panel, Reference, eval_wrapper, evaluate_members, evaluate_suite, score_members,
                                  teacher_policy)
from distill_jax.networks import make_teacher_networks
from distill_jax.config import NetworkConfig
from distill_jax.normalization import init_stats


@pytest.fixture(scope="module")
def env():
    return get_env("cartpole")


def test_the_cartpole_suite_marks_what_training_covered(env):
    points = S.resolve(env, "cartpole")
    assert len(points) == sum(len(c.strengths) for c in S.SUITES["cartpole"].conditions) == 25
    flags = {(p.condition, p.strength): p.in_training for p in points}
    assert flags[("nominal", 1.0)] and flags[("pole_mass", 2.0)] and not flags[("pole_mass", 3.0)]
    assert flags[("sensor_noise", 1.0)] and not flags[("sensor_noise", 2.0)]
    assert flags[("latency", 0.0)] and not flags[("latency", 1.0)] and not flags[("push", 0.5)]
    heavy = next(p for p in points if (p.condition, p.strength) == ("pole_mass", 3.0)).perturbation
    i = list(S.nominal(env).low).index(0.5)  # pole_mass's training range is [0.5, 2.0]
    assert heavy.low[i] == heavy.high[i] == 3.0


@pytest.mark.parametrize("call, message", [
    (lambda env: S.resolve(env, "cartpole", conditions=("gravity",)), "unknown suite condition 'gravity'"),
    (lambda env: S.resolve(env, "cartpole", strengths=(("pole_mass", (9.0,)),)), r"strength 9 is outside .*\[0.1, 5\]"),
    (lambda env: S.resolve(env, "cartpole", strengths=(("latency", (1.5,)),)), "whole number of steps"),
    (lambda env: S.resolve(env, "moon_lander"), "declares no perturbation suite"),
    (lambda env: S.resolve(get_env("cartpole", randomize=False), "cartpole", conditions=("pole_mass",)),
     "randomise"),
])
def test_bad_suite_requests_are_one_line(env, call, message):
    with pytest.raises(S.SuiteError, match=message) as info:
        call(env)
    assert "\n" not in str(info.value)


def rollout(env, point, actions):
    """States along a rollout of ``env`` perturbed by ``point`` with the given action sequence."""
    e = S.perturbed(env, jax.tree.map(jnp.asarray, point.perturbation), S.SUITES["cartpole"])
    # Jitted: op-by-op, every primitive is a program of its own, and thousands of them exhaust the
    # process's memory mappings on CPU.
    state = jax.jit(e.reset)(jax.random.PRNGKey(3))
    step = jax.jit(e.step)
    states = [state]
    for a in actions:
        state = step(state, a)
        states.append(state)
    return states


def test_every_policy_meets_the_same_noise_and_kicks(env):
    # Common random numbers: the disturbance stream comes from the episode's key, never from the
    # actions, so two very different action sequences see identical noise and kick directions.
    point = S.SuitePoint("mixed", 0.0, "", False, S.nominal(env)._replace(
        noise_scale=np.float32(3.0), kick=np.float32(1.0), delay=np.int32(1)))
    a = rollout(env, point, [jnp.full((1,), 0.8)] * 60)
    b = rollout(env, point, [jnp.full((1,), -0.6)] * 60)
    for sa, sb in zip(a, b):
        np.testing.assert_array_equal(sa.rng, sb.rng)
        noise_a = sa.obs["cart_pos"] - sa.obs["clean_pos"][0]
        noise_b = sb.obs["cart_pos"] - sb.obs["clean_pos"][0]
        np.testing.assert_allclose(noise_a, noise_b, atol=1e-6)
    # The trajectories did differ (the actions reached the physics).
    assert not np.allclose(a[-1].obs["clean_pos"], b[-1].obs["clean_pos"])


def test_conditions_reach_the_physics(env):
    points = {(p.condition, p.strength): p for p in S.resolve(env, "cartpole")}
    heavy = rollout(env, points[("pole_mass", 3.0)], [])[0]
    assert float(heavy.params["pole_mass"]) == pytest.approx(3.0)
    assert float(jnp.max(heavy.obs["dyn_params"])) > 1.0  # the teacher is shown a value beyond training
    # A two-step command delay: the task applies (and reports as last_action) the command of two steps ago.
    commands = [jnp.full((1,), v) for v in (0.1, 0.2, 0.3, 0.4)]
    delayed = rollout(env, points[("latency", 2.0)], commands)
    applied = [float(s.obs["last_action"][0]) for s in delayed[1:]]
    np.testing.assert_allclose(applied, [0.0, 0.0, 0.1, 0.2], atol=1e-6)
    # A kick changes the cart's velocity at step 25 (half the 50-step interval) and not before.
    still = [jnp.zeros((1,))] * 26
    calm = rollout(env, points[("push", 0.0)], still)
    kicked = rollout(env, points[("push", 1.0)], still)
    np.testing.assert_array_equal(calm[24].physics.qvel, kicked[24].physics.qvel)
    assert abs(float(kicked[25].physics.qvel[0] - calm[25].physics.qvel[0])) == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def pair(env):
    """An untrained teacher and student (their values do not matter here, only that both act)."""
    nets = make_teacher_networks(env.schema, env.action_size, NetworkConfig(actor_hidden=(16,), critic_hidden=(16,)))
    student = make_student(env.schema, env.action_size, kind="mlp", hidden=(16,))
    obs = jax.tree.map(lambda x: x[0], VmapAutoReset(env, 1).reset(jax.random.PRNGKey(0)).obs)
    t_params = nets.actor.init(jax.random.PRNGKey(1), obs)
    s_obs = student.schema.select(obs, "student")
    s_params = student.init(jax.random.PRNGKey(2), s_obs)
    one = lambda x: jax.tree.map(lambda v: jnp.asarray(v)[None], x)  # noqa: E731
    return nets.actor, one(FrozenTeacher(t_params, init_stats(obs))), student, one(s_params), one(init_stats(s_obs))


def test_the_vmapped_suite_equals_separate_evaluations(env, pair):
    actor, teacher, student, params, stats = pair
    panel = Panel(tuple(range(10**6, 10**6 + 8)))
    chosen = [p for p in S.resolve(env, "cartpole") if (p.condition, p.strength) in
              {("nominal", 1.0), ("pole_mass", 3.0), ("push", 1.0)}]
    mask = dict(mask_rule=("falls", "timeouts"), mask_thresholds=None)
    together = evaluate_suite(env, S.SUITES["cartpole"], S.stack(chosen), actor, teacher, student, params, stats,
                              panel, **mask)
    for c, point in enumerate(chosen):
        alone = evaluate_suite(env, S.SUITES["cartpole"], S.stack([point]), actor, teacher, student, params, stats,
                               panel, **mask)[0][0]
        for role in ("teacher", "student"):
            np.testing.assert_allclose(together[c][0]["episodes"][role]["return"], alone["episodes"][role]["return"],
                                       rtol=1e-5, atol=1e-5)
    # The nominal condition is the plain panel.
    plain = evaluate_members(env, actor, teacher, student, params, stats, panel, **mask)[0]
    np.testing.assert_allclose(together[0][0]["episodes"]["student"]["return"], plain["episodes"]["student"]["return"],
                               rtol=1e-5, atol=1e-5)
    assert together[1][0]["teacher"] != together[0][0]["teacher"]  # the heavy pole changed the outcome


def test_reference_policies_step_beside_the_pair_and_score_as_they_do_alone(env, pair):
    # The baseline and the oracle share the pair's program (one env step compiled for every policy).
    # A reference that is the teacher (or the student) again must reproduce its episodes exactly, and
    # another policy must score what its own program gives it, under every suite condition.
    actor, teacher, student, params, stats = pair
    panel = Panel(tuple(range(10**6, 10**6 + 8)))
    obs = jax.tree.map(lambda x: x[0], VmapAutoReset(env, 1).reset(jax.random.PRNGKey(0)).obs)
    other = FrozenTeacher(jax.tree.map(lambda x: x[None], actor.init(jax.random.PRNGKey(3), obs)), teacher.obs_stats)
    act = lambda t: teacher_policy(actor, t)  # noqa: E731
    refs = {"teacher_again": Reference(act, teacher),
            "student_again": Reference(lambda p: eval_wrapper(student, p[0], p[1]), (params, stats), student.initial_carry),
            "other": Reference(act, other)}
    chosen = [p for p in S.resolve(env, "cartpole") if (p.condition, p.strength) in {("nominal", 1.0), ("push", 1.0)}]
    mask = dict(mask_rule=("falls", "timeouts"), mask_thresholds=None)
    scored = evaluate_suite(env, S.SUITES["cartpole"], S.stack(chosen), actor, teacher, student, params, stats, panel,
                            **mask, references=refs)
    alone = score_members(env, panel, act, other, suite=S.SUITES["cartpole"], perturbations=S.stack(chosen))
    for c in range(len(chosen)):
        member = scored[c][0]
        assert member["references"]["teacher_again"]["episodes"] == member["episodes"]["teacher"]
        assert member["references"]["student_again"]["episodes"] == member["episodes"]["student"]
        np.testing.assert_allclose(member["references"]["other"]["episodes"]["return"], alone[c][0]["episodes"]["return"],
                                   rtol=1e-5, atol=1e-5)
    assert scored[0][0]["references"]["other"]["episodes"] != scored[0][0]["episodes"]["teacher"]  # it is another policy
    # Without a suite: the same program shape over members only.
    plain = evaluate_members(env, actor, teacher, student, params, stats, panel, **mask, references=refs)[0]
    assert plain["references"]["teacher_again"]["episodes"] == plain["episodes"]["teacher"]
    assert "references" not in evaluate_members(env, actor, teacher, student, params, stats, panel, **mask)[0]

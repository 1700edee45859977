"""Distillation losses and mask rules against closed forms and hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.config import ConfigError, DistillConfig, ObjectiveConfig
from distill_jax.distill import losses, masks
from distill_jax.distributions import TanhGaussian, squashed_entropy
from distill_jax.networks import make_actor
from distill_jax.schema import FieldSpec, ObservationSchema


def random_dist(key, shape=(6, 3)):
    k1, k2 = jax.random.split(key)
    return TanhGaussian(jax.random.normal(k1, shape), jnp.exp(0.3 * jax.random.normal(k2, shape)))


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_kl_matches_monte_carlo(direction):
    s = TanhGaussian(jnp.array([0.3, -1.0]), jnp.array([0.5, 1.2]))
    t = TanhGaussian(jnp.array([-0.2, -0.4]), jnp.array([0.8, 0.7]))
    p, q = (s, t) if direction == "reverse" else (t, s)
    x = p.loc + p.scale * jax.random.normal(jax.random.PRNGKey(0), (400_000, 2))

    def logpdf(d, x):
        return jnp.sum(-0.5 * ((x - d.loc) / d.scale) ** 2 - jnp.log(d.scale) - 0.5 * jnp.log(2 * jnp.pi), -1)

    mc = float(jnp.mean(logpdf(p, x) - logpdf(q, x)))
    exact = float(losses.kl_per_step(s, t, direction))
    assert exact == pytest.approx(mc, abs=0.01)


def test_kl_zero_for_identical_and_positive_otherwise():
    d = random_dist(jax.random.PRNGKey(1))
    np.testing.assert_allclose(losses.kl_per_step(d, d), 0.0, atol=1e-6)
    other = TanhGaussian(d.loc + 0.1, d.scale)
    assert np.all(np.asarray(losses.kl_per_step(other, d)) > 0)
    assert np.all(np.asarray(losses.kl_per_step(d, TanhGaussian(d.loc, d.scale * 1.1))) > 0)


def test_entropy_bonus_sign_raises_entropy():
    t = random_dist(jax.random.PRNGKey(2))
    valid = jnp.ones(t.loc.shape[:-1])

    def loss_of_log_scale(log_scale, coef):
        s = TanhGaussian(t.loc, jnp.exp(log_scale))
        return losses.kl_distillation_loss(s, t, valid, ent_coef=coef)[0]

    # At the KL optimum (student == teacher), only the bonus has a gradient: it must push the scale up.
    g = jax.grad(loss_of_log_scale)(jnp.log(t.scale), 0.1)
    assert np.all(np.asarray(g) < 0)


def test_squashed_entropy_bonus_pulls_a_wide_student_back_and_unknown_kind_fails():
    t = random_dist(jax.random.PRNGKey(3))
    valid = jnp.ones(t.loc.shape[:-1])
    wide = jnp.full_like(t.scale, jnp.log(20.0))  # every dimension at scale 20, past the squashed entropy's peak (0.87)

    def bonus_grad(kind):  # d/d log_scale of the bonus term alone (the KL's gradient subtracted)
        loss = lambda log_scale, coef: losses.kl_distillation_loss(  # noqa: E731
            TanhGaussian(t.loc, jnp.exp(log_scale)), t, valid, ent_coef=coef, entropy_kind=kind)[0]
        return np.asarray(jax.grad(loss)(wide, 1.0) - jax.grad(loss)(wide, 0.0))

    assert np.all(bonus_grad("gaussian") < 0)  # minimising -H widens the student further
    assert np.all(bonus_grad("squashed") > 0)  # ... the squashed entropy narrows it back
    student = TanhGaussian(t.loc, jnp.exp(wide))
    _, metrics = losses.kl_distillation_loss(student, t, valid, ent_coef=1.0, entropy_kind="squashed")
    np.testing.assert_allclose(float(metrics["entropy"]), float(jnp.mean(squashed_entropy(student))), rtol=1e-6)
    with pytest.raises(ValueError, match="entropy_kind='shannon'"):
        losses.kl_distillation_loss(student, t, valid, entropy_kind="shannon")
    with pytest.raises(ConfigError, match=r"distill.objective.entropy='tanh'.*'squashed'"):
        DistillConfig(objective=ObjectiveConfig(entropy="tanh")).validate()


def tiny_actor():
    schema = ObservationSchema(
        student_obs=("pos",),
        teacher_only=("vel",),
        fields=(("pos", FieldSpec((2,))), ("vel", FieldSpec((2,)))),
    )
    return make_actor(schema, "teacher", 2, hidden=(8,)), make_actor(schema, "student", 2, hidden=(8,))


def test_no_gradient_reaches_teacher_params():
    teacher, student = tiny_actor()
    obs = {"pos": jax.random.normal(jax.random.PRNGKey(0), (5, 2)), "vel": jnp.ones((5, 2))}
    tp = teacher.init(jax.random.PRNGKey(1), obs)
    sp = student.init(jax.random.PRNGKey(2), obs)

    def loss(tp, sp):
        return losses.kl_distillation_loss(student.apply(sp, obs), teacher.apply(tp, obs), jnp.ones(5), ent_coef=0.01)[0]

    g_teacher, g_student = jax.grad(loss, argnums=(0, 1))(tp, sp)
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(g_teacher))
    assert any(float(jnp.max(jnp.abs(x))) > 0.0 for x in jax.tree.leaves(g_student))


def test_masked_steps_do_not_affect_loss_or_gradients():
    s = random_dist(jax.random.PRNGKey(3))
    t = random_dist(jax.random.PRNGKey(4))
    valid = jnp.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    garbage = TanhGaussian(t.loc.at[1].set(1e3).at[3].set(-7.0), t.scale.at[4].set(1e-4))

    def loss(loc, target):
        return losses.kl_distillation_loss(TanhGaussian(loc, s.scale), target, valid, ent_coef=0.01)[0]

    l1, g1 = jax.value_and_grad(loss)(s.loc, t)
    l2, g2 = jax.value_and_grad(loss)(s.loc, garbage)
    assert float(l1) == float(l2)
    np.testing.assert_array_equal(g1, g2)


def test_all_masked_batch_gives_finite_zero_loss_and_gradient():
    s, t = random_dist(jax.random.PRNGKey(5)), random_dist(jax.random.PRNGKey(6))
    valid = jnp.zeros(6)
    loss, metrics = losses.kl_distillation_loss(s, t, valid, ent_coef=0.01)
    assert float(loss) == 0.0 and np.isfinite(float(metrics["kl"]))
    g = jax.grad(lambda loc: losses.kl_distillation_loss(TanhGaussian(loc, s.scale), t, valid)[0])(s.loc)
    np.testing.assert_array_equal(g, 0.0)
    assert float(losses.action_mse_loss(s.loc, t.loc, valid)[0]) == 0.0


def test_seed_worked_example_reproduces():
    # Code Fragment 17.5.1 of the seed chapter, computed independently in NumPy below.
    teacher = np.array([[0.20, -0.10, 0.05], [0.35, -0.08, 0.02], [1.50, 0.90, -1.20]])
    student = np.array([[0.18, -0.12, 0.04], [0.30, -0.10, 0.01], [0.10, 0.05, -0.02]])
    valid = np.array([1.0, 1.0, 0.0])
    loss, metrics = losses.action_mse_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(valid))
    expected_err = np.array([(0.02**2 + 0.02**2 + 0.01**2) / 3, (0.05**2 + 0.02**2 + 0.01**2) / 3,
                             (1.4**2 + 0.85**2 + 1.18**2) / 3])
    np.testing.assert_allclose(metrics["per_step_error"], expected_err, rtol=1e-5)
    np.testing.assert_allclose(np.round(np.asarray(metrics["per_step_error"]), 4), [0.0003, 0.001, 1.3583])
    assert float(loss) == pytest.approx((expected_err[0] + expected_err[1]) / 2, rel=1e-5)
    assert float(loss) == pytest.approx(0.00065, abs=1e-7)


def mask_inputs(T=4, B=3, A=2, **overrides):
    base = dict(
        terminated=jnp.zeros((T, B)),
        truncated=jnp.zeros((T, B)),
        first=jnp.zeros((T, B)),
        teacher_loc=jnp.zeros((T, B, A)),
        teacher_scale=jnp.ones((T, B, A)),
    )
    base.update(overrides)
    return masks.MaskInputs(**base)


def test_clean_transitions_trigger_no_rule():
    valid, fractions = masks.valid_mask(tuple(masks.RULES), mask_inputs())
    np.testing.assert_array_equal(valid, 1.0)
    assert all(float(v) == 0.0 for v in fractions.values())


@pytest.mark.parametrize(
    "rule, field, index",
    [
        ("falls", "terminated", (2, 1)),
        ("timeouts", "truncated", (3, 0)),
        ("resets", "first", (0, 2)),
    ],
)
def test_flag_rules_fire_exactly_where_flagged(rule, field, index):
    inputs = mask_inputs(**{field: jnp.zeros((4, 3)).at[index].set(1.0)})
    expected = np.ones((4, 3))
    expected[index] = 0.0
    for name in masks.RULES:
        valid, fractions = masks.valid_mask((name,), inputs)
        if name == rule:
            np.testing.assert_array_equal(valid, expected)
            assert float(fractions[f"masked/{name}"]) == pytest.approx(1 / 12)
        else:
            np.testing.assert_array_equal(valid, 1.0)


def test_fall_horizon_masks_the_steps_leading_into_a_fall():
    inputs = mask_inputs(terminated=jnp.zeros((4, 3)).at[3, 0].set(1.0))
    valid, _ = masks.valid_mask(("falls",), inputs, {"fall_horizon": 3})
    np.testing.assert_array_equal(valid[:, 0], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(valid[:, 1:], 1.0)


def test_saturated_and_nonfinite_teacher_rules():
    loc = jnp.zeros((4, 3, 2)).at[1, 1, 0].set(3.0).at[2, 2, 1].set(2.0)  # tanh(3)=0.995, tanh(2)=0.964
    valid, _ = masks.valid_mask(("saturated_actions",), mask_inputs(teacher_loc=loc))
    assert float(valid[1, 1]) == 0.0 and float(valid[2, 2]) == 1.0 and float(jnp.sum(valid)) == 11
    valid, _ = masks.valid_mask(("saturated_actions",), mask_inputs(teacher_loc=loc), {"saturation": 0.95})
    assert float(valid[2, 2]) == 0.0
    scale = jnp.ones((4, 3, 2)).at[0, 1, 1].set(jnp.nan)
    valid, _ = masks.valid_mask(("nonfinite_teacher",), mask_inputs(teacher_scale=scale))
    assert float(valid[0, 1]) == 0.0 and float(jnp.sum(valid)) == 11
    loc = jnp.zeros((4, 3, 2)).at[3, 0, 0].set(jnp.inf)
    valid, _ = masks.valid_mask(("nonfinite_teacher",), mask_inputs(teacher_loc=loc))
    assert float(valid[3, 0]) == 0.0


def test_default_thresholds_agree_across_config_mask_and_ppo_metric():
    """The config's defaults are plain Python (import-light) but must equal the mask module's,
    and PPO's saturated_steps metric must count with the same limit the mask drops."""
    from distill_jax.config import DEFAULT_MASK_THRESHOLDS
    from distill_jax.distributions import SATURATION_LIMIT, saturated

    assert dict(DEFAULT_MASK_THRESHOLDS) == masks.DEFAULT_THRESHOLDS
    assert masks.DEFAULT_THRESHOLDS["saturation"] == SATURATION_LIMIT
    at_limit = jnp.full((1, 2), jnp.arctanh(SATURATION_LIMIT) + 1e-4)
    assert float(saturated(at_limit)[0]) == 1.0 and float(saturated(at_limit - 2e-3)[0]) == 0.0


def test_unknown_rule_is_named():
    with pytest.raises(ValueError, match="'teleports'"):
        masks.valid_mask(("falls", "teleports"), mask_inputs())

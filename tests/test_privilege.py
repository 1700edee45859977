"""The per-field value of privilege: the permutation is a true permutation, a field the teacher ignores
costs exactly nothing, a field it needs costs falls, and the vmapped program equals a separate rollout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import privilege
from distill_jax import suite as S
from distill_jax.distill.student import make_student
from distill_jax.distill.update import FrozenTeacher
from distill_jax.distributions import TanhGaussian
from distill_jax.envs import VmapAutoReset, get_env
from distill_jax.evaluate import Panel, evaluate_suite, rollout_first_episodes, teacher_policy
from distill_jax.normalization import init_stats

EPISODES = 16
# A hand-tuned linear controller on (x, sin θ, ẋ, θ̇): 248.4 mean return and no fall on 32 held-out
# cartpole episodes. It reads the teacher-only velocities and ignores the teacher-only dyn_params.
GAINS = np.array([1.0, 10.0, 1.0, 2.0], np.float32)


class LinearTeacher:
    """A teacher actor with ``apply(params, obs) -> TanhGaussian``, like a flax module's."""

    def apply(self, params, obs):
        features = jnp.concatenate([obs["cart_pos"], obs["pole_angle"][..., 1:], obs["velocities"]], axis=-1)
        loc = features @ params[:, None]
        return TanhGaussian(loc, jnp.ones_like(loc))


@pytest.fixture(scope="module")
def env():
    return get_env("cartpole")


@pytest.fixture(scope="module")
def measured(env):
    panel = Panel.held_out(EPISODES)
    key = jax.random.PRNGKey(5)
    result = privilege.privilege_value(env, LinearTeacher(), FrozenTeacher(jnp.asarray(GAINS), None), panel,
                                       key=key, fields=("velocities", "dyn_params"))
    return panel, key, result


def test_cyclic_derangement_is_one_cycle_through_every_env():
    for n in (2, 5, 64):
        perm = np.asarray(privilege.cyclic_derangement(jax.random.PRNGKey(n), n))
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))
        seen, i = set(), 0
        for _ in range(n):
            seen.add(i)
            i = perm[i]
        assert i == 0 and len(seen) == n  # back at the start after exactly n steps
    assert not np.array_equal(privilege.cyclic_derangement(jax.random.PRNGKey(0), 64),
                              privilege.cyclic_derangement(jax.random.PRNGKey(1), 64))
    with pytest.raises(ValueError, match="at least 2"):
        privilege.cyclic_derangement(jax.random.PRNGKey(0), 1)


def test_permute_fields_moves_rows_and_nothing_else(env):
    obs = jax.jit(VmapAutoReset(env, 8).reset)(jax.random.PRNGKey(3)).obs
    fields = ("velocities", "dyn_params")
    perm = privilege.cyclic_derangement(jax.random.PRNGKey(4), 8)
    lanes = jax.vmap(lambda m: privilege.permute_fields(obs, fields, perm, m))(privilege.field_masks(2))
    for lane, permuted_field in enumerate((None, *fields)):
        out = jax.tree.map(lambda x: np.asarray(x[lane]), lanes)
        for name, value in obs.items():
            value = np.asarray(value)
            if name == permuted_field:
                np.testing.assert_array_equal(out[name], value[np.asarray(perm)])
                assert not np.array_equal(out[name], value)
                # The same multiset of rows: the field's distribution at this step is unchanged.
                np.testing.assert_array_equal(np.sort(out[name], axis=0), np.sort(value, axis=0))
            else:
                np.testing.assert_array_equal(out[name], value)


def test_paired_t_interval_closed_form():
    # d = 1, 2, 3, 4: mean 2.5, sample sd sqrt(5/3), t(0.975, 3) = 3.182446
    low, high = privilege.paired_t_interval(np.array([1.0, 2.0, 3.0, 4.0]))
    half = 3.182446 * np.sqrt(5 / 3) / 2
    assert low == pytest.approx(2.5 - half, abs=1e-5) and high == pytest.approx(2.5 + half, abs=1e-5)
    assert privilege.paired_t_interval(np.zeros(5)) == (0.0, 0.0)


def test_used_threshold_is_one_percent_of_the_return_or_a_significant_fall_rise():
    n = 40
    reference = {"return": np.full(n, 200.0), "fall": np.zeros(n)}
    wiggle = np.tile([-0.1, 0.1], n // 2)
    small = privilege.summarize_field(reference, {"return": 200.0 - 1.5 + wiggle, "fall": np.zeros(n)})
    large = privilege.summarize_field(reference, {"return": 200.0 - 2.5 + wiggle, "fall": np.zeros(n)})
    assert small["return_drop"] == pytest.approx(1.5) and not small["used"]  # 0.75 % of 200
    assert large["return_drop"] == pytest.approx(2.5) and large["used"]  # 1.25 %, interval ±0.03
    falls = np.zeros(n)
    falls[:10] = 1.0
    fallen = privilege.summarize_field(reference, {"return": np.full(n, 200.0), "fall": falls})
    assert fallen["used"] and fallen["fall_rate"] == 0.25 and fallen["fall_rate_rise"] == 0.25
    assert fallen["fall_rate_ci95"][0] < 0.25 < fallen["fall_rate_ci95"][1]


def test_an_ignored_field_costs_exactly_nothing_and_a_needed_one_costs_falls(measured):
    _, _, result = measured
    assert list(result) == ["velocities", "dyn_params"]
    ignored = result["dyn_params"]
    assert ignored["return_drop"] == 0.0 and ignored["return_drop_ci95"] == [0.0, 0.0]
    assert ignored["fall_rate_rise"] == 0.0 and not ignored["used"]
    needed = result["velocities"]
    assert needed["baseline_fall_rate"] == 0.0 and needed["baseline_return_mean"] > 240.0
    assert needed["used"] and needed["fall_rate_rise"] > 0.5 and needed["return_drop_ci95"][0] > 50.0
    assert needed["episodes"] == EPISODES


def test_the_vmapped_program_equals_a_separate_rollout_of_one_field(env, measured):
    panel, key, result = measured
    perm = privilege.cyclic_derangement(key, EPISODES)
    teacher = FrozenTeacher(jnp.asarray(GAINS), None)
    plain = teacher_policy(LinearTeacher(), teacher)

    def swapped(carry, obs, first, k):  # the permutation written out, without permute_fields or masks
        return plain(carry, {**obs, "velocities": obs["velocities"][perm]}, first, k)

    @jax.jit
    def separate():
        keys = panel.reset_keys()
        return (rollout_first_episodes(env, plain, None, keys, env.episode_length),
                rollout_first_episodes(env, swapped, None, keys, env.episode_length))

    base, perm_scores = jax.device_get(separate())
    got = result["velocities"]
    np.testing.assert_allclose(got["return_drop"], np.mean(base["return"] - perm_scores["return"]), rtol=1e-5)
    np.testing.assert_allclose(got["return_mean"], np.mean(perm_scores["return"]), rtol=1e-5)
    assert got["fall_rate"] == np.mean(perm_scores["fall"])
    assert got["baseline_fall_rate"] == np.mean(base["fall"])


def test_rows_of_the_suite_program_measure_what_the_privilege_program_does(env, measured):
    # The evaluation folds this measurement into its suite program (one row per field, the teacher
    # viewing the nominal condition through permutation_view): the same figures, no program of its own.
    panel, key, result = measured
    fields = ("velocities", "dyn_params")
    student = make_student(env.schema, env.action_size, kind="mlp", hidden=(8,))
    obs = student.schema.select(jax.tree.map(lambda x: x[0], VmapAutoReset(env, 1).reset(jax.random.PRNGKey(0)).obs),
                                "student")
    one = lambda x: jax.tree.map(lambda v: jnp.asarray(v)[None], x)  # noqa: E731  (a member axis)
    nominal = [p for p in S.resolve(env, "cartpole") if p.condition == "nominal"]
    scored = evaluate_suite(env, S.SUITES["cartpole"], S.stack(nominal * 3), LinearTeacher(),
                            FrozenTeacher(jnp.asarray(GAINS)[None], None), student,
                            one(student.init(jax.random.PRNGKey(1), obs)), one(init_stats(obs)), panel,
                            mask_rule=("falls", "timeouts"),
                            teacher_view=privilege.permutation_view(fields, privilege.cyclic_derangement(key, EPISODES)),
                            views=jnp.concatenate([jnp.zeros((1, 2)), jnp.eye(2)]))
    folded = privilege.value_from_scores(fields, scored[0][0]["episodes"]["teacher"],
                                         [row[0]["episodes"]["teacher"] for row in scored[1:]])
    for field in fields:
        for name in ("return_drop", "fall_rate", "baseline_return_mean", "used"):
            assert folded[field][name] == pytest.approx(result[field][name], abs=1e-3), (field, name)
    with pytest.raises(ValueError, match="2 fields but 1"):
        privilege.value_from_scores(fields, scored[0][0]["episodes"]["teacher"], [scored[1][0]["episodes"]["teacher"]])


def test_unknown_fields_are_refused(env):
    with pytest.raises(ValueError, match="nope"):
        privilege.privilege_value(env, LinearTeacher(), FrozenTeacher(jnp.asarray(GAINS), None), Panel.held_out(4),
                                  key=jax.random.PRNGKey(0), fields=("nope",))


@pytest.mark.slow
def test_a_trained_teacher_needs_its_velocities(env):
    """A real PPO teacher (100k env steps, ~1-2 min on 2 CPU cores) loses return without its velocities."""
    from distill_jax.config import PPOConfig
    from distill_jax.ppo.teacher import train_teacher
    from distill_jax.treeops import first_seed

    config = PPOConfig(num_envs=64, unroll_length=16, num_minibatches=4, num_epochs=4, learning_rate=1e-3,
                       total_env_steps=100_000)
    trained = train_teacher(env, config)
    teacher = FrozenTeacher(first_seed(trained.state.params["actor"]), first_seed(trained.state.obs_stats))
    result = privilege.privilege_value(env, trained.nets.actor, teacher, Panel.held_out(64), key=jax.random.PRNGKey(0))
    assert list(result) == list(env.schema.teacher_only)
    assert result["velocities"]["used"] and result["velocities"]["return_drop_ci95"][0] > 0.0


def test_markdown_table_has_one_row_per_field_with_its_verdict(env):
    entry = privilege.summarize_field({"return": np.array([200.0, 200.0]), "fall": np.zeros(2)},
                                      {"return": np.array([200.0, 200.0]), "fall": np.zeros(2)})
    table = privilege.markdown_table({"dyn_params": entry, "velocities": {**entry, "used": True}}, env.schema)
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| `dyn_params` (teacher_only) | 0.00 [0.00, 0.00] |") and lines[2].endswith("| **no** |")
    assert lines[3].endswith("| yes |")

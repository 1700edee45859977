"""Distillation update and phase on the real cartpole task (no mocks)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.config import ConfigError, DistillConfig, PPOConfig, replace_fields
from distill_jax.distill.masks import in_force
from distill_jax.hyperparams import coefficients
from distill_jax.distill.phase import build_student, distill_student, initial_student_states
from distill_jax.distill.update import FrozenTeacher, teacher_probability
from distill_jax.envs import get_env
from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.envs.base import Wrapper
from distill_jax.evaluate import Panel, evaluate_panel
from distill_jax.loop import NonFiniteError
from distill_jax.ppo.teacher import train_teacher
from distill_jax.treeops import first_seed

TINY_PPO = PPOConfig(num_envs=16, unroll_length=8, num_minibatches=2, num_epochs=2, total_env_steps=16 * 8 * 2)
TINY = DistillConfig(num_envs=16, unroll_length=8, num_minibatches=2, num_epochs=2, total_env_steps=16 * 8 * 2)


@pytest.fixture(scope="module")
def env():
    return get_env("cartpole")


@pytest.fixture(scope="module")
def tiny_teacher(env):
    result = train_teacher(env, TINY_PPO, seed=0)
    return result.nets.actor, FrozenTeacher(result.state.params["actor"], result.state.obs_stats)


def behaviour(**fields):
    return replace_fields(TINY, {"behaviour": fields})


def test_behaviour_schedule():
    def beta(config, update):
        return float(teacher_probability(config, coefficients(config), jnp.array(update)))

    assert beta(behaviour(kind="teacher"), 5) == 1.0
    assert beta(behaviour(kind="student"), 0) == 0.0
    mix = behaviour(kind="mixture", beta_start=0.8, beta_end=0.2, beta_decay_updates=4)
    np.testing.assert_allclose([beta(mix, u) for u in range(6)], [0.8, 0.65, 0.5, 0.35, 0.2, 0.2], atol=1e-6)


MIXTURE = behaviour(kind="mixture", beta_start=1.0, beta_end=0.0, beta_decay_updates=1)


@pytest.fixture(scope="module")
def mixture_run(env, tiny_teacher):
    actor, teacher = tiny_teacher
    before = jax.tree.map(np.asarray, teacher.params)
    return before, distill_student(env, actor, teacher, MIXTURE, seed=1)


def test_who_acts_follows_the_schedule_and_teacher_stays_frozen(tiny_teacher, mixture_run):
    _, teacher = tiny_teacher
    before, result = mixture_run
    # beta = 1 at update 0 (the teacher acts everywhere), 0 at update 1 (DAgger: the student acts).
    assert [row["teacher_acted"] for row in result.history] == [[1.0], [0.0]]
    # The optimiser holds only the student's parameters; the teacher is untouched.
    n_student = len(jax.tree.leaves(result.state.params))
    assert len(jax.tree.leaves(result.state.opt_state)) == 2 * n_student + 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(teacher.params)):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(result.history[-1]["kl"]).all()
    assert 0.0 <= result.history[-1]["masked/any"][0] <= 1.0


def test_same_seed_same_student(env, tiny_teacher, mixture_run):
    actor, teacher = tiny_teacher
    again = distill_student(env, actor, teacher, MIXTURE, seed=1)
    for x, y in zip(jax.tree.leaves(mixture_run[1].state.params), jax.tree.leaves(again.state.params)):
        np.testing.assert_array_equal(x, y)


def test_gru_student_trains(env, tiny_teacher):
    actor, teacher = tiny_teacher
    config = replace_fields(TINY, {"student": {"kind": "gru", "gru_size": 16, "hidden": (32,)}})
    result = distill_student(env, actor, teacher, config, seed=2)
    assert result.state.carry.shape == (1, 16, 16)
    assert np.isfinite(result.history[-1]["loss"]).all()


def test_student_cannot_read_privileged_fields(env, mixture_run):
    result = mixture_run[1]
    assert set(result.student.schema.fields_for("student")) <= set(env.schema.student_obs)
    params = first_seed(result.state.params)
    obs = first_seed(result.state.env_state.obs)
    out = result.student.module.apply(params, obs)
    poisoned = {k: (v + 1e3 if k in env.schema.privileged else v) for k, v in obs.items()}
    again = result.student.module.apply(params, poisoned)
    np.testing.assert_array_equal(out.loc, again.loc)


def test_bad_distill_config_is_named():
    with pytest.raises(ConfigError, match="distill.behaviour.kind='expert'"):
        behaviour(kind="expert").validate()
    with pytest.raises(ConfigError, match="distill.num_minibatches=3"):
        dataclasses.replace(TINY, num_minibatches=3).validate()
    with pytest.raises(ConfigError, match="unknown rule"):
        replace_fields(TINY, {"mask": {"rule": ["falls", "bogus"]}}).validate()


class NaNRewards(Wrapper):
    """The real task with every reward replaced by NaN: whatever reads rewards is poisoned."""

    def step(self, state, action):
        state = self.env.step(state, action)
        return state.replace(reward=jnp.full_like(state.reward, jnp.nan))


def test_pure_distillation_reads_no_rewards(env, tiny_teacher):
    actor, teacher = tiny_teacher
    clean = distill_student(env, actor, teacher, TINY, seed=3)
    poisoned = distill_student(NaNRewards(env), actor, teacher, TINY, seed=3)
    for x, y in zip(jax.tree.leaves(clean.state.params), jax.tree.leaves(poisoned.state.params)):
        np.testing.assert_array_equal(x, y)
    assert clean.state.critic is None


@pytest.mark.slow  # three distillation programs of their own (~60 s on 2 cores)
def test_ppo_term_trains_an_asymmetric_critic_from_rewards(env, tiny_teacher):
    actor, teacher = tiny_teacher
    config = replace_fields(TINY, {"ppo_term": {"enabled": True, "coef": 0.5, "critic_hidden": (32,)}})
    with_ppo = distill_student(env, actor, teacher, config, seed=3)
    pure = distill_student(env, actor, teacher, TINY, seed=3)
    row = with_ppo.history[-1]
    for key in ("ppo/policy_loss", "ppo/value_loss", "distill_loss", "kl"):
        assert np.isfinite(row[key]).all(), key
    np.testing.assert_allclose(row["loss"], np.add(row["distill_loss"], 0.5 * np.asarray(row["ppo/total_loss"])),
                               rtol=1e-5)
    # The critic (all fields, training only) moved away from its initialisation.
    initial = initial_student_states(VmapAutoReset(env, config.num_envs), with_ppo.student, config, 3, 1)
    assert not all(np.array_equal(x, y) for x, y in
                   zip(jax.tree.leaves(initial.critic), jax.tree.leaves(with_ppo.state.critic)))
    assert not all(np.array_equal(x, y) for x, y in
                   zip(jax.tree.leaves(with_ppo.state.params), jax.tree.leaves(pure.state.params)))
    with pytest.raises(NonFiniteError, match="reward"):
        distill_student(NaNRewards(env), actor, teacher, config, seed=3)
    with pytest.raises(ConfigError, match="needs distill.behaviour.kind='student'"):
        replace_fields(config, {"behaviour": {"kind": "teacher"}}).validate()


@pytest.mark.slow  # an encoder teacher and a latent student of their own (~60 s on 2 cores)
def test_latent_matching_regresses_the_teachers_privileged_latent(env):
    from distill_jax.config import NetworkConfig, RunConfig

    network = NetworkConfig(actor_hidden=(32,), critic_hidden=(32,), privileged_latent=4, encoder_hidden=(16,))
    result = train_teacher(env, dataclasses.replace(TINY_PPO, network=network), seed=0)
    actor, params = result.nets.actor, first_seed(result.state.params["actor"])
    obs = jax.tree.map(lambda x: x[0, :4], result.state.env_state.obs)
    # The encoder reads exactly the privileged fields.
    z = actor.apply(params, obs, method="encode")
    moved_student = {k: (v + 1.0 if k in env.schema.student_obs else v) for k, v in obs.items()}
    np.testing.assert_array_equal(z, actor.apply(params, moved_student, method="encode"))
    moved_privileged = {k: (v + 1.0 if k in env.schema.teacher_only else v) for k, v in obs.items()}
    assert not np.allclose(z, actor.apply(params, moved_privileged, method="encode"))

    config = replace_fields(TINY, {"student": {"latent_head": True}, "objective": {"latent_coef": 1.0},
                                   "total_env_steps": 16 * 8 * 6})
    frozen = FrozenTeacher(result.state.params["actor"], result.state.obs_stats)
    student = distill_student(env, actor, frozen, config, seed=4)
    assert np.isfinite([row["latent_error"][0] for row in student.history]).all()
    assert "latent_head" in student.state.params["params"]

    # On one fixed batch of states, the trained student predicts the teacher's latent better than at init.
    from distill_jax.normalization import normalize

    states = first_seed(result.state.env_state.obs)  # 16 states the student never trained on
    target = actor.apply(params, normalize(first_seed(result.state.obs_stats), states),
                         method="encode")
    initial = initial_student_states(VmapAutoReset(env, config.num_envs), student.student, config, 4, 1)

    def latent_error(state):
        one = first_seed(state)
        student_obs = normalize(one.obs_stats, student.student.schema.select(states, "student"))
        _, predicted = student.student.sequence_with_latent(one.params, None, student_obs, None)
        return float(np.mean(np.square(np.asarray(predicted) - np.asarray(target))))

    assert latent_error(student.state) < 0.7 * latent_error(initial), (latent_error(student.state),
                                                                       latent_error(initial))
    with pytest.raises(ConfigError, match="privileged_latent"):
        RunConfig(distill=config).validate()


def test_a_new_student_reuses_the_compiled_panel_program(env, tiny_teacher):
    # Every run trains new weights; the panel program must take them as arguments so that it
    # compiles once per shape (the persistent cache serves later runs), not once per run with the
    # weights baked in as constants.
    actor, teacher = tiny_teacher
    student = build_student(env, TINY)
    states = initial_student_states(VmapAutoReset(env, TINY.num_envs), student, TINY, seed=0, num_seeds=2)
    panel = Panel((10**6, 10**6 + 1))
    misses = []

    def count_misses(event, **kwargs):
        if event == "/jax/compilation_cache/cache_misses":
            misses.append(event)

    def evaluate(k):
        params, stats = jax.tree.map(lambda x: x[k], (states.params, states.obs_stats))
        return evaluate_panel(env, actor, first_seed(teacher), student, params, stats, panel,
                              mask_rule=in_force(TINY.mask, env.schema)[0],
                              mask_thresholds=in_force(TINY.mask, env.schema)[1])

    min_compile_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # store even a fast compile
    jax.monitoring.register_event_listener(count_misses)
    try:
        first = evaluate(0)
        misses.clear()
        second = evaluate(1)
    finally:
        jax.monitoring.unregister_event_listener(count_misses)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)
    assert misses == [], "the second student's weights compiled a new panel program"
    assert first["student"] != second["student"]  # the weights did reach the program


def test_a_sweep_trains_every_value_in_one_program_equal_to_separate_runs(env, tiny_teacher, monkeypatch):
    from distill_jax.distill import phase

    actor, teacher = tiny_teacher
    values = (0.0, 0.05, 0.5)
    traces = []
    original = phase.distill_step
    monkeypatch.setattr(phase, "distill_step", lambda *a, **k: (traces.append(1), original(*a, **k))[1])
    tiled = jax.tree.map(lambda x: jnp.repeat(x, len(values), axis=0), teacher)  # one teacher per member
    swept = distill_student(env, actor, tiled, TINY, seed=5,
                            sweep_points=[{"objective.ent_coef": v} for v in values])
    assert len(traces) == 1, "the grid's training step was traced more than once"
    assert [float(x) for x in swept.state.hparams["objective"]["ent_coef"]] == pytest.approx(values)
    monkeypatch.undo()
    for g, value in enumerate(values):
        alone = distill_student(env, actor, teacher, replace_fields(TINY, {"objective": {"ent_coef": value}}), seed=5)
        for x, y in zip(jax.tree.leaves(swept.state.params), jax.tree.leaves(alone.state.params)):
            np.testing.assert_allclose(np.asarray(x)[g], np.asarray(y)[0], rtol=1e-5, atol=1e-6)
    scale = lambda p: p["params"]  # noqa: E731
    first, last = (jax.tree.leaves(jax.tree.map(lambda x: x[g], scale(swept.state.params))) for g in (0, 2))
    assert not all(np.array_equal(a, b) for a, b in zip(first, last)), "the coefficient did not reach the program"


def test_a_changed_coefficient_runs_the_same_compiled_program(env, tiny_teacher):
    # Float coefficients are data in the train state, not constants in the program: a run with
    # another ε and learning rate loads the first run's programs from the persistent cache.
    actor, teacher = tiny_teacher
    misses = []

    def count_misses(event, **kwargs):
        if event == "/jax/compilation_cache/cache_misses":
            misses.append(event)

    changed = replace_fields(TINY, {"objective": {"ent_coef": 0.3}, "learning_rate": 3e-3, "max_grad_norm": 0.5})
    min_compile_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # store even a fast compile
    jax.monitoring.register_event_listener(count_misses)
    try:
        first = distill_student(env, actor, teacher, TINY, seed=6)
        misses.clear()
        second = distill_student(env, actor, teacher, changed, seed=6)
    finally:
        jax.monitoring.unregister_event_listener(count_misses)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)
    assert misses == [], "changing a coefficient compiled a new program"
    assert float(second.state.hparams["objective"]["ent_coef"][0]) == pytest.approx(0.3)
    assert not np.array_equal(jax.tree.leaves(first.state.params)[0], jax.tree.leaves(second.state.params)[0])


def test_an_annealed_student_rate_reaches_the_optimiser_and_falls_over_the_phases_gradient_steps(
        env, tiny_teacher, monkeypatch):
    from distill_jax.distill import update

    actor, teacher = tiny_teacher
    config = dataclasses.replace(TINY, anneal_lr=True)
    assert config.anneal_steps == config.num_updates * 2 * 2 == 8 and TINY.anneal_steps == 0
    asked, real = [], update.make_optimizer
    monkeypatch.setattr(update, "make_optimizer", lambda *a, **k: asked.append(a[2:] + tuple(k.values())) or real(*a, **k))
    annealed = distill_student(env, actor, teacher, config, seed=1)
    assert asked and all(args == (8,) for args in asked), asked  # init and every update: the same schedule
    constant = distill_student(env, actor, teacher, TINY, seed=1)
    assert asked[-1] == (0,)  # a constant rate
    leaves = lambda r: jax.tree.leaves(r.state.params)  # noqa: E731
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(annealed), leaves(constant)))
    with pytest.raises(ConfigError, match=r"distill\.anneal_lr"):
        dataclasses.replace(TINY, anneal_lr="yes").validate()

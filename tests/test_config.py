"""The config as data: validation (non-finite floats too), moved fields, traced paths and sweeps."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.config import (ConfigError, DistillConfig, PPOConfig, RunConfig, apply_override, parse_sweep,
                                replace_fields, traced_paths)
from distill_jax.hyperparams import coefficients, member_coefficients


@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_floats_are_refused_naming_the_field(raw):
    with pytest.raises(ConfigError, match=r"ppo\.learning_rate=.*finite"):
        apply_override(RunConfig(), f"ppo.learning_rate={raw}")
    with pytest.raises(ConfigError, match=r"distill\.objective\.ent_coef=.*finite"):
        apply_override(RunConfig(), f"distill.objective.ent_coef={raw}")


def test_a_non_finite_value_set_directly_fails_validation():
    with pytest.raises(ConfigError, match=r"ppo\.gamma=nan: must be a finite number"):
        RunConfig(ppo=PPOConfig(gamma=math.nan)).validate()


@pytest.mark.parametrize("raw", ["NaN", "Infinity"])
def test_non_finite_env_overrides_are_refused_naming_the_entry(raw):
    # Env overrides are free-form (numbers, lists, mappings), so the check walks them.
    with pytest.raises(ConfigError, match=r"^env_overrides\.noise_std=.*finite"):
        apply_override(RunConfig(), f'env_overrides=[["noise_std", {raw}]]').validate()
    with pytest.raises(ConfigError, match=r"eval_env_overrides\.noise_std\.cart_pos=.*finite"):
        RunConfig(eval_env_overrides=(("noise_std", {"cart_pos": math.inf}),)).validate()
    with pytest.raises(ConfigError, match=r"env_overrides\.ranges\[0\]\[2\]=nan"):
        RunConfig(env_overrides=(("ranges", [["pole_mass", "body_mass:pole", math.nan, 2.0]]),)).validate()
    RunConfig(env_overrides=(("noise_std", 0.02), ("history_length", 4))).validate()  # finite ones pass


def test_a_field_of_the_old_flat_distill_config_names_where_it_moved():
    with pytest.raises(ConfigError, match=r"'distill\.student_kind' \(it moved to distill\.student\.kind\)"):
        apply_override(RunConfig(), "distill.student_kind=gru")
    with pytest.raises(ConfigError, match=r"it moved to distill\.behaviour\.kind"):
        apply_override(RunConfig(), "distill.behaviour=teacher")


def test_traced_paths_are_the_float_coefficients_and_nothing_that_fixes_a_shape():
    paths = set(traced_paths(RunConfig()))
    assert {"ppo.learning_rate", "ppo.clip_eps", "ppo.ent_coef", "ppo.value_clip", "distill.learning_rate",
            "distill.objective.ent_coef", "distill.behaviour.beta_start", "distill.ppo_term.coef"} <= paths
    assert not paths & {"ppo.num_envs", "distill.num_envs", "distill.student.gru_size",
                        "distill.behaviour.beta_decay_updates", "distill.ppo_term.enabled"}
    config = RunConfig()
    for path in paths:  # every traced field is a float
        node = config
        for part in path.split("."):
            node = getattr(node, part)
        assert isinstance(node, float), path


def test_coefficients_mirror_the_config_as_float32_scalars():
    hp = coefficients(DistillConfig(learning_rate=3e-3))
    assert set(hp) == {"learning_rate", "max_grad_norm", "objective", "behaviour", "ppo_term"}
    assert hp["learning_rate"].dtype == jnp.float32 and hp["learning_rate"].shape == ()
    assert float(hp["learning_rate"]) == pytest.approx(3e-3)
    assert set(hp["objective"]) == {"ent_coef", "latent_coef"}


def test_member_coefficients_put_the_seeds_fastest():
    stacked = member_coefficients(PPOConfig(), [{"ent_coef": 0.0}, {"ent_coef": 0.5}], num_seeds=2)
    np.testing.assert_allclose(stacked["ent_coef"], [0.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(stacked["clip_eps"], [0.2] * 4)


def test_sweep_grid_teacher_grid_and_pairing():
    config = RunConfig(num_seeds=2, sweep=(("ppo.ent_coef", (0.0, 0.01)), ("distill.objective.ent_coef", (0.0, 0.1, 0.2))))
    config.validate()
    assert len(config.sweep_points) == 6 and config.num_members == 12
    assert config.phase_points("ppo") == [{"ent_coef": 0.0}, {"ent_coef": 0.01}]
    assert config.phase_points("distill")[1] == {"objective.ent_coef": 0.1}
    # Student member g*K+k learns from the teacher member with the same ppo value and seed.
    pairs = config.teacher_members()
    for m, t in enumerate(pairs):
        g, k = divmod(m, 2)
        assert t % 2 == k
        assert config.phase_points("ppo")[t // 2]["ent_coef"] == config.sweep_points[g]["ppo.ent_coef"]


@pytest.mark.parametrize("sweep,message", [
    ((("ppo.num_envs", (64.0, 128.0)),), "only traced float fields can be swept"),
    ((("distill.objective.ent_coef", (0.0,)), ("distill.objective.ent_coef", (0.1,))), "swept twice"),
    ((("ppo.learning_rate", (1e-3, -1.0)),), r"sweep ppo\.learning_rate=-1\.0: ppo\.learning_rate=-1\.0: must be > 0"),
    ((("ppo.gamma", (0.9, math.inf)),), "must be a finite number"),
])
def test_bad_sweeps_are_refused_in_one_line(sweep, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(sweep=sweep).validate()


def test_sweep_flag_parsing():
    assert parse_sweep("distill.objective.ent_coef=0,0.01, 0.1") == ("distill.objective.ent_coef", (0.0, 0.01, 0.1))
    with pytest.raises(ConfigError, match="'x' is not a number"):
        parse_sweep("ppo.ent_coef=0,x")
    with pytest.raises(ConfigError, match="must be a finite number"):
        parse_sweep("ppo.ent_coef=0,nan")
    # A sweep given in a JSON config file comes back as tuples.
    config = replace_fields(RunConfig(), {"sweep": [["ppo.ent_coef", [0, 0.01]]]})
    assert config.sweep == (("ppo.ent_coef", (0, 0.01)),) and config.sweep_points == [{"ppo.ent_coef": 0.0},
                                                                                      {"ppo.ent_coef": 0.01}]


def test_the_ppo_term_and_latent_head_are_switches_not_float_thresholds():
    with pytest.raises(ConfigError, match=r"distill\.ppo_term\.enabled=True: the PPO term is on-policy"):
        replace_fields(DistillConfig(), {"ppo_term": {"enabled": True}, "behaviour": {"kind": "teacher"}}).validate()
    with pytest.raises(ConfigError, match=r"distill\.student\.latent_head=True: needs a teacher with a privileged"):
        replace_fields(RunConfig(), {"distill": {"student": {"latent_head": True}}}).validate()

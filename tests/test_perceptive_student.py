"""The perceptive student: height_scan through a scan encoder, no privileged reads, the blind default unchanged.

Built on the quadruped_terrain schema (building the task is ~5 s; nothing is stepped: the
observations are random arrays of the schema's shapes, which is all the networks and the leak
audit look at).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

from distill_jax import leak_audit, normalization
from distill_jax.config import ConfigError, DistillConfig, RunConfig, StudentConfig, apply_override
from distill_jax.distill.phase import build_student
from distill_jax.distill.student import make_student
from distill_jax.envs import get_env
from distill_jax.evaluate import student_act_fn, student_actions
from distill_jax.export import check_onnx, export_onnx, export_student, load_student
from distill_jax.networks import ScanSpec, make_actor
from distill_jax.schema import PrivilegedFieldError, SchemaError
from distill_jax.treeops import first_seed

B = 4
BLIND_FIELDS = ("joint_pos", "joint_vel", "base_ang_vel", "projected_gravity", "command", "last_action", "history")


@pytest.fixture(scope="module")
def env():
    return get_env("quadruped_terrain")


@pytest.fixture(scope="module")
def obs(env):
    """Every field of the schema (privileged ones too), ``[B, *shape]``."""
    specs = sorted(env.schema.field_specs.items())
    return {name: jax.random.normal(jax.random.PRNGKey(i), (B, *spec.shape)) for i, (name, spec) in enumerate(specs)}


def built(env, obs, spec, kind="mlp"):
    student = make_student(env.schema, env.action_size, kind=kind, hidden=(16, 16), gru_size=8, scan=spec)
    fields = student.schema.select(obs, "student")
    params = student.init(jax.random.PRNGKey(2), first_seed(fields))
    stats = normalization.update_stats(normalization.init_stats(first_seed(fields)), fields)
    return student, params, stats


SPECS = {
    "mlp": ScanSpec(kind="mlp", hidden=(16,), embedding=8),
    "cnn": ScanSpec(kind="cnn", channels=(4, 4), embedding=8),
    "cnn_gate": ScanSpec(kind="cnn", channels=(4,), embedding=8, gate=True),
}


# ------------------------------------------------------------------ the default is unchanged
def test_the_default_student_is_the_flat_mlp_as_before(env, obs):
    """scan_encoder='none' (the default) builds no encoder: the parameter tree is torso + head, the
    torso's input is every student field flattened in schema order, and the output matches a NumPy
    forward pass over that flat vector."""
    assert StudentConfig().scan_encoder == "none" and StudentConfig().scan_spec() is None
    config = DistillConfig(student=StudentConfig(hidden=(16, 16)))
    student = build_student(env, config)
    assert student.module.scan is None
    fields = student.schema.select(obs, "student")
    params = student.init(jax.random.PRNGKey(0), first_seed(fields))
    shapes = jax.tree.map(jnp.shape, params["params"])
    width = sum(math.prod(env.schema.field_specs[n].shape) for n in env.schema.student_obs)
    assert shapes == {"torso": {"hidden_0": {"kernel": (width, 16), "bias": (16,)},
                                "hidden_1": {"kernel": (16, 16), "bias": (16,)}},
                      "head": {"loc": {"kernel": (16, 12), "bias": (12,)}, "scale": {"kernel": (16, 12), "bias": (12,)}}}
    # The same parameters as an actor built without the new argument at all (same init key).
    plain = make_actor(student.schema, "student", env.action_size, hidden=(16, 16), activation="elu")
    assert jax.tree.all(jax.tree.map(np.array_equal, plain.init(jax.random.PRNGKey(0), first_seed(fields)), params))

    p = jax.tree.map(np.asarray, params["params"])
    x = np.concatenate([np.asarray(obs[n]).reshape(B, -1) for n in env.schema.student_obs], axis=-1)
    elu = lambda v: np.where(v > 0, v, np.expm1(v))  # noqa: E731
    for layer in ("hidden_0", "hidden_1"):
        x = elu(x @ p["torso"][layer]["kernel"] + p["torso"][layer]["bias"])
    loc = x @ p["head"]["loc"]["kernel"] + p["head"]["loc"]["bias"]
    np.testing.assert_allclose(np.asarray(student.sequence(params, None, obs, None).loc), loc, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ leak audit
@pytest.mark.parametrize("name", list(SPECS))
def test_perceptive_student_reads_height_scan_and_passes_the_leak_audit(env, obs, name):
    student, params, stats = built(env, obs, SPECS[name])
    assert "height_scan" in student.schema.fields_for("student")
    assert "scan_height_scan" in params["params"]
    # The trunk reads the other fields flat and the scan only as its 8-wide embedding.
    others = sum(math.prod(env.schema.field_specs[n].shape) for n in student.schema.student_obs if n != "height_scan")
    assert params["params"]["torso"]["hidden_0"]["kernel"].shape[0] == others + 8
    act = student_act_fn(student, params, stats)
    checks = leak_audit.audit(env.schema, student.schema.fields_for("student"), act, obs, jax.random.PRNGKey(1))
    assert all(c["passed"] for c in checks.values()), checks
    for privileged in ("terrain_heights", "terrain_scan"):
        assert privileged in obs and privileged in env.schema.privileged


def test_a_student_fed_the_exact_scan_fails_the_leak_audit(env, obs):
    """The realistic leak: the teacher's exact terrain_scan swapped into height_scan's height channel
    around a clean perceptive student. Its declared inputs are deployable (structural passes); the
    other three checks catch it."""
    student, params, stats = built(env, obs, SPECS["cnn"])
    clean = student_act_fn(student, params, stats)
    leaky = lambda o: clean({**o, "height_scan": o["height_scan"].at[..., 0].set(o["terrain_scan"])})  # noqa: E731
    checks = leak_audit.audit(env.schema, student.schema.fields_for("student"), leaky, obs, jax.random.PRNGKey(1))
    assert checks["structural"]["passed"]
    assert not any(checks[c]["passed"] for c in ("dependency", "perturbation", "dataflow")), checks
    assert "terrain_scan" in checks["dataflow"]["detail"]


def test_a_scan_encoder_over_a_privileged_grid_fails_all_four(env, obs):
    """A "student" built on the teacher's fields that encodes terrain_scan is refused by every check."""
    actor = make_actor(env.schema, "teacher", env.action_size, hidden=(16,),
                       scan=ScanSpec(kind="cnn", fields=("height_scan", "terrain_scan"), channels=(4,), embedding=8))
    params = actor.init(jax.random.PRNGKey(3), first_seed(obs))
    act = lambda o: jnp.tanh(actor.apply(params, o).loc)  # noqa: E731
    checks = leak_audit.audit(env.schema, env.schema.fields_for("teacher"), act, obs, jax.random.PRNGKey(1))
    assert not any(c["passed"] for c in checks.values()), checks


def test_a_student_scan_field_must_be_deployable_and_a_grid(env):
    with pytest.raises(SchemaError, match="scan field 'terrain_scan' is not one of the student's fields"):
        make_student(env.schema, env.action_size, scan=ScanSpec(fields=("terrain_scan",)))
    with pytest.raises(SchemaError, match="scan field 'height_scan' is not one of the student's fields"):
        make_student(env.schema, env.action_size, student_fields=BLIND_FIELDS, scan=ScanSpec())
    with pytest.raises(SchemaError, match="scan field 'joint_pos' has shape"):
        make_student(env.schema, env.action_size, scan=ScanSpec(fields=("joint_pos",)))


# ------------------------------------------------------------------ the encoder sees the scan
@pytest.mark.parametrize("kind", ["mlp", "gru"])
@pytest.mark.parametrize("name", list(SPECS))
def test_actions_depend_on_the_scan(env, obs, name, kind):
    student, params, stats = built(env, obs, SPECS[name], kind)

    def loc(scan):
        o = normalization.normalize(stats, student.schema.select({**obs, "height_scan": scan}, "student"))
        return student.step(params, student.initial_carry(B), o, jnp.ones(B))[1].loc

    grad = jax.grad(lambda s: jnp.sum(loc(s) ** 2))(obs["height_scan"])
    assert grad.shape == obs["height_scan"].shape
    assert np.all(np.isfinite(grad))
    # Both channels (height and validity) and every grid point reach the actions.
    per_point = np.abs(np.asarray(grad)).sum(axis=0)
    assert np.all(per_point > 0), np.argwhere(per_point == 0)
    moved = loc(obs["height_scan"] + 0.5)
    assert not np.allclose(np.asarray(moved), np.asarray(loc(obs["height_scan"])))


def test_a_blind_student_ignores_the_scan(env, obs):
    student = make_student(env.schema, env.action_size, hidden=(16, 16), student_fields=BLIND_FIELDS)
    params = student.init(jax.random.PRNGKey(0), first_seed(student.schema.select(obs, "student")))
    a = student_actions(student, params, None, obs)
    b = student_actions(student, params, None, {**obs, "height_scan": obs["height_scan"] + 1.0})
    assert np.array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------ shapes, jit, vmap
@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_shapes_jit_and_vmap(env, obs, kind):
    student, params, _ = built(env, obs, SPECS["cnn_gate"], kind)
    carry = student.initial_carry(B)
    first = jnp.ones(B)
    _, dist = student.step(params, carry, obs, first)
    assert dist.loc.shape == (B, env.action_size)
    _, jitted = jax.jit(student.step)(params, carry, obs, first)
    np.testing.assert_allclose(np.asarray(jitted.loc), np.asarray(dist.loc), rtol=1e-5, atol=1e-6)
    # One observation at a time, vmapped over the batch: the same actions as the batched call.
    per_env = jax.vmap(lambda c, o, f: student.step(params, c, o, f)[1].loc)(carry, obs, first)
    np.testing.assert_allclose(np.asarray(per_env), np.asarray(dist.loc), rtol=1e-5, atol=1e-6)
    seq = jax.tree.map(lambda x: jnp.stack([x, -x, 0.5 * x]), obs)  # [T=3, B, ...]
    first_seq = jnp.zeros((3, B)).at[0].set(1.0)
    assert student.sequence(params, carry, seq, first_seq).loc.shape == (3, B, env.action_size)


# ------------------------------------------------------------------ config and CLI
def test_the_blind_and_perceptive_settings_parse_and_build(env):
    """The documented pair (docs/configuration.md): ``--phase distill --from RUN --out NEW --set ...``
    applied to a quadruped_terrain config, as :func:`distill_jax.run.pipeline.fork_run` applies it
    to the run's recorded one."""
    from distill_jax.config import replace_fields
    from distill_jax.run.cli import config_overrides
    from distill_jax.run.presets import preset
    from distill_jax.train import build_parser

    def forked(*settings):
        args = build_parser().parse_args(["--phase", "distill", "--from", "runs/terrain", "--out", "runs/x",
                                          *[a for s in settings for a in ("--set", s)]])
        config = replace_fields(preset("default", "quadruped_terrain"), config_overrides(args))
        config.validate()
        return config

    blind = forked("distill.student.fields=" + str(list(BLIND_FIELDS)).replace("'", '"'))
    assert blind.env == "quadruped_terrain"
    assert blind.distill.student.fields == BLIND_FIELDS and blind.distill.student.scan_spec() is None
    perceptive = forked("distill.student.scan_encoder=cnn", "distill.student.scan_channels=[8, 8]",
                        "distill.student.scan_gate=true")
    spec = perceptive.distill.student.scan_spec()
    assert spec == ScanSpec(kind="cnn", fields=("height_scan",), hidden=(64,), channels=(8, 8), embedding=32, gate=True)
    assert build_student(env, blind.distill).schema.student_obs == BLIND_FIELDS
    assert build_student(env, perceptive.distill).module.scan == spec


@pytest.mark.parametrize("setting, message", [
    ("distill.student.scan_encoder=resnet", r"distill.student.scan_encoder='resnet': must be one of"),
    ("distill.student.scan_channels=[]", r"distill.student.scan_channels=\(\): needs one or more positive"),
    ("distill.student.scan_embedding=0", r"distill.student.scan_embedding=0: must be a positive integer"),
    ("distill.student.scan_fields=[]", r"distill.student.scan_fields=\(\): needs one or more field names"),
])
def test_bad_scan_settings_are_refused_in_one_line(setting, message):
    with pytest.raises(ConfigError, match=message):
        apply_override(RunConfig(), setting).validate()


def test_a_scan_encoder_on_a_student_without_the_scan_field_is_refused():
    config = apply_override(RunConfig(), 'distill.student.fields=["joint_pos"]')
    config = apply_override(config, "distill.student.scan_encoder=cnn")
    with pytest.raises(ConfigError, match="distill.student.scan_fields=.*a scan encoder reads fields the student has"):
        config.validate()


# ------------------------------------------------------------------ export
def test_export_of_a_perceptive_student(env, obs, tmp_path):
    student, params, stats = built(env, obs, SPECS["cnn_gate"])
    directory = export_student(tmp_path / "export", student, params, stats)
    deployed = load_student(directory)
    deployable = {n: np.asarray(obs[n]) for n in student.schema.student_obs}
    exported = np.asarray(deployed(deployable))
    reference = np.asarray(jax.jit(lambda p, s, o: student_actions(student, p, s, o))(params, stats, obs))
    np.testing.assert_allclose(exported, reference, rtol=0, atol=1e-6)
    assert deployed.manifest["inputs"]["height_scan"]["shape"] == [11, 7, 2]
    with pytest.raises(PrivilegedFieldError, match="terrain_scan"):
        deployed({**deployable, "terrain_scan": np.asarray(obs["terrain_scan"])})



@pytest.mark.parametrize("name,kind", [("mlp", "mlp"), ("cnn", "mlp"), ("cnn_gate", "gru")])
def test_student_onnx_of_a_perceptive_student_acts_like_the_in_process_one(env, obs, tmp_path, name, kind):
    """The hand-built graph's scan encoders (MLP, CNN, gate; feed-forward and recurrent trunks) against
    the in-process student over 20 steps of drifting observations, and no input for a privileged field."""
    pytest.importorskip("onnxruntime")
    student, params, stats = built(env, obs, SPECS[name], kind)
    path = export_onnx(tmp_path / "export", student, params, stats, env)
    check = check_onnx(path, env, student, params, stats, obs, min_observations=80)
    assert check["passed"], check
    assert check["privileged_field_refused"]
    inputs = {i.name for i in onnx.load(path).graph.input}
    assert "height_scan" in inputs and "terrain_scan" not in inputs and "terrain_heights" not in inputs

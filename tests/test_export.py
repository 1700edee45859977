"""The exported student: same actions as in process, privileged inputs rejected, no pickle."""

import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.config import DistillConfig, StudentConfig
from distill_jax.distill.phase import build_student
from distill_jax.distill.update import init_student
from distill_jax.envs import get_env
from distill_jax.envs.autoreset import VmapAutoReset
from distill_jax.evaluate import student_actor_only
from distill_jax.export import ExportError, export_student, load_student
from distill_jax.normalization import update_stats
from distill_jax.schema import MissingFieldError, PrivilegedFieldError, SchemaError, UnknownFieldError

NUM_ENVS = 16


def in_process_rollout(student, params, stats, env_step, env_state, steps):
    """The evaluation wrapper acting for ``steps`` steps; returns observations and actions per step."""

    @jax.jit
    def act(p, s, carry, obs, first):
        policy = student_actor_only(student, p, s, deterministic=True)
        return policy(carry, obs, first, jax.random.PRNGKey(0))

    carry, first, trace = student.initial_carry(NUM_ENVS), jnp.ones((NUM_ENVS,)), []
    for _ in range(steps):
        carry, step = act(params, stats, carry, env_state.obs, first)
        trace.append((env_state.obs, np.asarray(step.action), np.asarray(env_state.first)))
        env_state = env_step(env_state, step.action)
        first = env_state.first
    return trace


@pytest.fixture(scope="module", params=["mlp", "gru"])
def exported(request, tmp_path_factory):
    env = get_env("cartpole")
    batched = VmapAutoReset(env, NUM_ENVS)
    config = DistillConfig(num_envs=NUM_ENVS, student=StudentConfig(kind=request.param, hidden=(32, 32), gru_size=16))
    student = build_student(env, config)
    state = init_student(jax.random.PRNGKey(0), batched, student, config)
    # Non-trivial normaliser statistics, so normalisation inside the artifact is exercised.
    stats = update_stats(state.obs_stats, student.schema.select(jax.tree.map(lambda x: x[None], state.env_state.obs), "student"))
    directory = export_student(tmp_path_factory.mktemp(request.param) / "export", student, state.params, stats)
    trace = in_process_rollout(student, state.params, stats, jax.jit(batched.step), state.env_state, steps=5)
    return request.param, env, student, load_student(directory), directory, trace


def deployable(student, obs):
    return {name: np.asarray(obs[name]) for name in student.schema.student_obs}


def test_exported_actions_are_bit_identical_to_the_in_process_student(exported):
    kind, _, student, deployed, _, trace = exported
    carry = deployed.initial_carry(NUM_ENVS)
    assert (carry is None) == (kind == "mlp")
    first = np.ones((NUM_ENVS,), np.float32)
    for obs, reference, _ in trace:  # several steps: a recurrent student's memory must match too
        carry, actions = deployed.step(carry, deployable(student, obs), first)
        np.testing.assert_array_equal(np.asarray(actions), reference)
        first = np.zeros((NUM_ENVS,), np.float32)
    # One unbatched observation: the same action as a batch of one (XLA's CPU matmul kernels
    # differ with the batch size at the 1e-10 level, so equality is checked at equal batch size).
    first_obs = deployable(student, trace[0][0])
    one_obs = {k: v[0] for k, v in first_obs.items()}
    one = deployed(one_obs) if kind == "mlp" else deployed.step(None, one_obs)[1]
    assert one.shape == (1,)
    batch_of_one = deployed.step(None, {k: v[:1] for k, v in first_obs.items()}, np.ones((1,), np.float32))[1]
    np.testing.assert_array_equal(np.asarray(one), np.asarray(batch_of_one)[0])
    np.testing.assert_allclose(np.asarray(one), trace[0][1][0], atol=1e-6)


def test_a_recurrent_student_called_without_its_memory_is_refused(exported):
    kind, _, student, deployed, _, trace = exported
    obs = deployable(student, trace[0][0])
    if kind == "mlp":
        assert deployed(obs).shape == (NUM_ENVS, 1)
        return
    with pytest.raises(TypeError, match=r"recurrent \(gru, memory of 16 numbers\).*student.step\(carry, obs, first\)"):
        deployed(obs)
    with pytest.raises(PrivilegedFieldError, match="velocities"):  # a wrong field is still named first
        deployed({**obs, "velocities": np.asarray(trace[0][0]["velocities"])})


def test_lists_of_numbers_are_read_as_float32(exported):
    _, _, student, deployed, _, trace = exported
    obs = {name: value[0] for name, value in deployable(student, trace[0][0]).items()}
    as_lists = {name: value.tolist() for name, value in obs.items()}
    assert isinstance(as_lists["history"][0], list)  # nested lists for the [8, 4] history too
    np.testing.assert_array_equal(np.asarray(deployed.step(None, as_lists)[1]), np.asarray(deployed.step(None, obs)[1]))
    with pytest.raises(SchemaError, match="'cart_pos' has shape"):
        deployed.step(None, {**as_lists, "cart_pos": [0.1, 0.2]})


def test_privileged_fields_are_rejected_by_name(exported):
    _, env, student, deployed, _, trace = exported
    obs = trace[0][0]
    for name in env.schema.privileged:
        with pytest.raises(PrivilegedFieldError, match=name):
            deployed({**deployable(student, obs), name: np.asarray(obs[name])})
    with pytest.raises(PrivilegedFieldError, match="velocities"):
        deployed({name: np.asarray(value) for name, value in obs.items()})  # the full env dict


@pytest.mark.parametrize(
    "corrupt, error, message",
    [
        (lambda o: {**o, "pole_angle": o["pole_angle"][:, :1]}, SchemaError, "'pole_angle' has shape"),
        (lambda o: {**o, "cart_pos": o["cart_pos"].astype(np.float64)}, SchemaError, "'cart_pos' has dtype float64"),
        (lambda o: {**o, "history": np.full_like(o["history"], np.nan)}, SchemaError, "'history' contains NaN"),
        (lambda o: {k: v for k, v in o.items() if k != "last_action"}, MissingFieldError, "last_action"),
        (lambda o: {**o, "lidar": o["cart_pos"]}, UnknownFieldError, "lidar"),
        (lambda o: {**o, "cart_pos": o["cart_pos"][:3]}, SchemaError, "batch shape"),
        (lambda o: list(o.values()), SchemaError, "dict of named fields"),
    ],
)
def test_bad_observations_get_a_clear_error(exported, corrupt, error, message):
    _, _, student, deployed, _, trace = exported
    with pytest.raises(error, match=message):
        deployed(corrupt(deployable(student, trace[0][0])))


def test_artifact_holds_no_pickle_and_is_checked_on_load(exported, tmp_path):
    _, _, _, _, directory, _ = exported
    with zipfile.ZipFile(directory / "variables.npz") as archive:
        for name in archive.namelist():
            header = archive.read(name)[:128]
            assert b"'descr': '|O'" not in header  # no object arrays (they would need pickle)
    for missing in ("student.stablehlo", "schema.json"):
        broken = tmp_path / missing
        broken.mkdir()
        for f in directory.iterdir():
            if f.name != missing:
                (broken / f.name).write_bytes(f.read_bytes())
        with pytest.raises(ExportError, match=missing):
            load_student(broken)

"""Deploying without JAX: ONNX parity with the in-process student, the contract, the MuJoCo C cart-pole.

The references are independent of the code under test: the in-process student's training-time
``sequence`` (not the step function the export reads), the MJX task stepped by JAX for the
C re-implementation, the JAX history wrapper for the rebuilt history, the MJCF and the env
modules' constants for the contract.
"""

import ast
import dataclasses
import pathlib
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

import distill_jax
from distill_jax.deploy.contract import CARRY_INPUT, ContractError, DeployContract
from distill_jax.deploy.observations import ActionDelay, ObservationBuilder
from distill_jax.deploy.physics import CartpoleSim
from distill_jax.deploy.runtime import DeployInputError, OnnxStudent, open_session
from distill_jax.deploy.sim2sim import wilson_interval
from distill_jax.distill.student import make_student
from distill_jax.envs import VmapAutoReset, get_env
from distill_jax.evaluate import wilson_interval as jax_side_wilson_interval
from distill_jax.export import deploy_contract, export_onnx
from distill_jax.normalization import init_stats, normalize, update_stats

NUM_ENVS, STEPS = 50, 20  # 1,000 observations


@pytest.fixture(scope="module")
def rollout():
    """The default cart-pole (noise, randomisation, history) under varied open-loop actions, time-major.

    float32 MJX and float64 MuJoCo C agree to 1.5e-6 in qpos over these 20 steps; without the
    episode's randomised parameters they differ by up to 2.3.
    """
    env = get_env("cartpole")
    batched = VmapAutoReset(env, NUM_ENVS)
    state = jax.jit(batched.reset)(jax.random.PRNGKey(3))
    step = jax.jit(batched.step)
    frames = []
    for t in range(STEPS):
        # Different amplitudes and phases per env; large ones push some carts off the track (resets).
        actions = jnp.clip(jnp.sin(0.4 * t + jnp.arange(NUM_ENVS))[:, None] * (0.2 + jnp.arange(NUM_ENVS)[:, None] / 25), -1, 1)
        frames.append((state, actions))
        state = step(state, actions)
    stack = lambda f: jax.tree.map(lambda *x: np.stack(x), *[f(s, a) for s, a in frames])  # noqa: E731
    return env, {
        "obs": stack(lambda s, a: s.obs), "first": stack(lambda s, a: s.first), "actions": stack(lambda s, a: a),
        "qpos": stack(lambda s, a: s.physics.qpos), "qvel": stack(lambda s, a: s.physics.qvel),
        "params": stack(lambda s, a: s.params), "next": jax.tree.map(np.asarray, state),
    }


def trained_like(student, schema_obs, seed=0):
    """Parameters whose mean actions span (-1, 1): the initial head (gain 0.01) would make parity trivial."""
    params = student.init(jax.random.PRNGKey(seed), jax.tree.map(lambda x: x[0], schema_obs))
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p * (200.0 if "loc" in jax.tree_util.keystr(path) else 1.5), params)


@pytest.fixture(scope="module", params=["mlp", "gru"])
def exported(request, rollout, tmp_path_factory):
    env, data = rollout
    student = make_student(env.schema, env.action_size, kind=request.param, hidden=(32, 32), gru_size=16)
    obs = student.schema.select(data["obs"], "student")
    params = trained_like(student, jax.tree.map(lambda x: x[0], obs))
    stats = update_stats(init_stats(jax.tree.map(lambda x: x[0, 0], obs)), obs)
    path = export_onnx(tmp_path_factory.mktemp(request.param), student, params, stats, env)
    return env, data, student, params, stats, path


def test_onnx_actions_match_the_in_process_student(exported):
    env, data, student, params, stats, path = exported
    obs = {name: data["obs"][name] for name in student.schema.student_obs}
    first = data["first"]
    dist = jax.jit(student.sequence)(params, student.initial_carry(NUM_ENVS), normalize(stats, obs), first)
    reference = np.tanh(np.asarray(dist.loc))  # [T, B, A]
    actions = OnnxStudent(path).actions_over(obs, first)
    assert actions.shape == reference.shape and first.size >= 1000
    assert reference.std() > 0.2  # actions spread over the range: the comparison is not of near-zeros
    assert 0 < first[1:].sum() and first[1:].sum() < first[1:].size  # some episodes restart mid-sequence
    np.testing.assert_allclose(actions, reference, rtol=0, atol=1e-5)
    if student.kind == "gru":  # the memory matters: fresh-carry actions differ from the carried ones
        fresh = OnnxStudent(path).actions_over(obs, np.ones_like(first))
        assert np.max(np.abs(fresh[5:] - actions[5:])) > 1e-2


def test_onnx_inputs_are_exactly_the_student_fields_and_a_privileged_one_is_refused(exported):
    env, data, student, _, _, path = exported
    graph = onnx.load(path).graph
    carry = [CARRY_INPUT] if student.kind == "gru" else []
    assert [i.name for i in graph.input] == list(student.schema.student_obs) + carry
    assert [o.name for o in graph.output] == ["action"] + (["carry_out"] if carry else [])
    deployed = OnnxStudent(path)
    feed = {name: data["obs"][name][0] for name in student.schema.student_obs}
    carry_in = deployed.initial_carry(NUM_ENVS)
    for name in env.schema.privileged:
        with pytest.raises(DeployInputError, match=name):
            deployed.step(carry_in, {**feed, name: data["obs"][name][0]})
        with pytest.raises(Exception, match=name):  # the bare runtime: the graph has no such input
            open_session(path).run(None, {**feed, **({CARRY_INPUT: carry_in} if carry else {}),
                                          name: data["obs"][name][0]})


def test_a_recurrent_student_is_refused_without_its_carry(exported):
    _, data, student, _, _, path = exported
    if student.kind != "gru":
        pytest.skip("feed-forward students keep no carry")
    feed = {name: data["obs"][name][0] for name in student.schema.student_obs}
    with pytest.raises(Exception, match=CARRY_INPUT):  # a required graph input: ONNX Runtime refuses the call
        open_session(path).run(None, feed)
    with pytest.raises(DeployInputError, match=r"needs its carry \[50, 16\].*initial_carry\(50\)"):
        OnnxStudent(path).step(None, feed)
    with pytest.raises(DeployInputError, match="carry has shape"):
        OnnxStudent(path).step(np.zeros((NUM_ENVS, 3), np.float32), feed)


def test_the_contract_round_trips_and_states_what_the_env_does(exported):
    env, data, student, _, _, path = exported
    stored = {p.key: p.value for p in onnx.load(path).metadata_props}
    contract = DeployContract.from_metadata_props(stored)
    assert contract == deploy_contract(env, student)
    assert OnnxStudent(path).contract == contract  # what ONNX Runtime hands a deployer
    xml = ET.parse(pathlib.Path(distill_jax.__file__).parent / "envs" / "assets" / "cartpole.xml").getroot()
    timestep = float(xml.find("option").get("timestep"))
    assert contract.control["period_s"] == pytest.approx(timestep * 4)  # CartpoleConfig.n_substeps
    assert contract.input_names == student.schema.student_obs
    assert contract.input_shapes == {n: data["obs"][n].shape[2:] for n in student.schema.student_obs}
    history = contract.history
    assert (history["length"], history["row_size"]) == data["obs"]["history"].shape[2:] == (8, 1 + 2 + 1)
    assert [r["name"] for r in history["row"]] == ["cart_pos", "pole_angle", "action"]
    assert contract.noise["std"] == {"cart_pos": 0.01, "pole_angle": 0.01}
    assert contract.latency is None and contract.env["episode_length"] == 250
    assert contract.action["joint_names"] == ["slider"] and contract.action["gear"] == [10.0]
    assert set(contract.privileged_fields) == {"velocities", "dyn_params", "clean_pos"}
    assert (contract.carry is None) == (student.kind == "mlp")
    with pytest.raises(ContractError, match="no distill_jax deployment contract"):
        DeployContract.from_metadata_props({k: v for k, v in stored.items() if not k.endswith("history")})
    with pytest.raises(ContractError, match="format 99"):
        DeployContract.from_metadata_props({**stored, "distill_jax.format_version": "99"})


def test_the_quadruped_contract_names_its_joints_pose_and_period():
    from distill_jax.envs.quadruped import JOINTS_PER_LEG, LEGS

    env = get_env("quadruped_rough")
    contract = deploy_contract(env, make_student(env.schema, env.action_size, kind="gru"))
    assert contract.action["joint_names"] == [f"{leg}_{joint}" for leg in LEGS for joint in JOINTS_PER_LEG]
    assert contract.action["default_pose"] == [0.0, 0.8, -1.5] * 4 and contract.action["action_scale"] == 0.4
    assert contract.control["period_s"] == pytest.approx(0.02)  # 0.004 s x 5 substeps
    assert contract.env["episode_length"] == 1000 and contract.carry["shape"] == [64]
    assert [r["name"] for r in contract.history["row"]] == [
        "joint_pos", "joint_vel", "base_ang_vel", "projected_gravity", "action"]
    assert contract.noise["std"]["joint_vel"] == 1.5


def test_the_cartpole_in_mujoco_c_follows_the_mjx_task(rollout):
    env, data = rollout
    sim = CartpoleSim(env.fingerprint())
    names = [r["name"] for r in env.fingerprint()["randomization"]]
    compared = 0
    for b in range(NUM_ENVS):
        sim.values = np.array([data["params"][n][0, b] for n in names], np.float64)
        sim.randomizer.apply(sim.values)
        sim.data.qpos[:], sim.data.qvel[:] = data["qpos"][0, b], data["qvel"][0, b]
        for t in range(STEPS - 1):
            if data["first"][t + 1, b]:
                break  # the MJX env reset here; the C one carries on
            obs, _, fall, _ = sim.step(data["actions"][t, b])
            np.testing.assert_allclose(sim.data.qpos, data["qpos"][t + 1, b], atol=1e-5)
            np.testing.assert_allclose(obs["clean_pos"], data["obs"]["clean_pos"][t + 1, b], atol=1e-5)
            compared += 1
    assert compared > STEPS * NUM_ENVS // 2


def test_the_rebuilt_history_equals_the_training_wrapper(exported):
    env, data, student, _, _, path = exported
    contract = OnnxStudent(path).contract
    quiet = dataclasses.replace(contract, noise={**contract.noise, "std": {}})  # the JAX obs are noisy already
    for b in range(0, NUM_ENVS, 7):
        builder = ObservationBuilder(quiet, np.random.default_rng(0))
        task_fields = lambda t: {n: data["obs"][n][t, b] for n in ("cart_pos", "pole_angle", "last_action")}  # noqa: E731
        built = builder.reset(task_fields(0))
        for t in range(1, STEPS):
            if data["first"][t, b]:
                built = builder.reset(task_fields(t))
            else:
                built = builder.step(task_fields(t), data["actions"][t - 1, b])
            np.testing.assert_allclose(built["history"], data["obs"]["history"][t, b], atol=1e-6)
            assert list(built) == list(contract.input_names)


def test_action_delay_applies_the_command_of_d_steps_ago():
    delay = ActionDelay({"min_delay": 2, "max_delay": 2}, action_size=1)
    delay.reset(np.random.default_rng(0))
    applied = [float(delay(np.array([c]))[0]) for c in (1.0, 2.0, 3.0, 4.0)]
    assert applied == [0.0, 0.0, 1.0, 2.0]
    none = ActionDelay(None, action_size=1)
    none.reset(np.random.default_rng(0))
    assert float(none(np.array([0.5]))[0]) == 0.5


@pytest.mark.parametrize("count, n", [(0, 8), (7, 32), (32, 32), (1, 1)])
def test_the_jax_free_wilson_interval_matches_the_panel_one(count, n):
    assert wilson_interval(count, n) == pytest.approx(jax_side_wilson_interval(count, n), abs=1e-12)


# What deploy/ may import from the package: itself, and modules that import nothing but the standard
# library and NumPy (shared with the JAX side: the terrain generator, the quadruped's MJCF edit).
SHARED_NUMPY_MODULES = ("distill_jax.hashing", "distill_jax.heightfield", "distill_jax.quadruped_mjcf",
                        "distill_jax.terrain_tiles")
JAX_FREE_MODULES = ("distill_jax.deploy", "distill_jax.schema", *SHARED_NUMPY_MODULES)


def test_the_deploy_package_imports_no_jax():
    folder = pathlib.Path(distill_jax.__file__).parent / "deploy"
    entry = pathlib.Path(distill_jax.__file__).parent / "sim2sim.py"
    for path in [*folder.glob("*.py"), entry]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                assert top not in ("jax", "flax", "optax", "brax"), f"{path.name} imports {name}"
                assert not name.startswith("distill_jax.") or name.startswith(JAX_FREE_MODULES), \
                    f"{path.name} imports {name}, which may import JAX"


def test_the_jax_free_modules_the_deploy_side_shares_import_no_jax():
    package = pathlib.Path(distill_jax.__file__).parent
    for module in SHARED_NUMPY_MODULES:
        path = package / (module.split(".", 1)[1].replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                # The standard library's pieces they need, numpy, or another module of this list (each checked here).
                assert name.split(".")[0] in ("__future__", "dataclasses", "hashlib", "json", "typing", "numpy", "xml") \
                    or name in SHARED_NUMPY_MODULES, f"{path.name} imports {name}"

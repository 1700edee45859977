"""Orbax checkpoints: resume-after-kill equality, identity checks, damaged directories."""

import dataclasses
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.run import checkpoint, pipeline
from distill_jax.envs import get_env
from distill_jax.run.presets import SMOKE
from distill_jax.schema import FieldSpec

# Six teacher updates in three compiled calls of two: a kill after the second call
# leaves a mid-phase checkpoint at update 4.
RESUME_CONFIG = dataclasses.replace(
    SMOKE, updates_per_call=2, ppo=dataclasses.replace(SMOKE.ppo, total_env_steps=16 * 8 * 6)
)


class SimulatedKill(BaseException):
    """Stands in for SIGKILL: raised right after a checkpoint is written."""


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """RESUME_CONFIG's teacher trained in one go: what a resumed or extended run must reproduce."""
    return pipeline.teacher_phase(pipeline.create_run(tmp_path_factory.mktemp("run") / "a", RESUME_CONFIG), quiet=True)


def assert_same_teacher(result, reference) -> None:
    assert int(result.state.update_step[0]) == int(reference.state.update_step[0])
    for part in ("params", "opt_state", "obs_stats", "key"):
        assert leaves_equal(getattr(result.state, part), getattr(reference.state, part)), part


def test_resume_after_kill_reproduces_the_uninterrupted_teacher(tmp_path, monkeypatch, uninterrupted):

    run_b = pipeline.create_run(tmp_path / "b", RESUME_CONFIG)
    real_save = checkpoint.Checkpointer.save

    def save_then_die(self, step, state, counters=None):
        real_save(self, step, state, counters)
        if step == 4:
            raise SimulatedKill

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_die)
    with pytest.raises(SimulatedKill):
        pipeline.teacher_phase(run_b, quiet=True)
    monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)
    # A line written after the last checkpoint (the kill came later) must not survive the resume.
    with (run_b.path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"phase": "teacher", "update": 5, "env_steps": 640}) + "\n")

    assert checkpoint.complete_steps(run_b.path / pipeline.TEACHER_DIR)[-1] == 4
    with pytest.raises(pipeline.RunError, match="--resume"):
        pipeline.teacher_phase(pipeline.open_run(run_b.path), quiet=True)
    resumed = pipeline.teacher_phase(pipeline.open_run(run_b.path), resume=True, quiet=True)

    assert int(resumed.state.update_step[0]) == 6
    assert_same_teacher(resumed, uninterrupted)
    updates = [json.loads(line)["update"] for line in (run_b.path / "metrics.jsonl").read_text().splitlines()]
    assert updates == [1, 2, 3, 4, 5, 6]
    # keep-N: only the newest three checkpoints remain.
    assert checkpoint.complete_steps(run_b.path / pipeline.TEACHER_DIR) == [2, 4, 6]


def test_a_finished_teacher_given_a_larger_budget_continues_to_the_uninterrupted_result(tmp_path, uninterrupted):
    """Four updates, then the budget raised to RESUME_CONFIG's six on resume: the same teacher as
    six in one go (no part of an update depends on the budget)."""
    four = dataclasses.replace(RESUME_CONFIG, ppo=dataclasses.replace(RESUME_CONFIG.ppo, total_env_steps=16 * 8 * 4))
    run = pipeline.create_run(tmp_path / "short", four)
    pipeline.teacher_phase(run, quiet=True)

    six = {"ppo": {"total_env_steps": RESUME_CONFIG.ppo.total_env_steps}}
    extended = pipeline.change_on_resume(pipeline.open_run(run.path), six)
    assert extended.config == RESUME_CONFIG
    assert json.loads((run.path / "config.json").read_text())["ppo"]["total_env_steps"] == 16 * 8 * 6
    assert [json.loads(line) for line in (run.path / pipeline.CHANGES_LOG).read_text().splitlines()] == [
        {"field": "ppo.total_env_steps", "from": 16 * 8 * 4, "to": 16 * 8 * 6, "at_update": 4}]
    continued = pipeline.teacher_phase(pipeline.open_run(run.path), resume=True, quiet=True)
    assert_same_teacher(continued, uninterrupted)
    updates = [json.loads(line)["update"] for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert updates == [1, 2, 3, 4, 5, 6]

    # The same budget again changes nothing and logs nothing.
    assert pipeline.change_on_resume(pipeline.open_run(run.path), six).config == RESUME_CONFIG
    assert len((run.path / pipeline.CHANGES_LOG).read_text().splitlines()) == 1


def test_a_coefficient_changed_on_resume_applies_from_the_next_update(tmp_path, uninterrupted):
    four = dataclasses.replace(RESUME_CONFIG, ppo=dataclasses.replace(RESUME_CONFIG.ppo, total_env_steps=16 * 8 * 4))
    run = pipeline.create_run(tmp_path / "short", four)
    pipeline.teacher_phase(run, quiet=True)
    changes = {"ppo": {"total_env_steps": RESUME_CONFIG.ppo.total_env_steps, "ent_coef": 0.05}}
    changed = pipeline.change_on_resume(pipeline.open_run(run.path), changes)
    logged = [json.loads(line) for line in (run.path / pipeline.CHANGES_LOG).read_text().splitlines()]
    assert {"field": "ppo.ent_coef", "from": RESUME_CONFIG.ppo.ent_coef, "to": 0.05, "at_update": 4} in logged
    continued = pipeline.teacher_phase(changed, resume=True, quiet=True)
    assert float(continued.state.hparams["ent_coef"][0]) == pytest.approx(0.05)
    params = lambda result: jax.tree.leaves(result.state.params)  # noqa: E731
    assert not all(np.array_equal(a, b) for a, b in zip(params(continued), params(uninterrupted)))
    with pytest.raises(pipeline.RunError, match="cannot change"):
        pipeline.change_on_resume(pipeline.open_run(run.path), {"ppo": {"num_envs": 32}})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small checkpoint of a cartpole identity (no training needed)."""
    env = get_env("cartpole")
    meta = checkpoint.make_meta("teacher", config={"seed": 0}, schema=env.schema, env_fingerprint=env.fingerprint())
    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "key": jax.random.PRNGKey(3),
             "step": jnp.asarray(7, jnp.int32), "empty": jnp.zeros((4, 0))}
    directory = tmp_path_factory.mktemp("ckpt") / "teacher"
    saver = checkpoint.Checkpointer(directory, meta, keep=2)
    saver.save(7, state)
    saver.close()
    return env, meta, state, directory


def copy_of(saved_dir, tmp_path):
    target = tmp_path / "teacher"
    shutil.copytree(saved_dir, target)
    return target


def listing(root: pathlib.Path) -> list[str]:
    """Every path under ``root``, sorted: compared before and after a refused restore."""
    return sorted(str(p) for p in root.rglob("*"))


def test_restore_round_trips_values_dtypes_and_zero_size_leaves(saved):
    _, meta, state, directory = saved
    restored, stored_meta = checkpoint.restore(directory, state, meta)
    assert leaves_equal(restored, state)
    assert restored["empty"].shape == (4, 0) and restored["step"].dtype == jnp.int32
    assert stored_meta["step"] == 7 and stored_meta["format_version"] == checkpoint.FORMAT_VERSION


def test_restoring_into_another_schema_names_the_field(saved):
    env, meta, state, directory = saved
    other = dataclasses.replace(env.schema, student_obs=env.schema.student_obs + ("velocities",),
                                teacher_only=tuple(n for n in env.schema.teacher_only if n != "velocities"))
    wrong = checkpoint.make_meta("teacher", config={"seed": 0}, schema=other, env_fingerprint=env.fingerprint())
    with pytest.raises(checkpoint.CheckpointMismatchError, match="velocities"):
        checkpoint.restore(directory, state, wrong)
    resized = env.schema.with_fields({**env.schema.field_specs, "cart_pos": FieldSpec((2,))})
    wrong = checkpoint.make_meta("teacher", config={"seed": 0}, schema=resized, env_fingerprint=env.fingerprint())
    with pytest.raises(checkpoint.CheckpointMismatchError, match="cart_pos"):
        checkpoint.restore(directory, state, wrong)


def test_restoring_into_another_env_names_the_difference(saved):
    env, meta, state, directory = saved
    fingerprint = {**env.fingerprint(), "episode_length": 999}
    wrong = {**meta, "env_fingerprint": json.loads(json.dumps(fingerprint, default=str))}
    with pytest.raises(checkpoint.CheckpointMismatchError, match="episode_length: 250 in checkpoint, 999 now"):
        checkpoint.restore(directory, state, wrong)
    with pytest.raises(checkpoint.CheckpointMismatchError, match="expected 'distill'"):
        checkpoint.restore(directory, state, {**meta, "phase": "distill"})


def test_a_template_of_other_shapes_or_dtypes_is_refused_by_leaf(saved):
    _, meta, state, directory = saved
    bigger = {**state, "params": {"w": jnp.zeros((3, 3))}}
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"params\.w stored as float32\[2, 3\], expected float32\[3, 3\]"):
        checkpoint.restore(directory, bigger, meta)
    wider = {**state, "step": jnp.asarray(7, jnp.float32)}
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"step stored as int32\[\], expected float32\[\]"):
        checkpoint.restore(directory, wider, meta)


def test_a_state_with_other_leaves_is_refused_naming_them(saved, tmp_path):
    """A checkpoint written by a state with another pytree (a field added or dropped) is refused
    before any array is read, naming the leaves, as a mismatch and not as a corrupt file."""
    _, meta, state, directory = saved
    target = copy_of(directory, tmp_path)
    before = listing(tmp_path)
    grown = {**state, "env_steps": jnp.asarray(0, jnp.int32), "params": {**state["params"], "b": jnp.zeros(3)}}
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"missing env_steps, params\.b; extra none"):
        checkpoint.restore(target, grown, meta)
    shrunk = {k: v for k, v in state.items() if k != "key"}
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"missing none; extra key\)"):
        checkpoint.restore(target, shrunk, meta)
    assert listing(tmp_path) == before


def test_format_version_is_checked(saved, tmp_path):
    _, meta, state, directory = saved
    target = copy_of(directory, tmp_path)
    meta_file = target / "7" / "meta" / "metadata"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "format_version": 99}))
    with pytest.raises(checkpoint.CheckpointMismatchError, match="format version 99"):
        checkpoint.restore(target, state, meta)


@pytest.mark.parametrize("damage", ["delete_arrays", "truncate_arrays", "garbage_meta", "partial_only", "missing"])
def test_corrupt_or_partial_directories_fail_cleanly(saved, tmp_path, damage):
    _, meta, state, directory = saved
    target = copy_of(directory, tmp_path)
    step_dir = target / "7"
    if damage == "delete_arrays":
        shutil.rmtree(step_dir / "state")
    elif damage == "truncate_arrays":
        for path in (step_dir / "state").rglob("*"):
            if path.is_file() and path.stat().st_size > 0 and "d" in path.parent.name:
                path.write_bytes(path.read_bytes()[:3])
    elif damage == "garbage_meta":
        (step_dir / "meta" / "metadata").write_text("{not json")
    elif damage == "partial_only":  # a save that was killed before its commit
        step_dir.rename(target / "8.orbax-checkpoint-tmp-123")
    elif damage == "missing":
        shutil.rmtree(target)
    before = listing(tmp_path)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.restore(target, state, meta)
    assert str(target) in str(info.value)
    if damage == "delete_arrays":
        assert f"{step_dir}: damaged checkpoint, state/ is missing (" in str(info.value)
    assert listing(tmp_path) == before  # a failed restore changes nothing


def test_a_save_lists_its_files_and_a_damaged_one_is_named_with_the_previous_intact_step(saved, tmp_path):
    env, meta, state, _ = saved
    directory = tmp_path / "teacher"
    saver = checkpoint.Checkpointer(directory, meta, keep=3)
    for step in (1, 2, 3):
        saver.save(step, state)
    saver.close()
    listed = json.loads((directory / "3" / checkpoint.FILES_MANIFEST).read_text())
    assert listed and all(name.startswith("state/") for name in listed)
    assert all((directory / "3" / name).stat().st_size == size for name, size in listed.items())
    assert checkpoint.verify(directory) == directory.resolve() / "3"

    def an_array_file(step):
        names = json.loads((directory / str(step) / checkpoint.FILES_MANIFEST).read_text())
        return sorted(name for name in names if name.startswith("state/") and "/d/" in name)[0]

    truncated, deleted = an_array_file(3), an_array_file(2)
    (directory / "3" / truncated).write_bytes(b"")
    (directory / "2" / deleted).unlink()
    before = listing(tmp_path)
    with pytest.raises(checkpoint.CheckpointDamagedError) as info:
        checkpoint.restore(directory, state, meta)
    error = info.value
    assert error.step_dir == directory.resolve() / "3" and error.previous == directory.resolve() / "1"
    assert str(error).startswith(f"{directory.resolve() / '3'}: damaged checkpoint, {truncated} is truncated (0 of ")
    assert f"the previous checkpoint {directory.resolve() / '1'} is intact" in str(error)
    with pytest.raises(checkpoint.CheckpointDamagedError, match=f"{deleted} is missing; the previous checkpoint"):
        checkpoint.restore(directory, state, meta, step=2)
    restored, _ = checkpoint.restore(directory, state, meta, step=1)
    assert leaves_equal(restored, state)
    assert listing(tmp_path) == before
    (directory / "1" / an_array_file(1)).write_bytes(b"?")
    with pytest.raises(checkpoint.CheckpointDamagedError, match="no earlier intact checkpoint"):
        checkpoint.verify(directory, 2)


def test_an_orbax_read_failure_is_one_line_without_the_tensorstore_repr():
    spec = "TensorStore({\n  'base': {'driver': 'zarr', 'kvstore': {'path': 'params.w/'}},\n})"
    root = ValueError('OUT_OF_RANGE: Error reading "params.critic.kernel/0.0.0" in OCDBT database at local file '
                      '"/runs/a/checkpoints/teacher/2/state/": Requested byte range [0, 9) is not valid for value of size 4')
    try:
        try:
            raise root
        except ValueError as e:
            raise Exception(f"Encountered error while reading array index: (slice(0, 1, 1),). See full TensorStore "
                            f"details: <bound method spec of {spec}>.") from e
    except Exception as e:
        error = e
    assert checkpoint.read_failure(error) == (
        "array params.critic.kernel is unreadable (Requested byte range [0, 9) is not valid for value of size 4)")
    assert checkpoint.read_failure(KeyError("x")) == "KeyError: 'x'"


def test_a_background_save_keeps_the_values_of_buffers_donated_right_after(saved, tmp_path):
    """The training loop donates its state to the next compiled call while the previous save is
    still being written: the checkpoint must hold the values at the save, not what reused them."""
    env, meta, _, _ = saved
    state = {"w": jnp.arange(4096.0), "step": jnp.asarray(3, jnp.int32)}
    step_fn = jax.jit(lambda s: {"w": s["w"] * -1.0 - 7.0, "step": s["step"] + 1}, donate_argnums=0)
    directory = tmp_path / "teacher"
    saver = checkpoint.Checkpointer(directory, meta, keep=3)
    assert saver.in_background  # one process
    expected = []
    for step in (1, 2, 3):
        expected.append(jax.tree.map(np.asarray, jax.device_get(state)))
        saver.save(step, state)
        given, state = state, step_fn(state)  # donates what the save was given
        # XLA's CPU client ignores donation (the buffer survives); on a GPU it is handed over.
        assert given["w"].is_deleted() == (jax.default_backend() != "cpu")
    saver.close()
    assert checkpoint.complete_steps(directory) == [1, 2, 3]
    for step, values in zip((1, 2, 3), expected):
        assert (directory / str(step) / checkpoint.FILES_MANIFEST).is_file()
        restored, _ = checkpoint.restore(directory, values, meta, step=step)
        assert leaves_equal(restored, values)

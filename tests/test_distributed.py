"""Several processes through ``jax.distributed``: joining, refusals, collective checkpoints, and
the pipeline as 2 processes x 2 CPU devices against 1 process x 4.

The fast tests check the layout parsing, the one-line refusals (unreachable coordinator,
``--local-processes 0``, environments not divisible by the global device count, a resume with
another process count) and, with two real processes, that arrays move between one process's
memory and a mesh over both and that a checkpoint written collectively reads back whole. The slow
tests run the smoke pipeline through the local launcher: as 2 x 2 it trains the same teacher and
student as 1 x 4 (to float tolerance :data:`PARAM_TOL`) with the same ``eval.json`` figures, and
a 2-process run killed mid-way resumes to the uninterrupted run's parameters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from distill_jax.config import to_dict
from distill_jax.run import distributed, pipeline
from distill_jax.run.presets import preset

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "probes"))
import compare_runs  # noqa: E402

# Largest |difference| allowed between the 2 x 2 and 1 x 4 runs' parameters. The two layouts run
# one SPMD program over the same 4-device mesh, but the 2-process one sums across processes
# through gloo, whose reduction order may differ from XLA's in-process all-reduce by float32
# rounding; 2 smoke updates cannot amplify that beyond this (measured: multiprocess_cpu.md).
PARAM_TOL = 1e-5
EVAL_TOL = 1e-4  # eval.json figures (returns, rates) from those parameters
SMOKE = ["--preset", "smoke", "--set", "suite.enabled=false"]  # the perturbation suite adds minutes, not layout


def train(*args: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "distill_jax.train", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, **kw)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


# ------------------------------------------------------------------------------------ layout
def test_one_process_unless_told_otherwise():
    assert distributed.requested(None, None, None, environ={}) is None


def test_flags_win_over_the_environment_and_the_environment_fills_in():
    environ = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    layout = distributed.requested(None, None, 1, environ=environ)
    assert (layout.coordinator, layout.num_processes, layout.process_id, layout.explicit) == ("10.0.0.1:1234", 4, 1, True)


def test_a_slurm_job_of_several_tasks_is_left_to_jax_detection():
    layout = distributed.requested(None, None, None, environ={"SLURM_NTASKS": "2"})
    assert layout is not None and not layout.explicit and layout.coordinator is None


@pytest.mark.parametrize("flags, environ, message", [
    (("host:1", None, None), {}, "missing ['--num-processes', '--process-id']"),
    (("nohost", 2, 0), {}, "--coordinator 'nohost': must look like HOST:PORT"),
    (("h:99999", 2, 0), {}, "must look like HOST:PORT"),
    (("h:1", 2, 2), {}, "--process-id 2: must be in 0..1"),
    (("h:1", 0, 0), {}, "--num-processes 0: must be at least 1"),
    ((None, None, None), {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two': not an integer"),
])
def test_a_bad_layout_is_one_line(flags, environ, message):
    with pytest.raises(distributed.DistributedError) as e:
        distributed.requested(*flags, environ=environ)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_environments_not_divisible_by_the_global_device_count_name_the_field():
    config = dataclasses.replace(preset("smoke"), distill=dataclasses.replace(preset("smoke").distill, num_envs=6))
    assert distributed.indivisible(config, 4, 2).startswith("distill.num_envs=6: must be divisible by the 4 devices "
                                                            "of 2 processes")
    assert distributed.indivisible(preset("smoke"), 4, 2) is None


def test_resume_with_another_process_count_is_refused_in_one_line(tmp_path):
    run = pipeline.Run(tmp_path, preset("smoke"), env=None,
                       provenance={"devices": {"processes": 2}, "launch": "--local-processes 2"})
    with pytest.raises(pipeline.RunError) as e:
        pipeline.check_processes(run)  # this test is one process
    assert str(e.value) == f"{tmp_path}: trained by 2 processes, resumed by 1; resume it with --local-processes 2"
    pipeline.check_processes(dataclasses.replace(run, provenance={"devices": {"processes": 1}}))
    pipeline.check_processes(dataclasses.replace(run, provenance=None))  # a run from before it was recorded


# ------------------------------------------------------------------------- command refusals
def test_an_unreachable_coordinator_fails_within_the_timeout_in_one_line(tmp_path):
    port = closed_port()
    start = time.monotonic()
    done = train(*SMOKE, "--out", str(tmp_path / "run"), "--coordinator", f"127.0.0.1:{port}",
                 "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "3", timeout=120)
    elapsed = time.monotonic() - start
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_lines(done) == [f"error: --coordinator 127.0.0.1:{port}: not reachable from process 1 within 3 s "
                                 "(Connection refused); is process 0 running, and is the address right?"]
    assert elapsed < 60, elapsed  # 3 s of retries and the interpreter's start, not JAX's own minutes
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--local-processes", "0"], "error: --local-processes 0: must be at least 1"),
    (["--local-processes", "2", "--devices-per-process", "0"], "error: --devices-per-process 0: must be at least 1"),
    (["--devices-per-process", "2"], "error: --devices-per-process is a setting of --local-processes N"),
    (["--local-processes", "2", "--process-id", "0"], "error: --local-processes starts the processes and joins them"),
    (["--local-processes", "2", "--devices-per-process", "2", "--set", "ppo.num_envs=6"],
     "error: ppo.num_envs=6: must be divisible by the 4 devices of 2 processes it is sharded over"),
])
def test_the_launcher_refuses_before_starting_anything(tmp_path, args, message):
    done = train(*SMOKE, "--out", str(tmp_path / "run"), *args, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(error_lines(done)) == 1 and error_lines(done)[0].startswith(message), done.stderr
    assert not (tmp_path / "run").exists()


def test_the_launcher_refuses_to_resume_with_another_process_count(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recorded = {**to_dict(preset("smoke")),
                "provenance": {"devices": {"processes": 2}, "launch": "--local-processes 2 --devices-per-process 2"}}
    (run / "config.json").write_text(json.dumps(recorded))
    done = train("--resume", str(run), "--local-processes", "1", "--devices-per-process", "4", timeout=120)
    assert done.returncode == 2
    assert error_lines(done) == [f"error: {run}: trained by 2 processes, resumed by 1 (--local-processes 1); "
                                 "resume it with --local-processes 2 --devices-per-process 2"]
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


# ------------------------------------------------------------------- two real processes
WORKER = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
    from distill_jax import multihost
    from distill_jax.run import checkpoint
    mesh = Mesh(np.asarray(jax.devices()), ("envs",))
    x = jnp.arange(8 * 3, dtype=jnp.float32).reshape(8, 3)  # host-local, the same in both processes
    state = {"x": x, "count": jnp.int32(5), "empty": jnp.zeros((0, 2))}
    placed = multihost.put(state, {"x": NamedSharding(mesh, P("envs")), "count": NamedSharding(mesh, P()),
                                   "empty": NamedSharding(mesh, P())})
    mine = [s.data.shape for s in placed["x"].addressable_shards]
    mean = jax.jit(lambda s: (s["x"] ** 2).mean(axis=0), out_shardings=NamedSharding(mesh, P()))(placed)
    meta = {"format_version": checkpoint.FORMAT_VERSION, "phase": "test", "schema": None, "env_fingerprint": None}
    saver = checkpoint.Checkpointer(sys.argv[3], meta, keep=2)
    saver.save(1, placed)
    saver.save(2, {"x": x + 1, "count": jnp.int32(6), "empty": jnp.zeros((0, 2))})  # host-local: made global
    saver.close()
    back, _ = checkpoint.restore(sys.argv[3], jax.eval_shape(lambda: state), meta, step=1)
    whole = multihost.gather(placed)
    print(json.dumps({"process": jax.process_index(), "global": multihost.is_global(placed["x"]), "mine": mine,
                      "mean": np.asarray(multihost.gather(mean)).tolist(),
                      "restored_equal": bool(np.array_equal(back["x"], x)) and int(back["count"]) == 5,
                      "restored_local": not multihost.is_global(back["x"]) and back["empty"].shape == (0, 2),
                      "gathered_equal": bool(np.array_equal(whole["x"], x)) and not multihost.is_global(whole["x"]),
                      "steps": checkpoint.complete_steps(__import__("pathlib").Path(sys.argv[3]))}), flush=True)
    jax.distributed.shutdown()
""")


def test_two_processes_place_gather_and_checkpoint_collectively(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = closed_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen([sys.executable, str(script), f"127.0.0.1:{port}", str(i), str(tmp_path / "ckpt")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(err[-2000:] for _, err in outs)
    rows = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    expected = ((__import__("numpy").arange(24, dtype="float32").reshape(8, 3)) ** 2).mean(axis=0).tolist()
    for i, row in enumerate(rows):
        assert row["process"] == i and row["global"]
        assert row["mine"] == [[2, 3], [2, 3]]  # each process holds its two devices' quarters of the 8 rows
        assert row["mean"] == pytest.approx(expected, rel=1e-6)
        assert row["restored_equal"] and row["restored_local"] and row["gathered_equal"]
        assert row["steps"] == [1, 2]
    # Written once, by the processes together: one checkpoint's file list, by process 0.
    assert (tmp_path / "ckpt" / "1" / "files.json").is_file()


# ---------------------------------------------------------- the pipeline, 2 x 2 against 1 x 4
@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    out = tmp_path_factory.mktemp("p2") / "run"
    done = train(*SMOKE, "--out", str(out), "--local-processes", "2", "--devices-per-process", "2", "--quiet")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done


@pytest.mark.slow
def test_two_processes_train_what_one_process_of_four_devices_trains(two_by_two, tmp_path):
    p2, done = two_by_two
    p1 = tmp_path / "run"
    single = train(*SMOKE, "--out", str(p1), "--local-processes", "1", "--devices-per-process", "4", "--quiet")
    assert single.returncode == 0, single.stderr[-3000:]
    # Process 0 alone wrote the run directory; the other's output is kept beside it.
    assert (p2 / "logs" / "process-1.log").is_file() and (p2 / "eval.json").is_file()
    created = json.loads((p2 / "config.json").read_text())["provenance"]
    assert created["devices"]["processes"] == 2 and created["devices"]["devices"] == 4
    assert json.loads((p1 / "config.json").read_text())["provenance"]["devices"]["processes"] == 1
    evaluated = json.loads((p2 / "eval.json").read_text())["provenance"]
    assert evaluated["devices"]["processes"] == 2 and evaluated["cost"]["device_hours"] > 0
    assert set(evaluated["phases"]) == {"teacher", "distill"}
    assert "device time:" in done.stdout and "2 processes" in done.stdout

    gaps = compare_runs.param_differences(p2, p1)
    assert gaps["teacher"] <= PARAM_TOL and gaps["student"] <= PARAM_TOL, gaps
    figures = compare_runs.eval_differences(p2, p1, tol=EVAL_TOL)
    assert figures["compared"] > 100 and not figures["differing"] and not figures["missing"], figures


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(two_by_two, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    launcher = subprocess.Popen([sys.executable, "-m", "distill_jax.train", *SMOKE, "--out", str(run),
                                 "--local-processes", "2", "--devices-per-process", "2", "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    deadline = time.monotonic() + 600
    while not (run / "checkpoints" / "teacher" / "1" / "files.json").is_file():  # mid-teacher
        assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    launcher.send_signal(signal.SIGKILL)  # the processes die with it (PR_SET_PDEATHSIG)
    launcher.wait()
    time.sleep(2)
    assert not (run / "eval.json").exists()

    other = train("--resume", str(run), "--local-processes", "1", "--devices-per-process", "4", timeout=120)
    assert other.returncode == 2 and len(error_lines(other)) == 1
    assert "trained by 2 processes, resumed by 1" in error_lines(other)[0]

    resumed = train("--resume", str(run), "--local-processes", "2", "--devices-per-process", "2", "--quiet")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    gaps = compare_runs.param_differences(run, two_by_two[0])
    assert gaps == {"teacher": 0.0, "student": 0.0}, gaps  # the same layout: bit for bit
    assert not compare_runs.eval_differences(run, two_by_two[0])["differing"]

"""Deploying a run: the export's ONNX check, sim2sim without JAX, videos, and one-line refusals.

One ``--preset smoke`` run (every phase) is shared by the module; the commands run as
subprocesses, as a user starts them (and so that ``jax`` missing from ``sys.modules`` means
something: this test process has imported it).
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from distill_jax.train import main as train


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert train(["--preset", "smoke", "--out", str(out)]) == 0
    return out


def command(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})


def listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_the_export_phase_checks_the_onnx_student(smoke_run):
    verification = json.loads((smoke_run / "export" / "verification.json").read_text())["onnx"]
    assert verification["passed"] and verification["max_abs_error"] <= 1e-5
    assert verification["observations"] >= 1000 and verification["steps"] >= 20
    assert verification["privileged_field_refused"]
    assert (smoke_run / "export" / "student.onnx").stat().st_size > 0


def test_sim2sim_runs_without_jax_and_sits_next_to_the_mjx_panel(smoke_run):
    script = ("import sys; from distill_jax.sim2sim import main; rc = main([sys.argv[1]]); "
              "assert 'jax' not in sys.modules, 'sim2sim imported jax'; sys.exit(rc)")
    result = command("-c", script, str(smoke_run))
    assert result.returncode == 0, result.stderr
    report = json.loads((smoke_run / "sim2sim.json").read_text())
    evaluation = json.loads((smoke_run / "eval.json").read_text())
    assert report["seeds"] == evaluation["panel"]["seeds"]  # held out from training by the panel's rule
    assert report["mjx_panel"] == evaluation["student"]
    assert len(report["per_episode"]) == report["mujoco_c"]["episodes"] == evaluation["student"]["episodes"]
    assert set(report["agreement"]) == {"return_mean", "success_rate", "fall_rate"}
    # Same policy, same task distribution: the untrained smoke student falls within ~20 steps in both.
    assert report["agreement"]["return_mean"]["agree"], report["table"]
    assert "| return mean |" in result.stdout


def test_render_writes_a_video_whose_frames_are_the_episode(smoke_run):
    import imageio_ffmpeg

    before = set(listing(smoke_run))
    result = command("-m", "distill_jax.render", str(smoke_run))
    if result.returncode == 2 and "cannot open an OpenGL context" in result.stderr:
        pytest.skip(f"no OpenGL backend on this machine: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    report = json.loads((smoke_run / "videos" / "render.json").read_text())
    (episode,) = report["episodes"]
    mp4 = smoke_run / "videos" / episode["mp4"]
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(mp4))
    assert frames == episode["frames"] == 1 + max(episode["teacher_length"], episode["student_length"])
    assert (smoke_run / "videos" / episode["gif"]).stat().st_size > 0
    # The rendered rollouts are the panel's: their mean returns are eval.json's, computed separately.
    evaluation = json.loads((smoke_run / "eval.json").read_text())
    for policy in ("teacher", "student"):
        assert report["panel_return_mean"][policy] == pytest.approx(evaluation[policy]["return_mean"], rel=1e-5)
    assert set(listing(smoke_run)) - before <= {"videos", *(f"videos/{n}" for n in os.listdir(smoke_run / "videos"))}


def test_sim2sim_refuses_a_run_without_an_export_or_without_onnx(smoke_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(smoke_run / "config.json", bare)
    result = command("-m", "distill_jax.sim2sim", str(bare))
    assert_one_line_error(result, "no exported student", "--phase export")
    assert listing(bare) == ["config.json"]

    older = tmp_path / "older"
    shutil.copytree(smoke_run, older, ignore=shutil.ignore_patterns("student.onnx", "checkpoints", "sim2sim.json"))
    before = listing(older)
    assert_one_line_error(command("-m", "distill_jax.sim2sim", str(older)), "no student.onnx", "re-export")
    assert listing(older) == before
    assert_one_line_error(command("-m", "distill_jax.sim2sim", str(tmp_path / "missing")), "no such run directory")


def test_render_refuses_a_missing_gl_backend_and_a_directory_that_is_no_run(smoke_run, tmp_path):
    # GLFW needs a display; without one MuJoCo cannot open a context.
    no_display = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "distill_jax.render", str(smoke_run)], capture_output=True,
                            text=True, timeout=120, env={**no_display, "MUJOCO_GL": "glfw"})
    assert_one_line_error(result, "MUJOCO_GL=glfw", "MUJOCO_GL=egl")
    out = tmp_path / "never"
    result = subprocess.run([sys.executable, "-m", "distill_jax.train", "--preset", "smoke", "--out", str(out),
                             "--video"], capture_output=True, text=True, timeout=120,
                            env={**no_display, "MUJOCO_GL": "glfw"})
    assert_one_line_error(result, "--video", "MUJOCO_GL")
    assert not out.exists()  # refused before the run directory was created
    assert_one_line_error(command("-m", "distill_jax.render", str(tmp_path)), "not inside a run directory")

"""A real SIGKILL mid-run, then ``--resume``: the result equals the uninterrupted run's (slow)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from distill_jax.run import checkpoint

ARGS = ["--preset", "smoke", "--quiet", "--set", "updates_per_call=1",
        "--set", "ppo.total_env_steps=2048", "--set", "distill.total_env_steps=1024"]


def cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "distill_jax.train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path):
    reference = cli(*ARGS, "--out", str(tmp_path / "reference"))
    killed_dir = tmp_path / "killed"
    victim = cli(*ARGS, "--out", str(killed_dir))
    deadline = time.time() + 600
    # Kill once the teacher has saved a mid-phase checkpoint (16 updates in all).
    while time.time() < deadline and max(checkpoint.complete_steps(killed_dir / "checkpoints" / "teacher") or [0]) < 3:
        assert victim.poll() is None, victim.stdout.read()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = checkpoint.complete_steps(killed_dir / "checkpoints" / "teacher")[-1]
    assert killed_at < 16, "the kill came after the teacher finished; nothing was resumed"
    assert not (killed_dir / "eval.json").exists()

    resumed = cli("--resume", str(killed_dir))
    assert resumed.wait(timeout=900) == 0, resumed.stdout.read()
    assert reference.wait(timeout=900) == 0, reference.stdout.read()

    got = json.loads((killed_dir / "eval.json").read_text())
    want = json.loads((tmp_path / "reference" / "eval.json").read_text())
    for key in ("teacher", "student", "imitation"):
        assert got[key] == want[key], key
    rows = [json.loads(line) for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows if r["phase"] == "teacher"] == list(range(1, 17))
    ref_rows = [json.loads(line) for line in (tmp_path / "reference" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "env_steps_per_second")}  # noqa: E731
    assert [strip(r) for r in rows] == [strip(r) for r in ref_rows]

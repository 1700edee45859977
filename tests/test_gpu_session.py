"""The GPU session's other stages still run end to end and leave the files the results are made of.

``experiments/gpu_session.sh`` is what a lent GPU machine runs, with device time that cannot be
spent twice, so it must not rot between GPU sessions. These slow tests run its ``pipeline`` stage
on the smoke preset, cut off and then resumed, and its ``parts`` stage (one update's parts timed
apart) at toy sizes, here on the CPU. Its ``bench`` stage is tested in ``test_experiments.py``
and its ``quadruped`` stage in ``test_gpu_session_quadruped.py``: the files are apart so that
pytest-xdist's ``--dist loadfile`` can give them to different workers.
"""

from __future__ import annotations

import math
import re
import tarfile

import pytest


@pytest.mark.slow
def test_gpu_session_pipeline_packs_a_cut_off_run_and_resumes_it(tmp_path, gpu_session):
    # Cut off after 25 s, the smoke pipeline has written its run directory but not finished its
    # phases: compiling without the XLA cache it takes 49 s even on an idle 2-core Xeon. (With the
    # cache that other tests of this worker may have filled, 35 s under load, too close to a cut.)
    # The resumed call reports the same arguments as not applied and uses the cache.
    smoke = ["--preset", "smoke", "--env", "cartpole", "--xla-cache", "off"]
    done = gpu_session("pipeline", smoke, tmp_path / "cut", tmp_path / "runs", STAGE_SECONDS="25")
    assert done.returncode == 124, done.stdout[-3000:] + done.stderr[-3000:]
    with tarfile.open(tmp_path / "cut" / "quad.tgz") as tar:
        names = tar.getnames()
    assert "quad/config.json" in names and "quad/eval.md" not in names

    done = gpu_session("pipeline", smoke, tmp_path / "resumed", tmp_path / "runs")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "resumed" / "quad.log").read_text()
    run = tmp_path / "runs" / "quad"
    assert log.startswith(f"resuming {run} with its recorded config; not applied: {' '.join(smoke)}\n"
                          f"+ python3 -m distill_jax.train --resume {run} --quiet\n")
    assert "leak audit: PASSED" in log
    with tarfile.open(tmp_path / "resumed" / "quad.tgz") as tar:
        names = tar.getnames()
    assert {"quad/eval.md", "quad/eval.json", "quad/metrics.jsonl"} <= set(names)
    assert not any("/checkpoints" in name for name in names)  # they stay on the machine


@pytest.mark.slow
def test_gpu_session_parts_times_every_part_of_an_update(tmp_path, gpu_session, update_part_timings):
    # The profile behind a teacher / raw-physics ratio: each part's line must reach parts.log.
    toy = ["8", "--unroll-length", "4", "--num-minibatches", "2", "--num-epochs", "1",
           "--policy-hidden", "8", "--value-hidden", "8"]
    done = gpu_session("parts", toy, tmp_path, tmp_path / "runs",
                       STAGE_SECONDS="850")  # the stage's own timeout is sized for a GPU
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "parts.log").read_text()
    assert "B 8 T 4 samples 32" in log
    timings = update_part_timings(log)
    assert set(timings) == {"env steps", "rollout", "collect", "sgd epochs", "one grad step", "train_step",
                            "sgd epochs flat Adam", "sgd epochs unroll 2", "train_step vmap K=1"}, log
    assert all(math.isfinite(ms) and ms > 0 for ms in timings.values()), timings
    # The variants are the same arithmetic: their parameters agree with the plain epochs' to rounding.
    diffs = [float(d) for d in re.findall(r"largest \|params - plain epochs' params\| (\S+)", log)]
    assert len(diffs) == 2 and all(d < 1e-5 for d in diffs), log
    # The trace summary found ops, and the slowest op takes less than the traced call.
    head = re.search(r"^profile train_step: (\d+) ops on \d+ host-thread lines; ops busy ([\d.]+) ms-of-line-time "
                     r"in a ([\d.]+) ms call", log, re.MULTILINE)
    assert head and int(head[1]) > 0, log
    top_op = re.search(r"^profile   op +([\d.]+) ms-busy", log, re.MULTILINE)
    assert top_op and 0 < float(top_op[1]) <= float(head[3]), log

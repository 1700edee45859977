"""``RUN/wall_clock.jsonl``: each stage's seconds, appended when the stage ends."""

import json

import pytest

from distill_jax.run.wall_clock import WallClock


def ticking(*times):
    """A clock that reads ``times`` in order."""
    readings = iter(times)
    return lambda: next(readings)


def test_stages_are_timed_by_the_clock_and_appended_as_they_end(tmp_path):
    path = tmp_path / "wall_clock.jsonl"
    clock = WallClock(path, clock=ticking(10.0, 12.5, 20.0, 95.0), invocation="first")
    with clock.stage("eval"):
        assert not path.exists()  # nothing written before the stage ends
    clock.record("teacher/checkpoints", 3.25)
    with clock.stage("teacher"):
        pass
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == clock.rows == [{"invocation": "first", "stage": "eval", "seconds": 2.5},
                                  {"invocation": "first", "stage": "teacher/checkpoints", "seconds": 3.25},
                                  {"invocation": "first", "stage": "teacher", "seconds": 75.0}]
    assert clock.summary() == "eval 2.5 s, teacher 75 s (checkpoints 3.2 s)"

    later = WallClock(path, clock=ticking(0.0, 1.0))  # a resumed command appends under its own label
    with later.stage("plots"):
        pass
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 4 and rows[-1]["stage"] == "plots" and rows[-1]["invocation"] not in ("first", "")
    assert later.rows == rows[-1:]


def test_a_stage_that_raises_is_not_recorded(tmp_path):
    clock = WallClock(tmp_path / "wall_clock.jsonl", clock=ticking(0.0, 5.0))
    with pytest.raises(RuntimeError):
        with clock.stage("teacher"):
            raise RuntimeError("killed")
    assert clock.rows == [] and not (tmp_path / "wall_clock.jsonl").exists()

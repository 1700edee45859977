"""Progress line (plain and TTY), ETA, TensorBoard scalars and the JSONL log."""

import io
import json
import math
import re
import struct
import sys

import pytest

from distill_jax.run.progress import JsonlLog, Progress, format_duration, mean_over_seeds


def make_rows(n, timed_every, first=1):
    rows = []
    for u in range(first, n + 1):
        row = {"update": u, "env_steps": 1000 * u, "episode_return": [float(u), float(u + 2)],
               "loss": [1.0 / u, math.nan], "approx_kl": [0.01, 0.03]}
        if u % timed_every == 0:
            row["seconds"], row["env_steps_per_second"] = 0.5, 42930.9
        rows.append(row)
    return rows


class FakeClock:
    """Wall clock that advances ``dt`` seconds per reading."""

    def __init__(self, dt):
        self.t, self.dt = 0.0, dt

    def __call__(self):
        self.t += self.dt
        return self.t


def eta_seconds(text):
    m, s = re.search(r"ETA (\d+):(\d\d)", text).groups()
    return 60 * int(m) + int(s)


def test_plain_mode_one_line_per_timed_row():
    out = io.StringIO()  # StringIO.isatty() is False -> plain mode by default
    progress = Progress("teacher", 10, stream=out)
    for row in make_rows(10, timed_every=5):
        progress(row)
    progress.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert len(lines) == 2 and text.endswith("\n")
    assert "update 5/10" in lines[0] and "update 10/10" in lines[1]
    for line in lines:
        assert line.startswith("[teacher]")
        assert "42.9k steps/s" in line
        assert "return 6" in line or "return 11" in line  # mean over seeds of [u, u+2]
    assert "loss 0.2 " in lines[0] + " "  # the NaN seed is ignored: mean of [0.2]
    assert "\r" not in text and "\x1b" not in text


def test_tty_mode_rewrites_one_line_and_ends_with_newline():
    out = io.StringIO()
    progress = Progress("distill", 4, stream=out, tty=True)
    for row in make_rows(4, timed_every=2):
        progress(row)
    text = out.getvalue()
    assert text.count("\r") == 4 and "\n" not in text
    assert "[####################]" in text.split("\r")[-1]  # bar full at 4/4
    assert "update 4/4" in text.split("\r")[-1]
    progress.close()
    progress.close()  # idempotent: one newline only
    assert out.getvalue() == text + "\n"


def test_tty_line_padding_erases_longer_previous_line():
    out = io.StringIO()
    progress = Progress("teacher", 2, stream=out, tty=True)
    progress({"update": 1, "env_steps": 10, "episode_return": [123456.0], "loss": [9.87654]})
    progress({"update": 2, "env_steps": 20})
    first, second = out.getvalue().split("\r")[1:]
    assert len(second) >= len(first)


def test_eta_decreases_and_reaches_zero():
    out = io.StringIO()
    # 3 s per update -> after update u of 10 the ETA is 3 * (10 - u) s.
    progress = Progress("teacher", 10, stream=out, tty=False, clock=FakeClock(3.0))
    etas = []
    for row in make_rows(10, timed_every=1):
        progress(row)
        etas.append(progress.eta_seconds)
    assert etas == pytest.approx([3.0 * (10 - u) for u in range(1, 11)])
    printed = [eta_seconds(line) for line in out.getvalue().splitlines()]
    assert printed == [3 * (10 - u) for u in range(1, 11)]
    assert all(a > b for a, b in zip(printed, printed[1:]))


def test_eta_of_resumed_run_counts_only_new_updates():
    progress = Progress("teacher", 100, stream=io.StringIO(), clock=FakeClock(2.0))
    for row in make_rows(60, timed_every=10, first=51):  # resumed at update 50
        progress(row)
    assert progress.eta_seconds == pytest.approx(2.0 * 40)  # 10 updates in 20 s, 40 to go


def test_eta_and_rate_leave_compilation_out():
    """The first call compiles (40 s here) and then trains like the others (2 s per update): the
    ETA after it counts 2 s per remaining update, and its steps/s the training time only."""
    clock, compiled = FakeClock(0.0), [0.0]
    progress = Progress("teacher", 10, stream=(out := io.StringIO()), tty=False, clock=clock,
                        compile_seconds=lambda: compiled[0])
    compiled[0], clock.t = 40.0, 42.0
    first = {"update": 1, "env_steps": 1000, "seconds": 42.0, "env_steps_per_second": 1000 / 42.0}
    progress(first)
    assert progress.eta_seconds == pytest.approx(2.0 * 9)
    assert "500 steps/s" in out.getvalue()  # 1000 env steps in the 2 s that were not compiling
    clock.t = 44.0
    progress({"update": 2, "env_steps": 2000, "seconds": 2.0, "env_steps_per_second": 500.0})
    assert progress.eta_seconds == pytest.approx(2.0 * 8)
    without = Progress("teacher", 10, stream=io.StringIO(), tty=False, clock=FakeClock(42.0))
    without(first)
    assert without.eta_seconds == pytest.approx(42.0 * 9)  # what the first ETA said before


def test_format_and_mean_helpers():
    assert format_duration(0) == "0:00" and format_duration(61.4) == "1:01"
    assert format_duration(3725) == "62:05" and format_duration(math.nan) == "--:--"
    assert mean_over_seeds([1.0, 3.0, math.inf]) == 2.0
    assert math.isnan(mean_over_seeds([math.nan]))
    assert mean_over_seeds(4) == 4.0
    assert mean_over_seeds("abc") is None and mean_over_seeds([]) is None


def read_tfrecords(path):
    """Records of a TFRecord file: u64 length, u32 crc, data, u32 crc."""
    data, pos, records = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        records.append(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
    return records


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto import event_pb2

    progress = Progress("distill", 3, stream=io.StringIO(), tensorboard_dir=tmp_path / "tb")
    for row in make_rows(3, timed_every=3):
        progress({**row, "phase": "distill", "note": "text is skipped"})
    progress.close()
    scalars = {}
    for f in (tmp_path / "tb").glob("events.out.tfevents.*"):
        for record in read_tfrecords(f):
            event = event_pb2.Event.FromString(record)
            for v in event.summary.value:
                scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    assert scalars["distill/episode_return"] == [(1000, 2.0), (2000, 3.0), (3000, 4.0)]
    assert scalars["distill/approx_kl"][0] == (1000, pytest.approx(0.02))
    assert scalars["distill/loss"][1] == (2000, pytest.approx(0.5))
    assert scalars["distill/env_steps_per_second"] == [(3000, pytest.approx(42930.9))]
    assert not any(t.endswith(("/update", "/env_steps", "/phase", "/note")) for t in scalars)


def test_tensorboard_missing_is_silent(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes `import tensorboardX` fail
    out = io.StringIO()
    progress = Progress("teacher", 2, stream=out, tensorboard_dir=tmp_path / "tb")
    for row in make_rows(2, timed_every=2):
        progress(row)
    progress.close()
    assert not (tmp_path / "tb").exists()
    assert len(out.getvalue().splitlines()) == 1


def test_jsonl_log_appends_rows_with_phase(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    teacher = JsonlLog(path, "teacher")
    for row in make_rows(3, timed_every=3):
        teacher(row)
    JsonlLog(path, "distill")({"update": 1, "env_steps": 8, "kl": [0.3, 0.2]})  # a new instance appends
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    parsed = [json.loads(line) for line in lines]
    assert [p["phase"] for p in parsed] == ["teacher"] * 3 + ["distill"]
    assert [p["update"] for p in parsed] == [1, 2, 3, 1]
    assert parsed[2]["seconds"] == 0.5 and "seconds" not in parsed[0]
    assert parsed[3]["kl"] == [0.3, 0.2]
    assert math.isnan(parsed[0]["loss"][1])

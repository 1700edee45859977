"""The console: steps, compilation reports from JAX's monitoring events, heartbeats."""

import io

import jax
import jax.numpy as jnp
import pytest
from jax import monitoring

from distill_jax.run.console import ANNOUNCE_AFTER, COMPILE_EVENT, TRACE_EVENT, Console


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def console():
    clock, out = Clock(), io.StringIO()
    console = Console(out, tty=False, heartbeat_after=8.0, clock=clock)
    console._listen(True)  # the events, without the heartbeat thread: the tests call tick() themselves
    yield console, clock, out
    console._listen(False)


def lines(out):
    return out.getvalue().splitlines()


def tick_at(console, clock, out, t):
    """The lines one heartbeat check prints at time ``t``."""
    before = len(lines(out))
    clock.t = t
    console.tick()
    return lines(out)[before:]


def test_a_heartbeat_names_the_step_after_eight_silent_seconds(console):
    console, clock, out = console
    console.step("eval", "running the leak audit", "structural and gradient checks")
    assert lines(out) == ["[eval] running the leak audit: structural and gradient checks"]
    assert tick_at(console, clock, out, 7.9) == []
    assert tick_at(console, clock, out, 8.0) == ["[eval] still running the leak audit (0:08)"]
    assert tick_at(console, clock, out, 12.0) == []  # the heartbeat counts as output: the next is due at 16 s
    console.expect_quiet(30.0)  # a training chunk measured at 20 s: silence up to 30 s is expected
    assert tick_at(console, clock, out, 37.0) == []
    assert tick_at(console, clock, out, 38.0) == ["[eval] still running the leak audit (0:38)"]


def test_a_long_compilation_is_announced_then_timed(console):
    console, clock, out = console
    console.step("teacher", "training")
    monitoring.record_scalar(TRACE_EVENT, 0.0, fun_name="run")
    assert tick_at(console, clock, out, ANNOUNCE_AFTER - 0.1) == []
    assert tick_at(console, clock, out, ANNOUNCE_AFTER) == ["[teacher] compiling 'run' ..."]
    monitoring.record_event_duration_secs(TRACE_EVENT, 3.0, fun_name="run")
    monitoring.record_scalar(COMPILE_EVENT, 3.0, fun_name="jit(run)")
    assert tick_at(console, clock, out, 12.0) == ["[teacher] still compiling 'run' (0:12)"]
    clock.t = 20.5
    monitoring.record_event_duration_secs(COMPILE_EVENT, 17.5, fun_name="jit(run)")
    assert lines(out)[-1] == "[teacher] compiled 'run' in 20.5 s"
    assert console.compile_seconds == pytest.approx(20.5)


def test_a_cache_load_is_reported_as_one_and_short_compilations_are_not(console):
    console, clock, out = console
    console.step("eval", "scoring")
    monitoring.record_scalar(COMPILE_EVENT, 0.0, fun_name="jit(evaluate)")
    monitoring.record_event("/jax/compilation_cache/cache_hits")
    monitoring.record_event_duration_secs("/jax/compilation_cache/compile_time_saved_sec", 41.6)
    clock.t = 1.5
    monitoring.record_event_duration_secs(COMPILE_EVENT, 1.5, fun_name="jit(evaluate)")
    assert lines(out)[-1] == "[eval] loaded 'evaluate' from the XLA cache in 1.5 s, skipping ~42 s of XLA compilation"
    monitoring.record_scalar(COMPILE_EVENT, 1.5, fun_name="jit(add)")
    clock.t = 1.7
    monitoring.record_event_duration_secs(COMPILE_EVENT, 0.2, fun_name="jit(add)")
    assert len(lines(out)) == 2
    monitoring.record_scalar(COMPILE_EVENT, 1.7, fun_name="jit(<lambda>)")  # a lambda's name says nothing
    assert tick_at(console, clock, out, 4.0) == ["[eval] compiling ..."]
    monitoring.record_event_duration_secs(COMPILE_EVENT, 2.3, fun_name="jit(<lambda>)")
    assert lines(out)[-1] == "[eval] compiled in 2.3 s"


def test_a_real_compilation_reaches_the_console(console):
    console, _, _ = console
    before = console.compile_seconds
    jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.25)(jnp.arange(7.0)).block_until_ready()
    assert console.compile_seconds > before


def test_a_silent_console_prints_nothing_and_listens_to_nothing():
    out = io.StringIO()
    console = Console(out, enabled=False)
    with console:
        console.step("teacher", "training")
        console.line("x")
        assert console._thread is None and not console._listening
    assert out.getvalue() == ""

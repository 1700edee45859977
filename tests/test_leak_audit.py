"""The four leak checks: clean students pass all of them; every way of reading a privileged field fails
the dataflow check and at least one other; the dataflow analysis follows sub-jaxprs precisely."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import leak_audit, normalization
from distill_jax.distill.student import make_student
from distill_jax.envs import VmapAutoReset, get_env
from distill_jax.evaluate import student_act_fn
from distill_jax.networks import make_actor
from distill_jax.treeops import first_seed

CHECKS = ("structural", "dependency", "perturbation", "dataflow")


@pytest.fixture(scope="module")
def setup():
    env = get_env("cartpole")
    obs = VmapAutoReset(env, 8).reset(jax.random.PRNGKey(0)).obs
    return env, obs


def audit_of(env, inputs, act, obs):
    return leak_audit.audit(env.schema, inputs, act, obs, jax.random.PRNGKey(1))


def clean_student(env, obs, kind):
    student = make_student(env.schema, env.action_size, kind=kind, hidden=(16, 16), gru_size=8)
    fields = student.schema.select(obs, "student")
    params = student.init(jax.random.PRNGKey(2), first_seed(fields))
    # Non-trivial normaliser statistics, so the wrapper's normalisation is part of the traced program.
    stats = normalization.update_stats(normalization.init_stats(first_seed(fields)), fields)
    return student, params, stats


@pytest.fixture(scope="module")
def mlp(setup):
    env, obs = setup
    student, params, stats = clean_student(env, obs, "mlp")
    return student, student_act_fn(student, params, stats)


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_clean_student_passes_all_four(setup, kind):
    env, obs = setup
    student, params, stats = clean_student(env, obs, kind)
    checks = audit_of(env, student.schema.fields_for("student"), student_act_fn(student, params, stats), obs)
    assert tuple(checks) == CHECKS
    assert all(c["passed"] for c in checks.values()), checks


def test_gru_sequence_with_a_scan_passes_the_dataflow_check(setup):
    """The GRU replayed over a [T, B] sequence (a lax.scan over time) reads no privileged field."""
    env, obs = setup
    student, params, stats = clean_student(env, obs, "gru")
    seq = jax.tree.map(lambda x: jnp.stack([x, 0.5 * x, -x]), obs)  # [T=3, B, ...]
    first = jnp.zeros((3, 8)).at[0].set(1.0)

    def act(o):
        fields = normalization.normalize(stats, student.schema.guard_student(student.schema.select(o, "student")))
        return student.sequence(params, student.initial_carry(8), fields, first).loc

    assert "scan" in str(jax.make_jaxpr(act)(seq))  # the case this test is about
    assert leak_audit.dataflow_check(env.schema, act, seq)["passed"]
    # The same program with one privileged read added inside the scanned inputs is caught.
    leaky = lambda o: act({**o, "cart_pos": o["cart_pos"] + jnp.sign(o["velocities"][..., :1])})  # noqa: E731
    assert leak_audit.privileged_dataflow(leaky, seq, env.schema.privileged) == ["velocities"]


def test_leaky_actor_fails_all_four(setup):
    env, obs = setup
    # A "student" that reads the teacher's inputs, velocities included.
    leaky = make_actor(env.schema, "teacher", env.action_size, hidden=(16,))
    params = leaky.init(jax.random.PRNGKey(3), first_seed(obs))
    act = lambda o: jnp.tanh(leaky.apply(params, o).loc)  # noqa: E731
    checks = audit_of(env, env.schema.fields_for("teacher"), act, obs)
    assert not any(c["passed"] for c in checks.values()), checks
    for name in ("structural", "dependency", "dataflow"):
        assert "velocities" in checks[name]["detail"] and "dyn_params" in checks[name]["detail"], name
    assert "clean_pos" not in checks["dataflow"]["detail"]  # the teacher actor does not read the critic's field


@jax.custom_jvp
def _zero_derivative_identity(x):
    return x


_zero_derivative_identity.defjvp(lambda primals, tangents: (primals[0], jnp.zeros_like(tangents[0])))


def _row_signs_by_scan(v):
    """sign(v[b, 0]) for every row b, computed by a lax.scan over rows: ``[B, 1]``."""
    _, ys = jax.lax.scan(lambda c, row: (c, jnp.sign(row[:1])), 0.0, v)
    return ys


def _while_count(v):
    """How many halvings bring 8·|v[0, 0]| + 1 below 1: a trip count set by a privileged value."""
    def body(s):
        return s[0] + 1.0, s[1] * 0.5

    n, _ = jax.lax.while_loop(lambda s: s[1] > 1.0, body, (0.0, 8.0 * jnp.abs(v[0, 0]) + 1.0))
    return n


# name -> (privileged term added to the clean student's actions [B, 1], checks it must fail).
# Reset velocities lie in ±0.5; the perturbation check adds noise of std 10, which crosses every
# threshold below. Only the plain read has a non-zero derivative.
LEAKS = {
    "plain read": (lambda v: 0.1 * jnp.mean(v, axis=-1, keepdims=True), {"dependency", "perturbation", "dataflow"}),
    "stop_gradient": (lambda v: 0.1 * jax.lax.stop_gradient(v[:, :1]), {"perturbation", "dataflow"}),
    "sign": (lambda v: 0.1 * jnp.sign(v[:, :1]), {"perturbation", "dataflow"}),
    "comparison": (lambda v: 0.1 * (v[:, :1] > 0), {"perturbation", "dataflow"}),
    "integer cast": (lambda v: 0.1 * (4.0 * v[:, :1]).astype(jnp.int32), {"perturbation", "dataflow"}),
    "cond predicate": (lambda v: jax.lax.cond(jnp.max(jnp.abs(v)) > 1.0, lambda: 0.1, lambda: 0.0) * jnp.ones((v.shape[0], 1)),
                       {"perturbation", "dataflow"}),
    "scan": (lambda v: 0.1 * _row_signs_by_scan(v), {"perturbation", "dataflow"}),
    "while trip count": (lambda v: 0.01 * _while_count(v) * jnp.ones((v.shape[0], 1)), {"perturbation", "dataflow"}),
    "nested jit": (lambda v: 0.1 * jax.jit(lambda u: jnp.sign(jax.jit(lambda w: w[:, :1])(u)))(v), {"perturbation", "dataflow"}),
    "custom_jvp zero derivative": (lambda v: 0.1 * _zero_derivative_identity(v[:, :1]), {"perturbation", "dataflow"}),
}


@pytest.mark.parametrize("name", list(LEAKS))
def test_each_leak_fails_dataflow_and_another_check(setup, mlp, name):
    env, obs = setup
    student, clean = mlp
    term, expected_failures = LEAKS[name]
    act = lambda o: clean(o) + term(o["velocities"])  # noqa: E731
    checks = audit_of(env, student.schema.fields_for("student"), act, obs)
    failed = {n for n, c in checks.items() if not c["passed"]}
    assert failed == expected_failures, checks
    assert "velocities" in checks["dataflow"]["detail"] and "dyn_params" not in checks["dataflow"]["detail"]


def test_a_leak_the_perturbation_misses_fails_the_dataflow_check(setup, mlp):
    """A threshold no resampling crosses: only the dataflow check sees the read."""
    env, obs = setup
    student, clean = mlp
    act = lambda o: clean(o) + 0.1 * (o["dyn_params"][:, :1] > 1e6)  # noqa: E731
    checks = audit_of(env, student.schema.fields_for("student"), act, obs)
    assert {n for n, c in checks.items() if not c["passed"]} == {"dataflow"}, checks
    assert "dyn_params" in checks["dataflow"]["detail"]


# ------------------------------------------------- the analysis itself, on toy programs
X = {"own": jnp.arange(3.0), "secret": jnp.array([0.3, -0.2, 0.7])}


def flows(f, obs=X):
    return leak_audit.privileged_dataflow(f, obs, ["secret"]) == ["secret"]


def changes_when_secret_changes(f, obs=X):
    """An independent check on the value: does ``f`` change when only ``secret`` does?"""
    moved = {**obs, "secret": obs["secret"] + jnp.array([1.7, -2.9, 4.1])}
    return not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(f(obs)), jax.tree.leaves(f(moved))))


def rotate_carry(o, length):
    """Carry (a, b, c) -> (b, c, a) ``length`` times from (own, own, secret); returns a."""
    (a, _, _), _ = jax.lax.scan(lambda c, _: ((c[1], c[2], c[0]), None), (o["own"], o["own"], o["secret"]), None,
                                length=length)
    return a


def test_scan_carry_is_iterated_to_a_fixpoint():
    # After two rotations slot a holds the secret.
    assert flows(lambda o: rotate_carry(o, 2)) and changes_when_secret_changes(lambda o: rotate_carry(o, 2))
    # (A single pass over the body would answer "no": slot a only receives the secret on the second trip.)


def test_call_and_cond_operands_map_to_their_sub_jaxpr_inputs():
    ignore_second = jax.jit(lambda a, b: 2.0 * a)
    assert not flows(lambda o: ignore_second(o["own"], o["secret"]))
    assert flows(lambda o: ignore_second(o["secret"], o["own"]))
    # cond: an operand that no branch returns does not flow; the predicate always does.
    pick = lambda p, a, b: jax.lax.cond(p, lambda x, y: x + 1.0, lambda x, y: x - 1.0, a, b)  # noqa: E731
    assert not flows(lambda o: pick(o["own"][0] > 0, o["own"], o["secret"]))
    assert flows(lambda o: pick(o["secret"][0] > 0, o["own"], o["own"]))


def test_scan_carry_slot_that_never_reaches_the_output_does_not_flow():
    def f(o):
        (a, _), _ = jax.lax.scan(lambda c, _: ((c[0] * 2.0, c[1] + o["secret"]), None), (o["own"], o["own"]), None,
                                 length=3)
        return a

    assert not flows(f) and not changes_when_secret_changes(f)


def test_structural_zeros_and_shapes():
    # Multiplying by zero is flagged: the analysis is conservative about values (documented).
    assert flows(lambda o: o["own"] + 0.0 * o["secret"])
    # Only the shape of a privileged field (static at trace time) is not a dataflow.
    assert not flows(lambda o: o["own"] + jnp.zeros_like(o["secret"]) + o["secret"].shape[0])


def test_a_value_smuggled_through_a_mutable_ref_flows():
    def f(o):
        ref = jax.new_ref(jnp.zeros(3))
        ref[...] = jax.lax.stop_gradient(o["secret"])
        return o["own"] + ref[...]

    assert flows(f) and changes_when_secret_changes(f)

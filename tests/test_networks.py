"""Schema-built networks: field selection (no privileged leak), layout, shapes, GRU resets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import distributions as D
from distill_jax import networks as N
from distill_jax.schema import FieldSpec, MissingFieldError, ObservationSchema, SchemaError

SCHEMA = ObservationSchema(
    student_obs=("joint_pos", "history", "phase"),
    teacher_only=("terrain",),
    critic_only=("base_vel",),
    fields=(
        ("joint_pos", FieldSpec((4,))),
        ("history", FieldSpec((3, 2))),
        ("phase", FieldSpec(())),
        ("terrain", FieldSpec((5,))),
        ("base_vel", FieldSpec((3,))),
    ),
)
A = 2


def make_obs(seed, lead=(3,)):
    rng = np.random.default_rng(seed)
    specs = sorted(SCHEMA.field_specs.items())
    return {n: jnp.asarray(rng.normal(size=lead + s.shape), jnp.float32) for n, s in specs}


@pytest.fixture(scope="module")
def student():
    net = N.make_actor(SCHEMA, "student", A, hidden=(16, 16), init_std=0.5)
    params = jax.jit(net.init)(jax.random.PRNGKey(0), make_obs(1))
    return net, params


@pytest.fixture(scope="module")
def teacher():
    net = N.make_actor(SCHEMA, "teacher", A, hidden=(16, 16), activation="elu")
    params = jax.jit(net.init)(jax.random.PRNGKey(0), make_obs(1))
    return net, params


@pytest.fixture(scope="module")
def critic():
    net = N.make_critic(SCHEMA, hidden=(8,))
    params = jax.jit(net.init)(jax.random.PRNGKey(0), make_obs(1))
    return net, params


def test_input_sizes_follow_schema(student, teacher):
    assert N.input_size(SCHEMA, "student") == 4 + 6 + 1
    assert N.input_size(SCHEMA, "teacher") == 4 + 6 + 1 + 5
    assert N.input_size(SCHEMA, "critic") == 4 + 6 + 1 + 5 + 3
    assert student[1]["params"]["torso"]["hidden_0"]["kernel"].shape == (11, 16)
    assert teacher[1]["params"]["torso"]["hidden_0"]["kernel"].shape == (16, 16)


def test_flatten_obs_layout_is_schema_order():
    obs = make_obs(2, lead=(2, 3))
    flat = N.flatten_obs(SCHEMA, obs, "teacher")
    assert flat.shape == (2, 3, 16)
    ref = np.concatenate(
        [
            np.asarray(obs["joint_pos"]),
            np.asarray(obs["history"]).reshape(2, 3, 6),
            np.asarray(obs["phase"])[..., None],
            np.asarray(obs["terrain"]),
        ],
        axis=-1,
    )
    np.testing.assert_array_equal(flat, ref)
    reordered = {k: obs[k] for k in reversed(list(obs))}
    np.testing.assert_array_equal(N.flatten_obs(SCHEMA, reordered, "teacher"), flat)


@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
def test_actor_and_critic_shapes(student, critic, lead):
    net, params = student
    obs = make_obs(3, lead)
    dist = net.apply(params, obs)
    assert isinstance(dist, D.TanhGaussian)
    assert dist.loc.shape == dist.scale.shape == lead + (A,)
    cnet, cp = critic
    assert cnet.apply(cp, obs).shape == lead
    assert cp["params"]["torso"]["hidden_0"]["kernel"].shape == (19, 8)


def test_initial_policy_is_centred_with_init_std(student, teacher):
    obs = make_obs(4, (64,))
    for (net, params), std in ((student, 0.5), (teacher, 1.0)):
        dist = net.apply(params, obs)
        assert float(jnp.max(jnp.abs(dist.loc))) < 0.1
        np.testing.assert_allclose(dist.scale, std, atol=0.05)


def test_student_has_zero_gradient_wrt_privileged_fields(student):
    net, params = student
    obs = make_obs(6)

    def out(o):
        d = net.apply(params, o)
        return jnp.sum(d.loc) + jnp.sum(d.scale)

    g = jax.grad(out)(obs)
    assert np.all(np.asarray(g["terrain"]) == 0.0)
    assert np.all(np.asarray(g["base_vel"]) == 0.0)
    assert np.any(np.asarray(g["joint_pos"]) != 0.0)
    assert np.any(np.asarray(g["history"]) != 0.0)


def test_teacher_reads_teacher_field_but_not_critic_field(teacher):
    net, params = teacher
    obs = make_obs(7)
    g = jax.grad(lambda o: jnp.sum(net.apply(params, o).loc))(obs)
    assert np.any(np.asarray(g["terrain"]) != 0.0)
    assert np.all(np.asarray(g["base_vel"]) == 0.0)


def test_removing_privileged_fields_does_not_change_student(student):
    net, params = student
    obs = make_obs(8)
    full = net.apply(params, obs)
    deployable = {k: obs[k] for k in SCHEMA.student_obs}
    lean = net.apply(params, deployable)
    np.testing.assert_array_equal(full.loc, lean.loc)
    np.testing.assert_array_equal(full.scale, lean.scale)
    perturbed = dict(obs, terrain=obs["terrain"] + 100.0, base_vel=-obs["base_vel"])
    np.testing.assert_array_equal(net.apply(params, perturbed).loc, full.loc)


def test_missing_student_field_raises(student, teacher):
    net, params = student
    obs = make_obs(9)
    with pytest.raises(MissingFieldError, match="history"):
        net.apply(params, {k: v for k, v in obs.items() if k != "history"})
    tnet, tparams = teacher
    with pytest.raises(MissingFieldError, match="terrain"):
        tnet.apply(tparams, {k: v for k, v in obs.items() if k != "terrain"})


def test_bad_shapes_and_roles_raise(student):
    net, params = student
    obs = make_obs(10)
    with pytest.raises(SchemaError, match="history"):
        net.apply(params, dict(obs, history=jnp.zeros((3, 2, 3))))
    with pytest.raises(SchemaError, match="batch shape"):
        net.apply(params, dict(obs, phase=jnp.zeros((4,))))
    with pytest.raises(SchemaError):
        N.make_actor(SCHEMA, "critic", A)
    with pytest.raises(ValueError, match="activation"):
        N.make_actor(SCHEMA, "student", A, activation="softsign")


def test_jit_and_vmap_agree(student):
    net, params = student
    obs = make_obs(11, (4, 3))
    direct = net.apply(params, obs)
    jitted = jax.jit(net.apply)(params, obs)
    vmapped = jax.vmap(net.apply, in_axes=(None, 0))(params, obs)
    np.testing.assert_allclose(jitted.loc, direct.loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vmapped.loc, direct.loc, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- GRU
@pytest.fixture(scope="module")
def gru():
    net = N.make_gru_student(SCHEMA, A, encoder=(8,), gru_size=6, head=(8,))
    obs = make_obs(12, (3,))
    params = jax.jit(net.init)(jax.random.PRNGKey(13), net.initial_carry((3,)), obs, jnp.zeros(3))
    return net, params


def test_gru_reset_mask_zeroes_carry(gru):
    net, params = gru
    obs = make_obs(14, (3,))
    stale = jnp.asarray(np.random.default_rng(15).normal(size=(3, 6)), jnp.float32)
    reset = jnp.array([1.0, 0.0, 1.0])
    c_reset, d_reset = net.apply(params, stale, obs, reset)
    c_fresh, d_fresh = net.apply(params, net.initial_carry((3,)), obs, jnp.zeros(3))
    for i in (0, 2):
        np.testing.assert_allclose(c_reset[i], c_fresh[i], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(d_reset.loc[i], d_fresh.loc[i], rtol=1e-6, atol=1e-7)
    assert not np.allclose(c_reset[1], c_fresh[1])  # the memory matters without reset


def test_gru_has_zero_gradient_wrt_privileged_fields(gru):
    net, params = gru
    obs = make_obs(16, (3,))
    g = jax.grad(lambda o: jnp.sum(net.apply(params, net.initial_carry((3,)), o, jnp.zeros(3))[1].loc))(obs)
    assert np.all(np.asarray(g["terrain"]) == 0.0)
    assert np.all(np.asarray(g["base_vel"]) == 0.0)
    assert np.any(np.asarray(g["joint_pos"]) != 0.0)


def test_unroll_matches_step_loop_and_resets_on_first(gru):
    net, params = gru
    T, B = 6, 3
    obs_seq = make_obs(17, (T, B))
    first = jnp.zeros((T, B)).at[0, 0].set(1.0).at[3, 1].set(1.0)
    carry0 = jnp.asarray(np.random.default_rng(18).normal(size=(B, 6)), jnp.float32)
    final, dists = jax.jit(lambda p, c, o, f: N.unroll_gru(net, p, c, o, f))(params, carry0, obs_seq, first)
    assert dists.loc.shape == (T, B, A) and final.shape == (B, 6)

    c = carry0
    for t in range(T):
        c, d = net.apply(params, c, {k: v[t] for k, v in obs_seq.items()}, first[t])
        np.testing.assert_allclose(dists.loc[t], d.loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final, c, rtol=1e-5, atol=1e-6)

    # Env 1 restarts at t=3: from there it must equal a fresh unroll of obs[3:].
    tail = {k: v[3:] for k, v in obs_seq.items()}
    _, fresh = N.unroll_gru(net, params, net.initial_carry((B,)), tail, jnp.zeros((T - 3, B)))
    np.testing.assert_allclose(dists.loc[3:, 1], fresh.loc[:, 1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(dists.loc[3:, 2], fresh.loc[:, 2])  # env 2 kept its memory

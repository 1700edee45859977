"""Running per-field statistics vs NumPy over sequential batches of varying size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.normalization import RunningStats, denormalize, init_stats, normalize, update_stats
from distill_jax.schema import FieldSpec

SPECS = {"joint_pos": FieldSpec((3,)), "history": FieldSpec((2, 4)), "height": FieldSpec(())}


def random_batch(rng, lead):
    return {
        "joint_pos": rng.normal(5.0, 3.0, size=lead + (3,)).astype(np.float32),
        "history": rng.normal(-2.0, 0.5, size=lead + (2, 4)).astype(np.float32),
        "height": rng.uniform(0.0, 10.0, size=lead).astype(np.float32),
    }


def test_init_from_specs_and_example_obs_agree():
    a = init_stats(SPECS)
    b = init_stats({k: np.zeros(s.shape, np.float32) for k, s in SPECS.items()})
    for name, spec in SPECS.items():
        assert a.mean[name].shape == b.mean[name].shape == spec.shape
        np.testing.assert_array_equal(a.var[name], 1.0)
    assert float(a.count) == 0.0


def test_sequential_batches_match_numpy():
    rng = np.random.default_rng(0)
    leads = [(7,), (3, 5), (1,), (2, 2, 3)]
    batches = [random_batch(rng, lead) for lead in leads]
    stats = init_stats(SPECS)
    update = jax.jit(update_stats)
    for b in batches:
        stats = update(stats, b)
    for name, spec in SPECS.items():
        allx = np.concatenate([b[name].reshape((-1,) + spec.shape) for b in batches]).astype(np.float64)
        np.testing.assert_allclose(stats.mean[name], allx.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats.var[name], allx.var(0), rtol=1e-4, atol=1e-5)
    assert float(stats.count) == sum(int(np.prod(l)) for l in leads)


def test_large_offset_no_cancellation():
    rng = np.random.default_rng(1)
    specs = {"x": FieldSpec((2,))}
    stats = init_stats(specs)
    chunks = [(1e4 + rng.normal(0, 0.01, size=(n, 2))).astype(np.float32) for n in (100, 37, 250)]
    for c in chunks:
        stats = update_stats(stats, {"x": c})
    allx = np.concatenate(chunks).astype(np.float64)
    np.testing.assert_allclose(stats.var["x"], allx.var(0), rtol=0.05)


def test_mask_excludes_samples():
    rng = np.random.default_rng(2)
    pre = random_batch(rng, (5,))
    batch = random_batch(rng, (4, 6))
    mask = (rng.uniform(size=(4, 6)) > 0.4).astype(np.float32)
    stats = update_stats(update_stats(init_stats(SPECS), pre), batch, mask=jnp.asarray(mask))
    for name, spec in SPECS.items():
        kept = batch[name][mask.astype(bool)].reshape((-1,) + spec.shape)
        allx = np.concatenate([pre[name].reshape((-1,) + spec.shape), kept]).astype(np.float64)
        np.testing.assert_allclose(stats.mean[name], allx.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats.var[name], allx.var(0), rtol=1e-4, atol=1e-5)
    assert float(stats.count) == 5 + mask.sum()


def test_fully_masked_batch_is_a_no_op():
    rng = np.random.default_rng(3)
    stats = update_stats(init_stats(SPECS), random_batch(rng, (8,)))
    after = update_stats(stats, random_batch(rng, (3,)), mask=jnp.zeros(3))
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    # And from empty statistics: stays at the initial mean 0 / var 1.
    empty = update_stats(init_stats(SPECS), random_batch(rng, (3,)), mask=jnp.zeros(3))
    np.testing.assert_array_equal(empty.var["joint_pos"], 1.0)
    np.testing.assert_array_equal(empty.mean["joint_pos"], 0.0)


def test_normalize_standardises_and_clips():
    rng = np.random.default_rng(4)
    batch = random_batch(rng, (2000,))
    stats = update_stats(init_stats(SPECS), batch)
    out = normalize(stats, batch, clip=None)
    for name in SPECS:
        z = np.asarray(out[name])
        np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)
    far = dict(batch, joint_pos=np.full((2000, 3), 1e6, np.float32))
    clipped = normalize(stats, far, clip=5.0)
    np.testing.assert_array_equal(clipped["joint_pos"], 5.0)
    back = denormalize(stats, normalize(stats, batch, clip=None))
    np.testing.assert_allclose(back["history"], batch["history"], rtol=1e-4, atol=1e-4)


def test_normalize_passes_untracked_fields_through():
    stats = init_stats({"a": FieldSpec((2,))})
    obs = {"a": jnp.ones(2), "flag": jnp.array([1, 0], jnp.int32)}
    out = normalize(stats, obs)
    assert out["flag"] is obs["flag"]
    np.testing.assert_allclose(out["a"], 1.0, rtol=1e-6)  # count 0: identity


def test_errors():
    stats = init_stats(SPECS)
    rng = np.random.default_rng(5)
    batch = random_batch(rng, (4,))
    with pytest.raises(KeyError, match="height"):
        update_stats(stats, {k: v for k, v in batch.items() if k != "height"})
    with pytest.raises(ValueError, match="joint_pos"):
        update_stats(stats, dict(batch, joint_pos=np.zeros((4, 5), np.float32)))
    with pytest.raises(ValueError, match="batch shape"):
        update_stats(stats, dict(batch, height=np.zeros((3,), np.float32)))


def test_vmap_over_independent_normalisers():
    rng = np.random.default_rng(6)
    batches = random_batch(rng, (3, 10))  # 3 seeds, 10 samples each
    stacked = jax.jit(jax.vmap(lambda b: update_stats(init_stats(SPECS), b)))(batches)
    assert isinstance(stacked, RunningStats)
    assert stacked.count.shape == (3,)
    single_update = jax.jit(update_stats)
    for i in range(3):
        single = single_update(init_stats(SPECS), {k: v[i] for k, v in batches.items()})
        np.testing.assert_allclose(stacked.mean["history"][i], single.mean["history"], rtol=1e-6)
        np.testing.assert_allclose(stacked.var["height"][i], single.var["height"], rtol=1e-6)

"""PPO loss vs an independent NumPy hand computation on a tiny batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax import distributions as D
from distill_jax.ppo import ActorCriticParams, PPOBatch, ppo_loss

N, F, A = 6, 3, 2


def apply_actor(p, obs):
    loc = obs["x"] @ p["w"] + p["b"]
    return D.TanhGaussian(loc, jnp.broadcast_to(jnp.exp(p["log_s"]), loc.shape))


def apply_critic(p, obs):
    return obs["x"] @ p["u"] + p["c"]


def make_case(seed=0, old_shift=0.3):
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    actor = {"w": f32(rng.normal(size=(F, A))), "b": f32(rng.normal(size=A)), "log_s": f32([-0.2, 0.3])}
    critic = {"u": f32(rng.normal(size=F)), "c": f32(0.4)}
    obs = {"x": f32(rng.normal(size=(N, F))), "privileged": f32(rng.normal(size=(N, 7)))}
    raw = f32(rng.normal(size=(N, A)))
    old_lp = f32(gauss_logp_np(obs["x"] @ actor["w"] + actor["b"], np.exp(actor["log_s"]), raw)
                 + rng.normal(scale=old_shift, size=N))
    batch = PPOBatch(
        obs=obs,
        raw_actions=raw,
        old_log_probs=old_lp,
        advantages=f32(rng.normal(size=N)),
        returns=f32(rng.normal(size=N)),
        old_values=f32(rng.normal(size=N)),
    )
    return ActorCriticParams(actor, critic), batch


def gauss_logp_np(loc, scale, x):
    loc, scale, x = (np.asarray(a, np.float64) for a in (loc, scale, x))
    return np.sum(-0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), axis=-1)


def reference(params, batch, clip_eps, vf_coef, ent_coef, normalize, value_clip):
    a, c = params.actor, params.critic
    x = np.asarray(batch.obs["x"], np.float64)
    scale = np.exp(np.asarray(a["log_s"], np.float64))
    new_lp = gauss_logp_np(x @ a["w"] + a["b"], scale, batch.raw_actions)
    ratio = np.exp(new_lp - batch.old_log_probs)
    adv = np.asarray(batch.advantages, np.float64)
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pol = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv))
    v = x @ c["u"] + c["c"]
    err = (v - batch.returns) ** 2
    if value_clip:
        vc = batch.old_values + np.clip(v - batch.old_values, -value_clip, value_clip)
        err = np.maximum(err, (vc - batch.returns) ** 2)
    vloss = 0.5 * err.mean()
    ent = np.sum(0.5 * np.log(2 * np.pi * np.e) + np.log(scale))  # same for every sample
    total = pol + vf_coef * vloss - ent_coef * ent
    kl = np.mean(ratio - 1 - np.log(ratio))
    clipfrac = np.mean(np.abs(ratio - 1) > clip_eps)
    return dict(total_loss=total, policy_loss=pol, value_loss=vloss, entropy=ent,
                approx_kl=kl, clip_fraction=clipfrac)


@pytest.mark.parametrize(
    "normalize,value_clip,ent_coef", [(True, 0.0, 0.01), (False, 0.2, 0.0), (True, 0.05, 0.1)]
)
def test_matches_hand_computation(normalize, value_clip, ent_coef):
    params, batch = make_case()
    kw = dict(clip_eps=0.2, vf_coef=0.7, ent_coef=ent_coef, normalize_advantages=normalize,
              value_clip=value_clip)
    fn = jax.jit(functools.partial(ppo_loss, apply_actor=apply_actor, apply_critic=apply_critic, **kw))
    loss, metrics = fn(params, batch)
    ref = reference(params, batch, **{k: v for k, v in kw.items() if k != "normalize_advantages"},
                    normalize=normalize)
    assert 0.0 < ref["clip_fraction"] < 1.0  # the case exercises both branches of the clip
    np.testing.assert_allclose(float(loss), ref["total_loss"], rtol=1e-5, atol=1e-6)
    for k, v in ref.items():
        np.testing.assert_allclose(float(metrics[k]), v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_value_clip_changes_value_loss():
    params, batch = make_case()
    base = dict(apply_actor=apply_actor, apply_critic=apply_critic, clip_eps=0.2, vf_coef=0.5)
    _, m0 = ppo_loss(params, batch, **base)
    _, m1 = ppo_loss(params, batch, value_clip=0.01, **base)
    assert float(m1["value_loss"]) > float(m0["value_loss"])
    # A traced range (as carried in the train state) gives the same losses; a traced 0 is "off".
    traced = jax.jit(lambda c: ppo_loss(params, batch, value_clip=c, **base)[1]["value_loss"])
    np.testing.assert_allclose(float(traced(0.01)), float(m1["value_loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(traced(0.0)), float(m0["value_loss"]), rtol=1e-6)
    with pytest.raises(ValueError, match="old_values"):
        ppo_loss(params, batch._replace(old_values=None), value_clip=0.1, **base)


def test_on_policy_ratio_is_one_and_gradient_is_advantage_weighted():
    params, batch = make_case(old_shift=0.0)
    loss_fn = functools.partial(ppo_loss, apply_actor=apply_actor, apply_critic=apply_critic,
                                clip_eps=0.2, vf_coef=0.0, ent_coef=0.0, normalize_advantages=False)
    (_, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    np.testing.assert_allclose(float(m["approx_kl"]), 0.0, atol=1e-6)
    assert float(m["clip_fraction"]) == 0.0
    np.testing.assert_allclose(float(m["policy_loss"]), -np.mean(batch.advantages), rtol=1e-5)
    # On-policy, d(policy_loss)/d(theta) = -mean(A * d log pi / d theta).
    def weighted_logp(actor):
        lp = D.gaussian_log_prob(apply_actor(actor, batch.obs), batch.raw_actions)
        return -jnp.mean(batch.advantages * lp)
    expected = jax.grad(weighted_logp)(params.actor)
    for k in expected:
        np.testing.assert_allclose(grads.actor[k], expected[k], rtol=1e-4, atol=1e-6)
    # vf_coef = 0: the critic gets no gradient.
    for g in jax.tree.leaves(grads.critic):
        np.testing.assert_array_equal(g, 0.0)


def test_entropy_bonus_pushes_scale_up_and_dict_params_work():
    params, batch = make_case()
    loss_fn = functools.partial(ppo_loss, apply_actor=apply_actor, apply_critic=apply_critic,
                                clip_eps=0.2, vf_coef=0.5)
    g0 = jax.grad(lambda p: loss_fn(p, batch, ent_coef=0.0)[0])(params)
    g1 = jax.grad(lambda p: loss_fn(p, batch, ent_coef=1.0)[0])(params)
    # d(-H)/d log_s = -1 per action dimension.
    np.testing.assert_allclose(g1.actor["log_s"] - g0.actor["log_s"], -1.0, rtol=1e-5)
    l_tuple, _ = loss_fn(params, batch, ent_coef=0.0)
    l_dict, _ = loss_fn({"actor": params.actor, "critic": params.critic}, batch, ent_coef=0.0)
    np.testing.assert_allclose(float(l_tuple), float(l_dict))


def test_squashed_entropy_bonus_pulls_a_wide_policy_back_and_unknown_kind_fails():
    params, batch = make_case()
    loss_fn = functools.partial(ppo_loss, apply_actor=apply_actor, apply_critic=apply_critic,
                                clip_eps=0.2, vf_coef=0.5)
    wide = params._replace(actor={**params.actor, "log_s": params.actor["log_s"] + jnp.log(20.0)})
    g0 = jax.grad(lambda p: loss_fn(p, batch, ent_coef=0.0, entropy_kind="squashed")[0])(wide)
    g1 = jax.grad(lambda p: loss_fn(p, batch, ent_coef=1.0, entropy_kind="squashed")[0])(wide)
    # At scale >= 20 the squashed entropy falls with the scale: minimising -H shrinks log_s.
    assert np.all(np.asarray(g1.actor["log_s"] - g0.actor["log_s"]) > 0)
    _, m = loss_fn(wide, batch, ent_coef=1.0, entropy_kind="squashed")
    expected = np.mean(D.squashed_entropy(apply_actor(wide.actor, batch.obs)))
    np.testing.assert_allclose(float(m["entropy"]), expected, rtol=1e-6)
    np.testing.assert_allclose(float(m["scale"]), np.mean(apply_actor(wide.actor, batch.obs).scale), rtol=1e-6)
    with pytest.raises(ValueError, match="entropy_kind='shannon'"):
        loss_fn(params, batch, entropy_kind="shannon")


def test_time_major_batch_shape():
    params, batch = make_case()
    tb = jax.tree.map(lambda a: a.reshape((2, 3) + a.shape[1:]), batch)
    kw = dict(apply_actor=apply_actor, apply_critic=apply_critic, clip_eps=0.2, vf_coef=0.5)
    l_flat, _ = ppo_loss(params, batch, **kw)
    l_tb, _ = ppo_loss(params, tb, **kw)
    np.testing.assert_allclose(float(l_tb), float(l_flat), rtol=1e-5)


def test_action_bound_penalty_matches_closed_form_and_only_acts_past_the_bound():
    params, batch = make_case()
    kw = dict(apply_actor=apply_actor, apply_critic=apply_critic, clip_eps=0.2, vf_coef=0.5)
    loc = np.asarray(batch.obs["x"], np.float64) @ params.actor["w"] + params.actor["b"]
    for bound in (0.5, 0.95):
        excess = np.maximum(np.abs(loc) - np.arctanh(bound), 0.0)
        expected = np.mean(np.sum(excess**2, axis=-1))
        base, _ = ppo_loss(params, batch, **kw)
        total, metrics = ppo_loss(params, batch, bound_coef=2.0, action_bound=bound, **kw)
        np.testing.assert_allclose(float(metrics["bound_loss"]), expected, rtol=1e-5)
        np.testing.assert_allclose(float(total - base), 2.0 * expected, rtol=1e-4, atol=1e-6)
    assert float(ppo_loss(params, batch, bound_coef=2.0, action_bound=0.5, **kw)[1]["bound_loss"]) > 0
    # Gradient w.r.t. the mean's bias: 2 coef excess sign(loc) / N per dimension; zero inside the bound.
    bound = 0.5
    g0 = jax.grad(lambda p: ppo_loss(p, batch, **kw)[0])(params)
    g1 = jax.grad(lambda p: ppo_loss(p, batch, bound_coef=1.0, action_bound=bound, **kw)[0])(params)
    excess = np.maximum(np.abs(loc) - np.arctanh(bound), 0.0)
    expected_b = np.sum(2.0 * excess * np.sign(loc), axis=0) / N
    np.testing.assert_allclose(g1.actor["b"] - g0.actor["b"], expected_b, rtol=1e-4, atol=1e-6)
    inside = {**params.actor, "b": params.actor["b"] * 0.0, "w": params.actor["w"] * 0.0}
    inside_params = ActorCriticParams(inside, params.critic)
    assert float(ppo_loss(inside_params, batch, bound_coef=5.0, **kw)[1]["bound_loss"]) == 0.0

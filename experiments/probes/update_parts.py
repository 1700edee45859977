"""Seconds per teacher-update part at B envs (bench.py's sizes), each part its own jitted function.

The teacher's rows: the rollout with the policy, the collection (rollout, normaliser, critic
passes, GAE), the SGD epochs, one gradient step, the whole update, the wrapped env alone (random
actions), and the whole update under a size-1 seed ``vmap`` (how ``run_phase`` runs it).
``--vmap-parts``: the rollout, collection and SGD epochs under that seed ``vmap``.
``--distill``: the distillation iteration's halves instead, at bench.py's distillation sizes,
an MLP student and the untrained teacher; their cost does not depend on what the teacher learned.
``--sgd-variants``: the SGD epochs again with Adam on one flat parameter vector and with the
minibatch loop unrolled, candidates for a GPU where the epochs are a chain of small kernels; each
prints its largest parameter difference from the plain epochs. ``--profile``: a ``jax.profiler``
trace of one whole update, summed per op (``trace_summary.py``).
The parts are plain ``jax.jit``s, which do not get distill_jax's compiler options, so like bench.py
the probe puts them in ``XLA_FLAGS`` for the whole process (``--xla-default``: XLA's own options).

Usage: PYTHONPATH=experiments python experiments/probes/update_parts.py [B] [--vmap-parts | --distill |
       --sgd-variants --profile] [bench.py options: --task, PPO sizes]   (default B 1024)
       e.g. the quadruped at the GPU preset's sizes: ``4096 --task quadruped_rough --unroll-length 24
       --num-minibatches 4 --num-epochs 5 --policy-hidden 512,256,128 --value-hidden 512,256,128``.
Cited by: experiments/results/bench_cpu.md, bench_gpu_h200.md; distill_jax/xla_options.py;
run by experiments/gpu_session.sh parts and quadruped (tests/test_gpu_session*.py)
"""
import functools
import sys

import jax
import jax.numpy as jnp
import optax

import bench
import benchlib
from bench_envs import make_wrapped_runner
from trace_summary import print_summary, trace_ops
from distill_jax.sgd import make_optimizer, sgd_epochs
from distill_jax.envs import VmapAutoReset
from distill_jax.rollout import unroll
from distill_jax.ppo import update as ppo_update
from distill_jax.ppo.teacher import initial_teacher_states
from distill_jax.networks import make_teacher_networks
from distill_jax.policy import make_policy
from distill_jax.ppo.update import train_step
from distill_jax.treeops import first_seed

OWN_FLAGS = ("--vmap-parts", "--distill", "--sgd-variants", "--profile")
positional = len(sys.argv) > 1 and sys.argv[1].isdigit()
B = int(sys.argv[1]) if positional else 1024
args = bench.parse_args([a for a in sys.argv[1 + positional:] if a not in OWN_FLAGS])
print("XLA_FLAGS:", benchlib.set_process_xla_options(args.xla_default) or "(none)")  # before the first computation
env = bench.build_env(args.task, plain=args.task.startswith("brax_"))  # as bench.py builds it
cfg = bench.ppo_config(args, B)
T = cfg.unroll_length
batched = VmapAutoReset(env, B)
nets = make_teacher_networks(env.schema, env.action_size, cfg.network)
st = first_seed(initial_teacher_states(batched, nets, cfg, 0, 1))


def timed(name, f, *args, repeats=5):
    best = benchlib.best_seconds(f, *args, repeats=repeats)
    print(f"{name:28s} {best*1e3:9.1f} ms   ({B*T/best:,.0f} env-steps/s)", flush=True)
    return best


def env_only(s):
    return make_wrapped_runner(batched, T)(s.env_state, s.key)  # bench.py's wrapped-env runner


def rollout(s):
    policy = make_policy(nets.actor.apply, s.params["actor"], s.obs_stats)
    return unroll(batched, s.env_state, policy, None, s.key, T)


def collect(s):
    return ppo_update.collect(s, s.key, env=batched, nets=nets, config=cfg).batch


def sgd(s, batch):
    return ppo_update.ppo_epochs(s.params, s.opt_state, batch, s.key, nets=nets, config=cfg, hparams=s.hparams)


def one_grad_step(s, batch):
    mb = jax.tree.map(lambda x: x[: x.shape[0] // cfg.num_minibatches], batch)
    loss_fn = ppo_update.make_ppo_loss(nets, cfg, s.hparams)
    return jax.grad(lambda p: loss_fn(p, mb)[0])(s.params)


def sgd_variants():
    """Two other implementations of the SGD epochs' arithmetic, each timed and checked against the plain epochs."""
    optimizer = make_optimizer(cfg.learning_rate, cfg.max_grad_norm)
    flat_optimizer = optax.flatten(optimizer)
    M = cfg.num_minibatches
    kw = dict(loss_fn=ppo_update.make_ppo_loss(nets, cfg, st.hparams), num_epochs=cfg.num_epochs, num_minibatches=M)
    plain = jax.jit(sgd)(st, batch)[0]
    variants = [
        ("sgd epochs flat Adam", lambda p, o: sgd_epochs(p, o, batch, st.key, optimizer=flat_optimizer, **kw),
         flat_optimizer.init(st.params)),
        (f"sgd epochs unroll {M}", lambda p, o: sgd_epochs(p, o, batch, st.key, optimizer=optimizer, unroll=M, **kw),
         st.opt_state),
    ]
    for name, run, opt_state in variants:
        f = jax.jit(run)
        timed(name, f, st.params, opt_state)
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(f(st.params, opt_state)[0]),
                                                                 jax.tree.leaves(plain)))
        print(f"  {name}: largest |params - plain epochs' params| {diff:.1e}", flush=True)


def vmapped_parts():
    st1 = jax.tree.map(lambda x: x[None], st)
    b1 = jax.tree.map(lambda x: x[None], batch)
    timed("rollout vmap K=1", jax.jit(jax.vmap(rollout)), st1)
    timed("collect vmap K=1", jax.jit(jax.vmap(collect)), st1)
    timed("sgd epochs vmap K=1", jax.jit(jax.vmap(sgd)), st1, b1)


def distill_parts():
    from distill_jax.distill import update as distill_update
    from distill_jax.distill.phase import build_student

    config = bench.distill_config(cfg)
    student = build_student(env, config)
    teacher = distill_update.FrozenTeacher(st.params["actor"], st.obs_stats)
    ds = distill_update.init_student(jax.random.PRNGKey(1), batched, student, config)
    kw = dict(env=batched, student=student, config=config)
    collect_d = lambda s: distill_update.collect(s, teacher, s.key, teacher_actor=nets.actor, **kw).batch  # noqa: E731
    dbatch = jax.jit(collect_d)(ds)
    timed("distill collect", jax.jit(collect_d), ds)
    timed("distill epochs", jax.jit(lambda s, b: distill_update.distill_epochs(s, b, s.key, **kw)), ds, dbatch)
    timed("distill_step", jax.jit(lambda s: distill_update.distill_step(s, teacher, teacher_actor=nets.actor, **kw)), ds)


step = functools.partial(train_step, env=batched, nets=nets, config=cfg)
batch = jax.jit(collect)(st)
print({k: v.shape for k, v in batch.obs.items()}, "B", B, "T", T, "samples", B * T)
if "--distill" in sys.argv:
    distill_parts()
elif "--vmap-parts" in sys.argv:
    vmapped_parts()
else:
    # The most telling rows first: a stage cut off on a GPU keeps what it printed.
    timed("rollout", jax.jit(rollout), st)
    timed("collect", jax.jit(collect), st)
    timed("sgd epochs", jax.jit(sgd), st, batch)
    timed("one grad step", jax.jit(one_grad_step), st, batch)
    whole = jax.jit(step)
    timed("train_step", whole, st)
    if "--profile" in sys.argv:
        try:
            print_summary("train_step", *trace_ops(whole, st))
        except Exception as error:  # a profiler the machine lacks (e.g. no CUPTI) must not cost the other rows
            print(f"profile train_step: unavailable ({type(error).__name__}: {error})", flush=True)
    timed("env steps", jax.jit(env_only), st)  # the wrapped env without the policy: rollout - this = policy
    if "--sgd-variants" in sys.argv:
        sgd_variants()
    timed("train_step vmap K=1", jax.jit(jax.vmap(step)), jax.tree.map(lambda x: x[None], st))

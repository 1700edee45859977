"""Rollout-only env-steps/s at 1024 envs with a freshly initialised teacher policy; used for bench_cpu.md."""
import sys, time, jax
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench
from distill_jax.envs import VmapAutoReset
from distill_jax.rollout import unroll
from distill_jax.ppo.teacher import initial_teacher_states
from distill_jax.networks import make_teacher_networks
from distill_jax.policy import make_policy
from distill_jax.treeops import first_seed
env = bench.build_env("brax_inverted_pendulum", plain=True)
B, T = 1024, 16
cfg = bench.ppo_config(bench.parse_args([]), B)
batched = VmapAutoReset(env, B)
nets = make_teacher_networks(env.schema, env.action_size, cfg.network)
st = first_seed(initial_teacher_states(batched, nets, cfg, 0, 1))
policy = make_policy(nets.actor.apply, st.params["actor"], st.obs_stats)
f = jax.jit(lambda s, k: unroll(batched, s, policy, None, k, T)[0])
s = jax.block_until_ready(f(st.env_state, jax.random.PRNGKey(1)))
best = 1e9
for i in range(5):
    t0 = time.perf_counter(); s = jax.block_until_ready(f(s, jax.random.PRNGKey(i + 2))); best = min(best, time.perf_counter() - t0)
print("unroll teacher policy env-steps/s", round(B * T / best), flush=True)

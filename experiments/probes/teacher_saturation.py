"""Which action dimensions of a trained teacher sit at the tanh bounds.

Restores the finished teacher of a run directory, rolls out 64 steps of its
stochastic policy on its own batched env, and prints per action dimension the
share of steps with ``|tanh(loc)| >= 0.99`` (the distillation mask's default
threshold) and the median ``|tanh(loc)|`` and ``|loc|``, and the share of steps
with at least one / three saturated dimensions.

Usage: python experiments/probes/teacher_saturation.py RUN_DIR
Cited by: experiments/results/quadruped_pipeline_cpu.md
"""

import pathlib
import sys

import jax
import numpy as np

from distill_jax.distributions import SATURATION_LIMIT
from distill_jax.run.pipeline import open_run, restore_teacher
from distill_jax.policy import make_policy
from distill_jax.treeops import first_seed
from distill_jax.rollout import unroll

teacher = restore_teacher(open_run(pathlib.Path(sys.argv[1])))
state = first_seed(teacher.state)
policy = make_policy(teacher.nets.actor.apply, state.params["actor"], state.obs_stats)
_, _, tr = jax.jit(lambda s, k: unroll(teacher.env, s, policy, None, k, 64))(state.env_state, jax.random.PRNGKey(0))
loc = np.asarray(tr.policy.loc)  # [T, B, A]
mean_action = np.abs(np.tanh(loc))
saturated = mean_action >= SATURATION_LIMIT
print(f"per-dim share of steps with |tanh(loc)| >= {SATURATION_LIMIT}:", saturated.mean((0, 1)).round(2))
print("per-dim median |tanh(loc)|:", np.median(mean_action, (0, 1)).round(3))
print("per-dim median |loc|:", np.median(np.abs(loc), (0, 1)).round(2))
print("steps with any dim saturated:", saturated.any(-1).mean().round(3),
      " with >= 3 dims:", (saturated.sum(-1) >= 3).mean().round(3))

"""What each observation field is worth to a trained cartpole teacher (distill_jax.privilege).

Trains ``--seeds`` teachers at the default preset's teacher size (one vmapped program), then, for
each, permutes every field the teacher actor reads (deployable ones too, for scale) across the
``--episodes`` held-out panel envs, one field at a time, and prints the teacher's return drop and
fall-rate rise with their 95 % intervals, as a markdown table per teacher
(:func:`distill_jax.privilege.markdown_table`) and as JSON.

Usage: python experiments/probes/privilege_value.py [--seeds 3] [--episodes 256] [--json OUT.json]
Cited by: experiments/results/privilege_value_cartpole.md
"""

import argparse
import json
import platform
import time

import jax

from distill_jax import privilege
from distill_jax.config import PPOConfig
from distill_jax.distill.update import FrozenTeacher
from distill_jax.envs import get_env
from distill_jax.evaluate import Panel
from distill_jax.ppo.teacher import train_teacher

# The ``default`` preset's teacher (distill_jax/run/presets.py), restated so the probe stays in the core.
CONFIG = PPOConfig(num_envs=256, unroll_length=32, num_minibatches=4, num_epochs=4, learning_rate=1e-3,
                   total_env_steps=409_600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    env = get_env("cartpole")
    fields = env.schema.fields_for("teacher")
    print(f"{platform.processor() or platform.machine()}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
          f"python {platform.python_version()}, jax {jax.__version__}")
    started = time.time()
    trained = train_teacher(env, CONFIG, seed=0, num_seeds=args.seeds)
    print(f"trained {args.seeds} teacher(s) in {time.time() - started:.0f} s")
    panel = Panel.held_out(args.episodes, training_seeds=tuple(range(args.seeds)))
    out = {"config": {"teacher": CONFIG.__dict__ | {"network": CONFIG.network.__dict__}, "episodes": args.episodes,
                      "panel_first_seed": panel.seeds[0], "permutation_key": 0,
                      "used_rule": f"return_drop_ci95 low > {privilege.UNUSED_RELATIVE_DROP} x baseline return, "
                                   "or fall_rate_rise_ci95 low > 0"},
           "teachers": []}
    for k in range(args.seeds):
        seed_k = lambda x: x[k]  # noqa: E731
        teacher = FrozenTeacher(jax.tree.map(seed_k, trained.state.params["actor"]),
                                jax.tree.map(seed_k, trained.state.obs_stats))
        started = time.time()
        result = privilege.privilege_value(env, trained.nets.actor, teacher, panel, key=jax.random.PRNGKey(0),
                                           fields=fields)
        seconds = time.time() - started
        base = next(iter(result.values()))
        print(f"\n### teacher seed {k}: unpermuted return {base['baseline_return_mean']:.2f}, fall rate "
              f"{base['baseline_fall_rate']:.3f} ({args.episodes} episodes; {seconds:.0f} s incl. compile)\n")
        print(privilege.markdown_table(result, env.schema))
        for name in result:
            result[name]["role"] = env.schema.category_of(name)
        out["teachers"].append({"seed": k, "seconds": seconds, "fields": result})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

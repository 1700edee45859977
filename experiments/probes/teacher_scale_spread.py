"""How unevenly a teacher's confidence spreads over the states its student visits.

The reverse distillation KL weights each step's squared mean error by
``1/σ_teacher²``. This probe restores a finished run's teacher and student,
plays 256 held-out episodes with each policy acting (deterministic actions,
first episode of each seed, no auto-reset past it) and prints, over the
states each one visits:

* percentiles of the teacher's scale σ (pre-squash, first action dimension
  for the "before a fall" split, every dimension for the percentiles);
* the share of the total ``1/σ²`` weight that the 10 % most confident steps
  hold;
* for the student's states, the teacher's median σ within 20 steps before a
  student fall against the median elsewhere.

Usage: python experiments/probes/teacher_scale_spread.py RUN_DIR
Cited by: experiments/results/pipeline_cartpole.md ("GPU preset on 2 CPU cores");
tests/test_experiments.py tests its ``steps_before_falls``
"""

import pathlib
import sys

import numpy as np

from distill_jax.run import pipeline
from distill_jax.distill.update import FrozenTeacher
from distill_jax.evaluate import (Panel, first_episode_alive, first_episode_transitions, student_actor_only,
                                  teacher_policy)
from distill_jax.policy import action_distribution
from distill_jax.treeops import first_seed

EPISODES = 256
BEFORE_FALL = 20  # steps


def steps_before_falls(terminated: np.ndarray, window: int) -> np.ndarray:
    """``[T, B]`` bool: the ``window`` steps up to and including each termination."""
    near = np.zeros(terminated.shape, dtype=bool)
    for t, b in zip(*np.nonzero(terminated)):
        near[max(0, t - window):t + 1, b] = True
    return near


def main(run_dir: str) -> None:
    run = pipeline.open_run(pathlib.Path(run_dir))
    teacher, student = pipeline.restore_teacher(run), pipeline.restore_student(run)
    frozen = first_seed(FrozenTeacher(teacher.state.params["actor"], teacher.state.obs_stats))
    keys = Panel.held_out(EPISODES).reset_keys()
    policies = {
        "teacher": (teacher_policy(teacher.nets.actor, frozen), None),
        "student": (student_actor_only(student.student, first_seed(student.state.params),
                                       first_seed(student.state.obs_stats)),
                    student.student.initial_carry(EPISODES)),
    }
    for who, (policy, carry) in policies.items():
        tr = first_episode_transitions(run.env, policy, carry, keys, run.env.episode_length)
        scale = np.asarray(action_distribution(teacher.nets.actor.apply, frozen.params, frozen.obs_stats,
                                               tr.obs).scale)  # [T, B, A]
        alive = np.asarray(first_episode_alive(tr)) > 0  # [T, B]
        visited = scale[alive].reshape(-1)
        weight = np.sort(1.0 / visited**2)[::-1]
        top_share = weight[: len(weight) // 10].sum() / weight.sum()
        print(f"{who} acting: teacher σ percentiles 1/10/50/90/99 = "
              f"{np.round(np.percentile(visited, [1, 10, 50, 90, 99]), 4).tolist()}; "
              f"10 % most confident steps hold {top_share:.3f} of the 1/σ² weight")
        if who == "student":
            terminated = np.asarray(tr.terminated) * alive
            near = steps_before_falls(terminated > 0, BEFORE_FALL) & alive
            before = np.median(scale[..., 0][near]) if near.any() else float("nan")
            print(f"  {int(terminated.sum())} student falls in {EPISODES}; teacher's median σ within "
                  f"{BEFORE_FALL} steps before a fall {before:.4f}, elsewhere {np.median(scale[..., 0][~near & alive]):.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

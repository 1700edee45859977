"""Why the quadruped's sim-to-sim figures move: the feet's contacts in MuJoCo C, hfield against tangent planes.

Usage::

    python experiments/probes/quadruped_sim2sim_contacts.py RUN_DIR [--episodes 4] [--steps 500]

Runs the run's exported ONNX student (no JAX) in :class:`distill_jax.deploy.quadruped_sim.QuadrupedSim`
with each contact model (and the hfield with a converged solver) from the same seeds (same reset, randomisation, command; the pushes and
sensor noise come from the same generator, so the draws line up while both episodes last), and
prints per model: contacts per touching foot (constraint-bearing contacts of the last physics
substep of each control step), the feet's mean normal force while touching, the share of
control steps with a foot on more than one contact, the episodes' returns, falls, tracking error.
Also, when the run holds them, the paired difference of two ``sim2sim`` reports saved as
``sim2sim_hfield.json`` and ``sim2sim_tangent_plane.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from distill_jax.deploy.observations import ActionDelay, ObservationBuilder
from distill_jax.deploy.physics import make_sim
from distill_jax.deploy.runtime import OnnxStudent


def foot_contacts(sim) -> np.ndarray:
    """Constraint-bearing contacts per foot ``[4]`` at the current state."""
    c = sim.data.contact
    active = c.efc_address >= 0
    return np.array([np.sum(active & ((c.geom1 == g) | (c.geom2 == g))) for g in sim.foot_geoms])


def episode(sim, student, seed: int, steps: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    delay, builder = ActionDelay(student.contract.latency, student.action_size), ObservationBuilder(student.contract, rng)
    obs = builder.reset(sim.reset(rng))
    delay.reset(rng)
    carry = student.initial_carry(1)
    total, counts, forces, multi, errors, fall, n = 0.0, [], [], 0, [], False, 0
    for n in range(1, steps + 1):
        carry, action = student.step(carry, obs)
        task_obs, reward, fall, metrics = sim.step(delay(action))
        total += reward
        errors.append(metrics["tracking_error"])
        k = foot_contacts(sim)
        touching = task_obs["foot_contact_forces"] > 1.0
        counts += list(k[k > 0])
        forces += list(task_obs["foot_contact_forces"][touching])
        multi += int(np.any(k > 1))
        if fall:
            break
        obs = builder.step(task_obs, action)
    return {"return": total, "fall": float(fall), "steps": n, "tracking_error": float(np.mean(errors)),
            "contacts_per_touching_foot": float(np.mean(counts)) if counts else 0.0,
            "foot_force_touching": float(np.mean(forces)) if forces else 0.0, "steps_multi_contact": multi / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    evaluation = args.run_dir / "eval.json"
    fingerprint = (json.loads(evaluation.read_text())["panel"]["env_fingerprint"] if evaluation.is_file()
                   else json.loads((args.run_dir / "env_fingerprint.json").read_text()))
    student = OnnxStudent(args.run_dir / "export" / "student.onnx")
    out = {}
    # The third: MuJoCo's hfield contact with the solver run to convergence (50 Newton iterations, 50
    # line-search steps instead of training's 1 and 5), to see whether the solver's share of the gap
    # is the one iteration.
    for label, contact, iterations in (("hfield", "hfield", None), ("tangent_plane", "tangent_plane", None),
                                       ("hfield_50_iterations", "hfield", 50)):
        sim = make_sim(fingerprint, contact)
        if iterations:
            sim.model.opt.iterations, sim.model.opt.ls_iterations = iterations, iterations
        rows = [episode(sim, student, 1_000_000 + i, args.steps) for i in range(args.episodes)]
        out[label] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(label, json.dumps({k: round(v, 4) for k, v in out[label].items()}))
    reports = {c: args.run_dir / f"sim2sim_{c}.json" for c in ("hfield", "tangent_plane")}
    if all(p.is_file() for p in reports.values()):
        a, b = (json.loads(reports[c].read_text())["per_episode"] for c in ("hfield", "tangent_plane"))
        for key in ("return", "fall", "tracking_error"):
            d = np.array([x[key] - y[key] for x, y in zip(a, b)])
            half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            print(f"paired hfield - tangent_plane {key}: {d.mean():+.4f} ± {half:.4f} (95 %, n={len(d)})")


if __name__ == "__main__":
    main()

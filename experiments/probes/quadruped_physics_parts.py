"""Where the rough-terrain quadruped's physics step spends its time, on this machine.

Times a jitted ``scan`` of ``vmap(mjx.step)`` (20 physics steps of B envs,
best of 5) for model variants of ``quadruped_rough``'s MJCF, and MJX's
collision stage alone (``collision_driver.collision`` on the same states):

* colliders: ``feet + trunk`` (version 1: 4 feet and 2 trunk spheres against
  the height field) or ``feet only`` (version 2);
* solver: ``4/8`` (version 1: 4 Newton iterations, 8 line-search steps) or
  ``1/5`` (version 2, MuJoCo Playground's Go1 setting);
* ``plane`` instead of ``hfield``: the same robot on a flat plane, what the
  height field itself costs;
* ``tangent planes`` (version 3): each foot against its own plane, placed on
  the terrain's tangent plane under the foot before every physics step (the
  placement is inside the timed step).

MJX collides a sphere with a height field by building the triangular prisms
of every grid cell its bounding box can touch and running a convex collision
per prism; the trunk spheres (radius 0.08 m on a 0.1 m grid) cover 3x3 cells
(18 prisms each) against 2x2 (8 prisms) for a foot. States are taken after
0.4 s of standing so the feet are in contact.

Usage: PYTHONPATH=experiments python experiments/probes/quadruped_physics_parts.py [B ...] [--cases v2,v3,plane]
       (default 256, every case)
Cited by: experiments/results/quadruped_physics_cpu.md; run by experiments/gpu_session.sh quadruped
"""

import argparse
import copy
import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

import jax  # noqa: E402
import mujoco  # noqa: E402
from mujoco import mjx  # noqa: E402
from mujoco.mjx._src import collision_driver  # noqa: E402

from benchlib import best_seconds  # noqa: E402
from distill_jax.envs.quadruped import QuadrupedConfig, RoughTerrainQuadruped  # noqa: E402

SUBSTEPS = 20


def variant(trunk_collides: bool, ground: str, solver: tuple[int, int]) -> tuple[RoughTerrainQuadruped, mujoco.MjModel]:
    """The task built by its own config options, and its model; ``ground="plane"`` swaps the height field for a plane."""
    contact = "tangent_plane" if ground == "tangent planes" else "hfield"
    cfg = QuadrupedConfig(solver_iterations=solver[0], solver_ls_iterations=solver[1], trunk_collision=trunk_collides,
                          foot_contact=contact)
    task = RoughTerrainQuadruped(cfg)
    m = copy.copy(task.mj_model)
    if ground == "plane":
        floor = m.geom("floor").id
        m.geom_type[floor] = mujoco.mjtGeom.mjGEOM_PLANE
        m.geom_size[floor] = (10.0, 10.0, 0.1)
        m.geom_dataid[floor] = -1
    return task, m


def measure(task: RoughTerrainQuadruped, m: mujoco.MjModel, batch: int, plane: bool) -> tuple[float, float, int]:
    mx = mjx.put_model(m)
    states = jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(0), batch))
    d = states.physics
    if plane:  # stand on the plane: drop the spawn height to the flat-floor one
        d = d.replace(qpos=d.qpos.at[:, 2].set(0.33))
    d = jax.vmap(lambda dd: mjx.make_data(mx).replace(qpos=dd.qpos, qvel=dd.qvel, ctrl=dd.ctrl))(d)

    def step(dd):  # what the task's physics_step does per physics step
        return mjx.step(mx, task.before_physics_step(mx, dd))

    @jax.jit
    def run(d):
        def body(d, _):
            return jax.vmap(step)(d), None

        return jax.lax.scan(body, d, None, length=SUBSTEPS)[0]

    settle = jax.jit(lambda d: jax.lax.fori_loop(0, 100, lambda _, x: jax.vmap(step)(x), d))
    d = jax.block_until_ready(settle(d))
    collide = jax.jit(jax.vmap(lambda dd: collision_driver.collision(mx, dd)))
    ncon = int(d._impl.contact.dist.shape[-1])
    return best_seconds(run, d) / SUBSTEPS, best_seconds(collide, d), ncon


# key -> (row name, (trunk spheres collide, ground, solver iterations / line-search steps))
CASES = {
    "v1": ("hfield, feet + trunk, solver 4/8", (True, "hfield", (4, 8))),
    "v1-feet": ("hfield, feet only, solver 4/8", (False, "hfield", (4, 8))),
    "v2-trunk": ("hfield, feet + trunk, solver 1/5", (True, "hfield", (1, 5))),
    "v2": ("hfield, feet only, solver 1/5", (False, "hfield", (1, 5))),
    "v3": ("tangent planes, feet only, solver 1/5", (False, "tangent planes", (1, 5))),
    "plane": ("plane, feet only, solver 1/5", (False, "plane", (1, 5))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("batches", nargs="*", type=int, default=[256], help="numbers of envs (default 256)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {list(CASES)} (default all); "
                        "the first is the speed-up's reference")
    args = parser.parse_args()
    keys = [k for k in args.cases.split(",") if k]
    unknown = sorted(set(keys) - set(CASES))
    if unknown or not keys:
        parser.error(f"--cases {args.cases!r}: unknown {unknown}; expected a comma-separated list of {list(CASES)}")
    batches = args.batches
    print(f"devices: {jax.devices()}; {SUBSTEPS} physics steps per timed call, best of 5")
    for batch in batches:
        base = None
        for key in keys:
            name, (trunk, ground, solver) = CASES[key]
            task, m = variant(trunk, ground, solver)
            step_s, coll_s, ncon = measure(task, m, batch, ground == "plane")
            base = base or step_s
            print(f"B={batch:5d} {name:38s} contacts {ncon:3d}  mjx.step {1e3 * step_s:8.2f} ms "
                  f"({batch / step_s:9.0f} physics steps/s, {base / step_s:4.2f}x)  "
                  f"collision alone {1e3 * coll_s:7.2f} ms ({100 * coll_s / step_s:4.1f} % of a step)")


if __name__ == "__main__":
    main()

"""The quadruped's MJCF: the shipped ``assets/quadruped.xml`` edited for one :class:`QuadrupedConfig`.

The solver settings, whether the trunk spheres collide, the per-foot contact
planes (``foot_contact="tangent_plane"``) and the height field's size are set
here; the height values themselves are written into the compiled model by
:class:`~distill_jax.envs.quadruped.task.RoughTerrainQuadruped`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from distill_jax.envs.mjx_env import load_asset
from distill_jax.envs.quadruped.config import LEGS, TRUNK_SPHERES, QuadrupedConfig


def build_mjcf(cfg: QuadrupedConfig, max_height: float) -> str:
    """The shipped MJCF with the solver, trunk colliders and height field set from ``cfg``."""
    terrain_cfg = cfg.terrain
    root = ET.fromstring(load_asset("quadruped.xml"))
    option = root.find("./option")
    if option is None:
        raise ValueError("quadruped.xml lacks <option>")
    option.set("iterations", str(cfg.solver_iterations))
    option.set("ls_iterations", str(cfg.solver_ls_iterations))
    for name in TRUNK_SPHERES:
        sphere = root.find(f".//geom[@name='{name}']")
        if sphere is None:
            raise ValueError(f"quadruped.xml lacks <geom name='{name}'>")
        sphere.set("conaffinity", "1" if cfg.trunk_collision else "0")
    if cfg.foot_contact == "tangent_plane":
        _add_foot_planes(root)
    hfield = root.find("./asset/hfield[@name='terrain']")
    if hfield is None:
        raise ValueError("quadruped.xml lacks <hfield name='terrain'>")
    # hfield elevation = data * size[2]; data is written normalised to [0, 1].
    elevation = max(float(max_height), 1e-3)
    hfield.set("nrow", str(terrain_cfg.nrow))
    hfield.set("ncol", str(terrain_cfg.ncol))
    hfield.set("size", f"{terrain_cfg.half_x!r} {terrain_cfg.half_y!r} {elevation!r} 0.2")
    return ET.tostring(root, encoding="unicode")


def _add_foot_planes(root: ET.Element) -> None:
    """One mocap body with a plane per foot; foot ``i`` collides with plane ``i`` only.

    Collision bits: the height field keeps ``contype`` 1 (the trunk spheres
    still collide with it when ``trunk_collision``); plane ``i`` has
    ``contype`` ``2 << i`` and foot ``i`` takes ``conaffinity`` ``2 << i``, so a
    foot matches neither the height field nor another foot's plane. The
    planes and the height field all have ``conaffinity`` 0, so they never
    match each other.
    """
    worldbody = root.find("./worldbody")
    floor = root.find("./worldbody/geom[@name='floor']")
    if worldbody is None or floor is None:
        raise ValueError("quadruped.xml lacks <worldbody> or its <geom name='floor'>")
    for i, leg in enumerate(LEGS):
        foot = root.find(f".//geom[@name='{leg}_foot']")
        if foot is None:
            raise ValueError(f"quadruped.xml lacks <geom name='{leg}_foot'>")
        foot.set("conaffinity", str(2 << i))
        body = ET.SubElement(worldbody, "body", name=f"{leg}_ground", mocap="true")
        ET.SubElement(body, "geom", name=f"{leg}_ground", type="plane", size="0.15 0.15 0.05",
                      contype=str(2 << i), conaffinity="0", condim=floor.get("condim", "1"),
                      friction=floor.get("friction", "1 0.005 0.0001"), rgba="0.3 0.6 0.3 0.3")


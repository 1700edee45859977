"""The rough-terrain quadruped's MJCF edit, without JAX: shared by the MJX task and the C sim-to-sim.

:func:`edit_quadruped_mjcf` takes the shipped ``assets/quadruped.xml`` and sets the solver
iterations, whether the trunk spheres collide, the per-foot contact planes
(``foot_contact="tangent_plane"``) and the height field's size. The MJX task
(:func:`distill_jax.envs.quadruped.mjcf.build_mjcf`) and
:class:`distill_jax.deploy.quadruped_sim.QuadrupedSim` both call it, so the C side can rebuild
the exact XML a run trained on (its hash is in the run's fingerprint) and then the variant it
simulates (MuJoCo's own height-field contact).

It lives outside :mod:`distill_jax.envs` because importing that package imports JAX.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from distill_jax.hashing import fingerprint_hash, mjcf_hash
from distill_jax.heightfield import heights_hash

LEGS = ("FL", "FR", "RL", "RR")
TRUNK_SPHERES = ("trunk_front", "trunk_rear")  # the trunk's contact proxies
FOOT_CONTACTS = ("hfield", "tangent_plane")


def edit_quadruped_mjcf(xml: str, *, solver_iterations: int, solver_ls_iterations: int, trunk_collision: bool,
                        foot_contact: str, nrow: int, ncol: int, half_x: float, half_y: float,
                        max_height: float) -> str:
    """``xml`` (the shipped ``quadruped.xml``) with solver, trunk colliders, foot planes and hfield size set.

    Args:
      xml: the shipped MJCF text.
      solver_iterations, solver_ls_iterations: ``<option iterations ls_iterations>``.
      trunk_collision: the trunk proxy spheres collide with the terrain.
      foot_contact: ``"hfield"`` (feet collide with the height field) or ``"tangent_plane"``
        (one mocap plane per foot, the foot colliding with it only).
      nrow, ncol, half_x, half_y: the terrain grid and half extents (m).
      max_height: the terrain's highest point (m): the hfield's elevation scale.

    Raises:
      ValueError: ``foot_contact`` is unknown or the XML lacks an element this edit sets.
    """
    if foot_contact not in FOOT_CONTACTS:
        raise ValueError(f"foot_contact={foot_contact!r}: must be one of {FOOT_CONTACTS}")
    root = ET.fromstring(xml)
    option = root.find("./option")
    if option is None:
        raise ValueError("quadruped.xml lacks <option>")
    option.set("iterations", str(solver_iterations))
    option.set("ls_iterations", str(solver_ls_iterations))
    for name in TRUNK_SPHERES:
        sphere = root.find(f".//geom[@name='{name}']")
        if sphere is None:
            raise ValueError(f"quadruped.xml lacks <geom name='{name}'>")
        sphere.set("conaffinity", "1" if trunk_collision else "0")
    if foot_contact == "tangent_plane":
        _add_foot_planes(root)
    hfield = root.find("./asset/hfield[@name='terrain']")
    if hfield is None:
        raise ValueError("quadruped.xml lacks <hfield name='terrain'>")
    # hfield elevation = data * size[2]; data is written normalised to [0, 1].
    elevation = max(float(max_height), 1e-3)
    hfield.set("nrow", str(nrow))
    hfield.set("ncol", str(ncol))
    hfield.set("size", f"{half_x!r} {half_y!r} {elevation!r} 0.2")
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


def quadruped_model_hash(xml: str, heights: Any) -> str:
    """The quadruped's ``model_hash``: its edited MJCF and its terrain heights together (the MJX task
    records it in the fingerprint; the C re-implementation checks its rebuild against it)."""
    return fingerprint_hash({"mjcf": mjcf_hash(xml), "heights": heights_hash(heights)})

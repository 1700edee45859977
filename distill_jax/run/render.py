"""Videos of held-out panel episodes: teacher and student side by side, same seed.

``python -m distill_jax.render RUN_DIR`` (or ``python -m distill_jax.train ... --video``)
restores the run's teacher and student (seed index 0, as ``eval.json``), rolls both out
deterministically in MJX from the panel's reset keys (the same episodes ``eval.json`` scores),
replays the recorded ``qpos`` in MuJoCo's renderer on the episode's randomised model, and
writes under ``RUN_DIR/videos/``:

* ``panel<i>_seed<seed>.mp4`` — H.264, one frame per control step (the reset state, then the
  state after each step), at the control rate; left the teacher, right the student, each
  captioned with the policy, its return so far and, once it happened, the fall;
* ``panel<i>_seed<seed>.gif`` — the same at half size and at most 12.5 frames per second, for
  READMEs;
* ``render.json`` — per rendered episode: seed, lengths, returns, falls, frames; the whole
  panel's mean returns (equal to ``eval.json``'s); the seconds spent.

OpenGL: MuJoCo reads ``MUJOCO_GL`` when it is first imported. :func:`prepare_gl` picks
``egl`` on a Linux machine without a display unless the variable is set, and
:func:`check_gl` opens a context once, so a machine without one gets a single line naming the
backends to install before any work is done. That is also why the imports of MuJoCo and of
distill_jax modules (which import MuJoCo) sit inside the functions.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
import warnings
from typing import Any

GL_BACKENDS_HINT = ("install EGL (Debian/Ubuntu: apt-get install libegl1) and set MUJOCO_GL=egl, or OSMesa "
                    "(apt-get install libosmesa6) with MUJOCO_GL=osmesa; with a display, MUJOCO_GL=glfw")
VIDEOS_DIR = "videos"
PANE_WIDTH, PANE_HEIGHT = 320, 240  # multiples of 16: H.264 encoders need no padding
GIF_MAX_FPS = 12.5


class RenderError(Exception):
    """Rendering cannot proceed; the message is the one line printed."""


def prepare_gl() -> str:
    """Sets ``MUJOCO_GL=egl`` on Linux without a display when unset; returns the backend in force.

    Call before ``mujoco`` is first imported (MuJoCo reads the variable at import).
    """
    headless = platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless and "mujoco" not in sys.modules:
        os.environ.setdefault("MUJOCO_GL", "egl")
    return os.environ.get("MUJOCO_GL", "(default)")


def check_gl() -> None:
    """Opens (and closes) an 8x8 offscreen context.

    Raises:
      RenderError: naming ``MUJOCO_GL`` and the backends to install.
    """
    backend = prepare_gl()
    try:
        with warnings.catch_warnings():  # GLFW warns on its way to the failure; the one line below says it all
            warnings.simplefilter("ignore")
            import mujoco

            renderer = mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco><worldbody/></mujoco>"), 8, 8)
            renderer.close()
    except Exception as e:  # ImportError, RuntimeError, OSError, GL errors: all mean "no usable context"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RenderError(f"MuJoCo cannot open an OpenGL context (MUJOCO_GL={backend}: {reason}); "
                          f"{GL_BACKENDS_HINT}") from None


def panel_trajectories(env: Any, teacher_actor: Any, teacher: Any, student: Any, s_params: Any, s_stats: Any,
                       keys: Any, horizon: int) -> dict[str, Any]:
    """Deterministic teacher and student rollouts on the panel's reset keys, with ``qpos``.

    The env is stepped by ``vmap`` without automatic reset, so the state after an episode's
    last step (a fall, say) is kept for the final frame; the first episode of each env is the
    one ``eval.json`` scores (same keys, same deterministic policies). Teacher and student
    envs share one batch ``[2N]`` (teacher first), so the env step is compiled once, not twice.

    Returns:
      ``{"teacher" | "student": {"qpos": [T + 1, N, nq], "rewards": [T, N], "scores": {...: [N]}},
      "params": {name: [N]}}`` as NumPy arrays (``qpos[0]`` is the reset state).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from distill_jax.evaluate import eval_wrapper, first_episode_scores, teacher_policy
    from distill_jax.rollout import PolicyStep, Transition
    from distill_jax.xla_options import compiler_options

    n = keys.shape[0]
    options = compiler_options()
    if jax.devices()[0].platform == "cpu":
        # The program runs once, for a fraction of a second; LLVM's optimisation passes are half
        # of its ~12 s compilation on 2 CPU cores (measured on the default cartpole run).
        options["xla_backend_optimization_level"] = 0
    halves = lambda tree: (jax.tree.map(lambda x: x[:n], tree), jax.tree.map(lambda x: x[n:], tree))  # noqa: E731

    @functools.partial(jax.jit, compiler_options=options)
    def both(keys, teacher, s_params, s_stats):
        t_policy = teacher_policy(teacher_actor, teacher)
        s_policy = eval_wrapper(student, s_params, s_stats)
        start = jax.vmap(env.reset)(jnp.concatenate([keys, keys]))

        def body(c, _):
            state, carry = c
            (t_obs, s_obs), (t_first, s_first) = halves(state.obs), halves(state.first)
            _, t_out = t_policy(None, t_obs, t_first, jax.random.PRNGKey(0))
            carry, s_out = s_policy(carry, s_obs, s_first, jax.random.PRNGKey(0))
            nxt = jax.vmap(env.step)(state, jnp.concatenate([t_out.action, s_out.action]))
            return (nxt, carry), (nxt.physics.qpos, nxt.reward, nxt.terminated, nxt.truncated, nxt.metrics)

        _, (qpos, reward, terminated, truncated, metrics) = jax.lax.scan(
            body, (start, student.initial_carry(n)), None, length=horizon)
        qpos = jnp.concatenate([start.physics.qpos[None], qpos])
        out = {"params": halves(start.params)[0]}
        for name, part in (("teacher", slice(0, n)), ("student", slice(n, 2 * n))):
            tr = Transition(obs={}, next_obs={}, policy=PolicyStep(*[jnp.zeros(())] * 5), reward=reward[:, part],
                            terminated=terminated[:, part], truncated=truncated[:, part], first=jnp.zeros(()),
                            metrics=jax.tree.map(lambda x: x[:, part], metrics), episode={})
            out[name] = {"qpos": qpos[:, part], "rewards": reward[:, part], "scores": first_episode_scores(tr)}
        return out

    return jax.tree.map(np.asarray, jax.device_get(both(keys, teacher, s_params, s_stats)))


def _camera(model: Any, data: Any):
    """A free camera: following the first body of a floating-base robot, else framing the whole scene."""
    import mujoco

    camera = mujoco.MjvCamera()
    if model.njnt and model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE:
        camera.lookat[:] = data.xpos[1]
        camera.distance, camera.azimuth, camera.elevation = 1.8, 135.0, -20.0
    else:  # side view of the whole (fixed-base) scene, e.g. the cart-pole's rail and pole
        camera.lookat[:] = model.stat.center + [0.0, 0.0, 0.1 * model.stat.extent]
        camera.distance, camera.azimuth, camera.elevation = 0.95 * model.stat.extent, 90.0, -5.0
    return camera


def _caption(frame: Any, lines: list[tuple[str, tuple[int, int, int]]]) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    y = 4
    for text, colour in lines:
        draw.text((6, y), text, fill=colour, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        y += 18
    return image


def render_episode(model: Any, panes: dict[str, dict[str, Any]], dt: float) -> list[Any]:
    """Side-by-side RGB frames ``[H, 2W, 3]`` of one episode.

    Args:
      model: the episode's ``MjModel`` (randomised geometry applied).
      panes: ``{"teacher" | "student": {"qpos": [L + 1, nq], "rewards": [>= L], "length", "fall"}}``;
        a pane whose episode is shorter holds its last frame.
      dt: control period (s), for the time shown.

    Returns:
      ``1 + max(length)`` frames (uint8 arrays).
    """
    import mujoco
    import numpy as np

    count = 1 + max(int(p["length"]) for p in panes.values())
    labels = {"teacher": "teacher (privileged)", "student": "student (deployable)"}
    white = (255, 255, 255)
    renderer = mujoco.Renderer(model, PANE_HEIGHT, PANE_WIDTH)
    # Shadows and reflections cost ~30 ms a frame in Mesa's software EGL (llvmpipe), 20x the rest.
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    data = mujoco.MjData(model)
    frames = []
    try:
        for i in range(count):
            row = []
            for name, pane in panes.items():
                step = min(i, int(pane["length"]))
                data.qpos[:] = pane["qpos"][step]
                mujoco.mj_kinematics(model, data)
                renderer.update_scene(data, camera=_camera(model, data))
                done = step == int(pane["length"])
                status = (("FELL", (255, 80, 80)) if pane["fall"] else ("no fall", (120, 255, 120))) if done else \
                    (f"t = {step * dt:.2f} s", white)
                row.append(np.asarray(_caption(renderer.render(), [
                    (labels.get(name, name), white), (f"return {np.sum(pane['rewards'][:step]):.1f}", white), status])))
            frames.append(np.concatenate(row, axis=1))
    finally:
        renderer.close()
    return frames


def ffmpeg() -> Any:
    """The ``imageio_ffmpeg`` module (it ships an ``ffmpeg`` binary).

    Raises:
      RenderError: it is not installed, naming the extra that installs it.
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        raise RenderError("imageio-ffmpeg is not installed: pip install 'distill_jax[render]' "
                          "(or imageio-ffmpeg)") from None
    return imageio_ffmpeg


def write_mp4(path: Any, frames: list[Any], fps: float) -> None:
    """H.264 MP4 through the ``ffmpeg`` that ``imageio-ffmpeg`` ships."""
    imageio_ffmpeg = ffmpeg()
    height, width = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         quality=7, macro_block_size=16, ffmpeg_log_level="error")
    # The first send starts ffmpeg. Python warns that forking a multithreaded (JAX) process may
    # deadlock; subprocess forks and immediately execs ffmpeg, which is the safe case, and a
    # newcomer would read the warning as an error.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()


def write_gif(path: Any, frames: list[Any], fps: float) -> None:
    """A half-size GIF at most :data:`GIF_MAX_FPS` frames per second (Pillow)."""
    from PIL import Image

    stride = max(1, int(round(fps / GIF_MAX_FPS)))
    images = [Image.fromarray(f).reduce(2) for f in frames[::stride]]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 * stride / fps)), loop=0)


def render_run(run_dir: Any, episodes: int = 1, *, gif: bool = True) -> dict[str, Any]:
    """Renders the first ``episodes`` panel episodes of ``run_dir``; returns what ``render.json`` holds.

    Raises:
      RenderError: no usable OpenGL context, no imageio-ffmpeg.
      RunError: not a run directory, or its teacher/student is missing or unfinished.
    """
    check_gl()
    ffmpeg()  # both before any work, so a refusal leaves the run directory as it was
    start = time.perf_counter()
    import mujoco

    from distill_jax.deploy.physics import ModelRandomizer
    from distill_jax.distill.update import FrozenTeacher
    from distill_jax.evaluate import Panel, summarize
    from distill_jax.export import unwrap
    from distill_jax.run import pipeline
    from distill_jax.treeops import first_seed

    run = pipeline.open_run(run_dir)
    env = pipeline.make_env(run.config, for_eval=True) if run.config.eval_env_overrides else run.env
    teacher_result, student_result = pipeline.restore_teacher(run), pipeline.restore_student(run)
    config = run.config
    panel = Panel.held_out(config.eval_episodes, tuple(config.seed + k for k in range(config.num_seeds)))
    episodes = min(episodes, len(panel.seeds))
    teacher = FrozenTeacher(first_seed(teacher_result.state.params["actor"]), first_seed(teacher_result.state.obs_stats))
    rollouts = panel_trajectories(env, teacher_result.nets.actor, teacher, student_result.student,
                                  first_seed(student_result.state.params), first_seed(student_result.state.obs_stats),
                                  panel.reset_keys(), env.episode_length)
    rollout_seconds = time.perf_counter() - start
    _, task = unwrap(env)
    # Only the geometry matters for the picture: masses, damping and gains leave it unchanged.
    lengths = [r for r in env.fingerprint().get("randomization", []) if r["target"].startswith("body_length:")]
    out_dir = run.path / VIDEOS_DIR
    out_dir.mkdir(exist_ok=True)
    fps = 1.0 / task.dt
    rendered = []
    for i in range(episodes):
        model = task.mj_model.__copy__()
        if lengths:
            ModelRandomizer(model, lengths).apply([float(rollouts["params"][r["name"]][i]) for r in lengths])
        panes = {name: {"qpos": rollouts[name]["qpos"][:, i], "rewards": rollouts[name]["rewards"][:, i],
                        "length": rollouts[name]["scores"]["length"][i],
                        "return": float(rollouts[name]["scores"]["return"][i]),
                        "fall": bool(rollouts[name]["scores"]["fall"][i])} for name in ("teacher", "student")}
        frames = render_episode(model, panes, task.dt)
        stem = out_dir / f"panel{i}_seed{panel.seeds[i]}"
        write_mp4(stem.with_suffix(".mp4"), frames, fps)
        if gif:
            write_gif(stem.with_suffix(".gif"), frames, fps)
        rendered.append({"seed": panel.seeds[i], "frames": len(frames), "mp4": f"{stem.name}.mp4",
                         "gif": f"{stem.name}.gif" if gif else None,
                         **{f"{name}_{key}": (int(p[key]) if key == "length" else p[key])
                            for name, p in panes.items() for key in ("length", "return", "fall")}})
    report = {"episodes": rendered, "fps": fps, "pane_size": [PANE_WIDTH, PANE_HEIGHT],
              "panel_return_mean": {name: summarize(rollouts[name]["scores"])["return_mean"]
                                    for name in ("teacher", "student")},
              "mujoco": mujoco.__version__, "mujoco_gl": os.environ.get("MUJOCO_GL", "(default)"),
              "seconds": {"restore_and_rollout": rollout_seconds, "total": time.perf_counter() - start}}
    (out_dir / "render.json").write_text(json.dumps(report, indent=2))
    return report

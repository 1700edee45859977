"""``python -m distill_jax.render RUN_DIR``: MP4 (and GIF) of held-out panel episodes, teacher and student side by side.

The implementation is :func:`distill_jax.run.render.render_run`; it writes ``RUN_DIR/videos/``.
On a machine without an OpenGL context it stops with one line naming the ``MUJOCO_GL``
backends to install (exit status 2), before restoring or rolling out anything.
"""

from __future__ import annotations

import argparse
import sys

from distill_jax.deploy.command import run_dir_parser


def build_parser() -> argparse.ArgumentParser:
    parser = run_dir_parser(
        "render", "Render held-out panel episodes of a run's teacher and student side by side (same seed) to "
        "RUN_DIR/videos/*.mp4 and *.gif, captioned with policy, return and fall.",
        "a run directory with teacher and student checkpoints", 1, "panel episodes to render, from the first")
    parser.add_argument("--no-gif", action="store_true", help="write the MP4 only")
    return parser


def main(argv: list[str] | None = None) -> int:
    from distill_jax.run.cli import open_xla_cache
    from distill_jax.run.render import RenderError, check_gl, render_run

    args = build_parser().parse_args(argv)
    try:
        check_gl()  # before any JAX work (and before MuJoCo is imported): no OpenGL is known in a second
    except RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from distill_jax.config import ConfigError
    from distill_jax.run.checkpoint import CheckpointError
    from distill_jax.run.pipeline import RunError
    from distill_jax.schema import SchemaError

    open_xla_cache(None)  # the train command's persistent cache: a second render compiles nothing
    try:
        report = render_run(args.run_dir, args.episodes, gif=not args.no_gif)
    except (RenderError, RunError, ConfigError, SchemaError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for episode in report["episodes"]:
        print(f"{args.run_dir / 'videos' / episode['mp4']}: {episode['frames']} frames; teacher return "
              f"{episode['teacher_return']:.1f}{' (fell)' if episode['teacher_fall'] else ''}, student return "
              f"{episode['student_return']:.1f}{' (fell)' if episode['student_fall'] else ''}")
    print(f"rendered in {report['seconds']['total']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Fetch, on a machine with PyPI access, the wheels the lent GPU machine lacks, into ./.whl
# (ignored by git). The GPU image already holds jax/jaxlib (CUDA), flax, optax, chex,
# orbax-checkpoint, numpy, scipy, pillow, jinja2, absl-py, etils, protobuf, pyyaml, click,
# werkzeug, markupsafe, packaging and typing-extensions; it cannot reach PyPI, so everything
# else that brax / mujoco / mujoco-mjx import travels as a cp312 manylinux wheel
# (see experiments/gpu_runbook.md for how each call installs them).
#
# The pins are the versions pyproject.toml's ranges resolve to on CI today and that the H100
# results were measured with (Python 3.11 there, 3.12 on the GPU image). One version per
# package: two versions of one name stop the --no-deps install.
#
# Usage: bash experiments/gpu_wheels.sh   (from anywhere; writes <repo>/.whl). On 2026-11-24
# this fetched 16 wheels, 34 MiB (17 since filelock joined on 2026-12-05, still 34 MiB): with the
# ~1 MiB working tree that fits one call's 64 MiB carry.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  brax==0.14.2 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 mujoco-mjx==3.17.0
  # brax's and mujoco's own requirements missing from the GPU image
  jaxopt ml-collections tensorboardx trimesh flask flask-cors blinker itsdangerous
  glfw pyopengl websockets
  # the CLI's capped compilation cache (JAX's eviction); without it the cache goes uncapped
  filelock
)

platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 \
           manylinux_2_35_x86_64 manylinux_2_24_x86_64; do
  platforms+=(--platform "$tag")
done

mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl "${packages[@]}"
ls -1 .whl
du -sh .whl

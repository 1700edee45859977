#!/usr/bin/env bash
# One call's worth of issue #8's GPU measurements, sized for a lent machine's 15 minutes of device
# time (experiments/gpu_runbook.md says which stage to run when, and what each one answers).
#
# Usage, as the whole device command (the working tree is the repository root there):
#   bash experiments/gpu_session.sh pipeline    # quadruped teacher -> GRU student -> panel -> export
#   bash experiments/gpu_session.sh bench       # the throughput row at the largest batch
#   bash experiments/gpu_session.sh quadruped   # quadruped training throughput and its profile
#   bash experiments/gpu_session.sh parts 8192  # one teacher update's parts, timed apart (bench.py's task)
#   bash experiments/gpu_session.sh terrain     # terrain quadruped: blind and perceptive students, per terrain type
# Arguments after the stage go to the stage's Python command and, coming last, override its own
# (argparse keeps the last value): the tests run the stages at toy sizes on a CPU this way.
#
# It installs the carried wheels (.whl/, from experiments/gpu_wheels.sh) where brax or mujoco-mjx
# does not import, runs the stage under its own timeout (STAGE_SECONDS) and leaves what it
# measured under $OUT (./gpu_out when unset), also when the stage is cut off: bench.py rewrites
# its files after every column and the pipeline's run directory is packed whatever happened. Runs
# go to $RUNS (./runs when unset); a second `pipeline` call on a still-warm machine resumes the
# first one's run instead of starting over. Exits with the stage's status (124: its timeout; for
# `quadruped`, the first of its three commands that failed).
set -uo pipefail
cd "$(dirname "$0")/.." || exit
stage=${1:?usage: bash experiments/gpu_session.sh pipeline|bench|quadruped|parts|terrain [args for its command...]}
shift
out=${OUT:-gpu_out}
runs=${RUNS:-runs}
mkdir -p "$out" "$runs"

# Only where the physics packages are missing (the GPU image): a machine that has them, like a
# developer's with .whl/ fetched, keeps its own versions.
if compgen -G ".whl/*.whl" >/dev/null && ! python3 -c "import brax, mujoco.mjx" >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
# The probes import the benchmark helpers (bench.py, benchlib.py, bench_envs.py) by name.
probe_path="$PWD/experiments${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'EOF' 2>&1 | tee "$out/devices.txt"
import jax
print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())
EOF

# `timeout -k`: a JAX process busy in a compiled call may ignore SIGTERM for a while.
stage_timeout() { timeout -k 15 "$1" "${@:2}"; }
# `logged LOG SECONDS COMMAND...`: the command line, then the command under that timeout, both
# appended to LOG and shown; sets `status` to the command's exit status.
logged() {
  local log=$1 seconds=$2
  shift 2
  echo "+ $*" | tee -a "$log"
  stage_timeout "$seconds" "$@" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
}

case $stage in
  pipeline)
    run=$runs/quad
    if [[ -f $run/config.json ]]; then
      # A resumed run keeps its recorded config: say so rather than drop the arguments unseen.
      (($#)) && echo "resuming $run with its recorded config; not applied: $*" | tee "$out/quad.log"
      command=(python3 -m distill_jax.train --resume "$run" --quiet)
    else
      command=(python3 -m distill_jax.train --preset gpu --env quadruped_rough --out "$run" --quiet "$@")
    fi
    logged "$out/quad.log" "${STAGE_SECONDS:-480}" "${command[@]}"
    # Checkpoints hold the 4096-env state, far over what comes back from $OUT; the rest is small.
    [[ -d $run ]] && tar czf "$out/quad.tgz" --exclude=checkpoints -C "$runs" quad
    ;;
  bench)
    # The 8192-env row took 195 s on an H200 (2026-11-30), mostly compiling four programs.
    stage_timeout "${STAGE_SECONDS:-240}" python3 experiments/bench.py --num-envs 8192 --seeds '' --calls 3 \
      --time-budget 60 --out "$out/bench_gpu" "$@" 2>&1 | tee "$out/bench.log"
    status=${PIPESTATUS[0]}
    ;;
  quadruped)
    quadruped_sizes=(--task quadruped_rough --unroll-length 24 --num-minibatches 4 --num-epochs 5
                     --policy-hidden 512,256,128 --value-hidden 512,256,128)
    stage_timeout "${STAGE_SECONDS:-280}" python3 experiments/bench.py "${quadruped_sizes[@]}" --no-brax \
      --num-envs 1024,4096,8192 --seeds '' --time-budget 180 --out "$out/bench_quadruped_gpu" "$@" 2>&1 \
      | tee "$out/quadruped_profile.log"
    status=${PIPESTATUS[0]}
    # Where the time goes: the physics step's parts (version 2's height-field feet, version 3's
    # tangent planes, a flat plane), then the update's (collection, SGD epochs, a profile of the whole).
    # PROBE_ENVS and PROBE_SECONDS, and the arguments (passed on to update_parts.py, whose options
    # are bench.py's), are for the test that runs this stage at toy sizes on a CPU.
    stage_timeout "${PROBE_SECONDS:-120}" env PYTHONPATH="$probe_path" python3 experiments/probes/quadruped_physics_parts.py \
      "${PROBE_ENVS:-4096}" --cases v2,v3,plane 2>&1 | tee -a "$out/quadruped_profile.log"
    statuses=("$status" "${PIPESTATUS[0]}")
    stage_timeout "${PROBE_SECONDS:-120}" env PYTHONPATH="$probe_path" python3 experiments/probes/update_parts.py "${PROBE_ENVS:-4096}" \
      "${quadruped_sizes[@]}" --profile "$@" 2>&1 | tee -a "$out/quadruped_profile.log"
    statuses+=("${PIPESTATUS[0]}")
    # The stage's status is its first command's that failed: a probe cut off or broken is a failed stage.
    status=0
    for part_status in "${statuses[@]}"; do ((status)) || status=$part_status; done
    ;;
  parts)
    # Where a training update's time goes (the rollout, collection, SGD epochs, one gradient step,
    # the whole update and a jax.profiler summary of it, the wrapped env alone), then two implementations
    # of the SGD epochs that launch fewer kernels: the profile behind a teacher / raw-physics ratio
    # and candidate fixes, in one call. Arguments: the number of envs, then bench.py's options
    # (its task and PPO sizes by default).
    stage_timeout "${STAGE_SECONDS:-200}" env PYTHONPATH="$probe_path" python3 experiments/probes/update_parts.py "$@" --profile --sgd-variants \
      2>&1 | tee "$out/parts.log"
    status=${PIPESTATUS[0]}
    ;;
  terrain)
    # Issue #44's table: the terrain quadruped's gpu pipeline with the blind student, then a perceptive
    # student (CNN scan encoder) distilled from the same teacher and scored on the same held-out map,
    # then the per-terrain-type comparison. Each step is skipped when an earlier call finished it, and a
    # teacher cut off by the timeout resumes, so a second call on a warm machine picks up where the first
    # stopped. Arguments go to the blind run's command (the tests pass a small preset).
    blind=$runs/terrain_blind
    perceptive=$runs/terrain_perceptive
    blind_fields='["joint_pos","joint_vel","base_ang_vel","projected_gravity","command","last_action","history"]'
    log=$out/terrain.log
    started=$SECONDS
    left() { echo $(( ${STAGE_SECONDS:-540} - (SECONDS - started) )); }
    status=0
    if [[ ! -f $blind/eval.json ]]; then
      if [[ -f $blind/config.json ]]; then
        (($#)) && echo "resuming $blind with its recorded config; not applied: $*" | tee -a "$log"
        logged "$log" "$(left)" python3 -m distill_jax.train --resume "$blind" --quiet
      else
        # Blind: proprioception and its history only. The preset's student reads every deployable
        # field, height_scan among them (flattened), which is not blind.
        logged "$log" "$(left)" python3 -m distill_jax.train --preset gpu --env quadruped_terrain --out "$blind" \
          --quiet --set "distill.student.fields=$blind_fields" "$@"
      fi
    fi
    if ((status == 0)) && [[ ! -f $perceptive/eval.json ]]; then
      if [[ ! -f $runs/terrain_perceptive.distilled ]]; then
        rm -rf "$perceptive"  # a distillation cut off before its end starts again: it is the short part
        logged "$log" "$(left)" python3 -m distill_jax.train --phase distill --from "$blind" --out "$perceptive" \
          --quiet --set distill.student.scan_encoder=cnn --set distill.student.fields=null
        ((status == 0)) && touch "$runs/terrain_perceptive.distilled"
      fi
      ((status == 0)) && logged "$log" "$(left)" python3 -m distill_jax.train --phase eval --from "$perceptive" --quiet
    fi
    if ((status == 0)); then
      python3 experiments/terrain_report.py "$blind" "$perceptive" --md "$out/terrain_blind_vs_perceptive.md" \
        --json "$out/terrain_blind_vs_perceptive.json" 2>&1 | tee -a "$log"
      status=${PIPESTATUS[0]}
    fi
    for run in "$blind" "$perceptive"; do
      [[ -d $run ]] && tar czf "$out/$(basename "$run").tgz" --exclude=checkpoints -C "$runs" "$(basename "$run")"
    done
    ;;
  *)
    echo "unknown stage '$stage': expected pipeline, bench, quadruped, parts or terrain" >&2
    exit 2
    ;;
esac
echo "stage $stage exited with status $status; files in $out:"
ls -l "$out"
exit "$status"

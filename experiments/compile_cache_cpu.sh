#!/usr/bin/env bash
# What the CLI's persistent XLA cache (distill_jax/run/compile_cache.py) saves: the smoke preset with
# --xla-cache off, cold and warm (twice each way), and a re-evaluation (--phase eval --from) off and
# warm; then checks that the cached runs' results equal the uncached run's.
# Usage: bash experiments/compile_cache_cpu.sh [WORKDIR]   (default /tmp/compile_cache_cpu; ~8 min on 2 CPU cores)
# Results: experiments/results/compile_cache_cpu.md.
set -euo pipefail
work=${1:-/tmp/compile_cache_cpu}
mkdir -p "$work" && cd "$work" && rm -rf cache runs && mkdir runs
unset JAX_COMPILATION_CACHE_DIR DISTILL_JAX_XLA_CACHE
one() {  # label, CLI arguments...
  local label=$1; shift
  /usr/bin/time -f "%e" -o time.txt python -m distill_jax.train "$@" --quiet > "runs/$label.log" 2>&1
  echo "$label $(cat time.txt) s | $(grep 'wall clock' "runs/$label.log")"
}
one off1 --preset smoke --out runs/off1 --xla-cache off
one cold --preset smoke --out runs/cold --xla-cache "$work/cache"
one warm1 --preset smoke --out runs/warm1 --xla-cache "$work/cache"
one off2 --preset smoke --out runs/off2 --xla-cache off
one warm2 --preset smoke --out runs/warm2 --xla-cache "$work/cache"
one eval_off --phase eval --from runs/off1 --xla-cache off
one eval_warm --phase eval --from runs/off2 --xla-cache "$work/cache"
echo "cache: $(du -sh cache | cut -f1), $(find cache -type f | wc -l) files"
python - <<'PY'
import json
def rows(run):  # metrics.jsonl without its timing columns
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "env_steps_per_second")}
            for line in open(f"runs/{run}/metrics.jsonl")]
evals = [json.load(open(f"runs/{run}/eval.json")) for run in ("off1", "cold", "warm1", "warm2")]
print("eval.json equal (off1, cold, warm1, warm2):", all(e == evals[0] for e in evals))
print("metrics.jsonl equal apart from timing:", rows("off1") == rows("cold") == rows("warm1") == rows("warm2"))
PY

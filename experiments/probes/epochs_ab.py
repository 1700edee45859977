"""Teacher env-steps/s at given B/epochs/minibatches (args like 1024/4/8), bench.py sizes; used for bench_cpu.md."""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import bench
args = bench.parse_args(["--num-envs", "1024"])
env = bench.build_env("brax_inverted_pendulum", plain=True)
import dataclasses
for B, epochs, mb in [(int(a), int(b), int(c)) for a, b, c in (x.split("/") for x in sys.argv[1:])]:
    cfg = bench.ppo_config(args, B)
    cfg = dataclasses.replace(cfg, num_epochs=epochs, num_minibatches=mb)
    rows = []
    from distill_jax.ppo.teacher import train_teacher
    t0 = time.perf_counter()
    train_teacher(env, cfg, seed=0, updates_per_call=4, log_fn=rows.append)
    print(B, epochs, mb, [round(r["env_steps_per_second"]) for r in rows if "seconds" in r], round(time.perf_counter() - t0), flush=True)

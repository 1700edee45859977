"""``python -m distill_jax.train --local-processes N [--devices-per-process M] ...``: N processes here.

For development and CI, the multi-process path on one machine: the command is started N times,
each a process of one ``jax.distributed`` run (``--coordinator 127.0.0.1:PORT --num-processes N
--process-id I`` on a free local port), on the CPU (``JAX_PLATFORMS=cpu``) with M forced CPU
devices each (``XLA_FLAGS=--xla_force_host_platform_device_count=M``); their collectives go
through gloo, JAX's CPU default. ``--local-processes 1`` is one process with M devices.

Process 0's output is streamed (less gloo's "[Gloo] Rank ... is connected" lines, which
``--verbose`` keeps); each other process's goes to ``RUN/logs/process-I.log``, and its last lines
are shown when it fails. When one process fails the others are stopped (they would wait for it
in the next collective). Ctrl-C, or a SIGTERM to this launcher, is passed on to every process
once; a process that does not end within :data:`GRACE_S` is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

from distill_jax.run import cli, distributed
from distill_jax.run.cli import EXIT_INTERRUPTED, EXIT_REFUSED

LAUNCH_OPTIONS = ("--local-processes", "--devices-per-process")
DISTRIBUTED_OPTIONS = ("--coordinator", "--num-processes", "--process-id")
GRACE_S = 20.0  # after Ctrl-C, a process blocked in a collective with a stopped peer never returns
STOP_AFTER_S = 5.0  # after one process failed, before the others are stopped
LOG_DIR = "logs"
TAIL_LINES = 20
NOISE_PREFIXES = ("[Gloo] ",)


class LaunchError(Exception):
    """The launch is refused before any process starts: one line, exit status 2."""


def strip_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--name V`` and ``--name=V``)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in names:
            skip = True
            continue
        if item.split("=", 1)[0] in names and "=" in item:
            continue
        out.append(item)
    return out


def free_port() -> int:
    """A TCP port that nothing listens on now (the coordinator binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(base: dict[str, str], devices: int, relaunch: str) -> dict[str, str]:
    """The environment of one process: CPU only, ``devices`` forced CPU devices, unbuffered output."""
    flags = [f for f in base.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env = dict(base, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]))
    env[distributed.LAUNCH_ENV] = relaunch
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        env.pop(name, None)  # the flags below say it
    return env


def _run_dir(args: argparse.Namespace, plan: Any) -> pathlib.Path | None:
    """The run directory the command writes in: new (``--out``), resumed, or the ``--from`` run."""
    if args.resume is not None:
        return args.resume
    if plan.out is not None:
        return plan.out
    for candidate in (args.source, *args.source.resolve().parents):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _recorded(run_dir: pathlib.Path) -> tuple[Any, int | None, str | None]:
    """The config a ``--resume`` will run, the process count and launch flags that created the run
    (``None`` where not recorded or unreadable: the command itself then says why)."""
    from distill_jax.config import ConfigError, RunConfig, replace_fields

    try:
        data = json.loads((run_dir / "config.json").read_text())
        created = data.pop("provenance", None) or {}
        config = replace_fields(RunConfig(), data)
    except (OSError, ValueError, ConfigError, AttributeError):
        return None, None, None
    processes = (created.get("devices") or {}).get("processes")
    return config, (int(processes) if processes is not None else None), created.get("launch")


def check_launch(args: argparse.Namespace) -> tuple[int, int]:
    """``(processes, devices per process)``; raises :class:`LaunchError` on a bad request."""
    n = args.local_processes
    m = args.devices_per_process if args.devices_per_process is not None else 1
    if n is None:
        raise LaunchError("--devices-per-process is a setting of --local-processes N (processes on this machine)")
    if n < 1:
        raise LaunchError(f"--local-processes {n}: must be at least 1")
    if m < 1:
        raise LaunchError(f"--devices-per-process {m}: must be at least 1")
    given = [flag for flag, value in (("--coordinator", args.coordinator), ("--num-processes", args.num_processes),
                                      ("--process-id", args.process_id), ("--distributed", args.distributed or None))
             if value is not None]
    if given:
        raise LaunchError(f"--local-processes starts the processes and joins them itself; drop {given}")
    return n, m


def launch_local(args: argparse.Namespace, argv: list[str]) -> int:
    """Starts ``--local-processes`` processes of this command and waits for them; the exit status
    is process 0's, or that of the first process that failed."""
    from distill_jax.config import ConfigError

    try:
        n, m = check_launch(args)
        plan = cli.plan_command(args)
        run_dir = _run_dir(args, plan)
        config, processes, launched = plan.config, None, None
        if args.resume is not None:
            config, processes, launched = _recorded(args.resume)
        if processes is not None and processes != n:  # refused before any process starts
            how = f"with {launched}" if launched else f"with --local-processes {processes}"
            raise LaunchError(f"{args.resume}: trained by {processes} process{'es' if processes > 1 else ''}, "
                              f"resumed by {n} (--local-processes {n}); resume it {how}")
        problem = config is not None and distributed.indivisible(config, n * m, n)
        if problem:
            raise LaunchError(problem)
    except (LaunchError, cli.UsageError, ConfigError, distributed.DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    child = strip_options(argv, LAUNCH_OPTIONS)
    if plan.out is not None and args.out is None:  # every process must name the same new directory
        child += ["--out", str(plan.out)]
    relaunch = f"--local-processes {n} --devices-per-process {m}"
    return Launch(n, m, child, run_dir, relaunch, verbose=args.verbose).run()


class Launch:
    """The processes of one local launch and their outputs."""

    def __init__(self, n: int, m: int, argv: list[str], run_dir: pathlib.Path | None, relaunch: str,
                 verbose: bool = False):
        self.n, self.m, self.argv, self.run_dir, self.relaunch, self.verbose = n, m, argv, run_dir, relaunch, verbose
        self.logs = pathlib.Path(tempfile.mkdtemp(prefix="distill_jax-launch-"))
        self.procs: list[subprocess.Popen] = []
        self._files: list[IO[str]] = []
        self._interrupted = 0.0

    def command(self, index: int, port: int) -> list[str]:
        joined = [] if self.n == 1 else ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(self.n),
                                         "--process-id", str(index)]
        return [sys.executable, "-m", "distill_jax.train", *self.argv, *joined]

    def log_path(self, index: int) -> pathlib.Path:
        return self.logs / f"process-{index}.log"

    def start(self) -> None:
        port = free_port()
        env = child_env(dict(os.environ), self.m, self.relaunch)
        for index in range(self.n):
            if index == 0:
                out, err = subprocess.PIPE, None  # stdout filtered (gloo's lines), stderr as it comes
            else:
                handle = self.log_path(index).open("w")
                self._files.append(handle)
                out, err = handle, subprocess.STDOUT
            # A session of its own: a terminal's Ctrl-C reaches the launcher only, which passes it on once.
            self.procs.append(subprocess.Popen(self.command(index, port), env=env, stdout=out, stderr=err,
                                               text=True, start_new_session=True, preexec_fn=_die_with_parent))
        threading.Thread(target=self._stream, args=(self.procs[0].stdout,), daemon=True).start()

    def _stream(self, pipe: IO[str]) -> None:
        for line in pipe:
            if self.verbose or not line.startswith(NOISE_PREFIXES):
                sys.stdout.write(line)
                sys.stdout.flush()

    def signal_all(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signum)
                except ProcessLookupError:
                    pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self._interrupted:
            self._interrupted = time.monotonic()
            self.signal_all(signal.SIGINT)

    def run(self) -> int:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            failed = self._wait()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self.signal_all(signal.SIGKILL)
            for handle in self._files:
                handle.close()
        kept = self._keep_logs()
        first = self.procs[0].returncode
        if self._interrupted:
            if first != EXIT_INTERRUPTED:  # process 0 did not get to say how to continue
                print(f"interrupted; the checkpoints written so far are kept. Continue with: "
                      f"python -m distill_jax.train --resume {shlex.quote(str(self.run_dir))} {self.relaunch}",
                      file=sys.stderr)
            return EXIT_INTERRUPTED
        if failed is None:
            return 0
        if failed == 0 or first > 0:  # process 0 ended by itself and said why on its stderr
            return first if first > 0 else 1
        code = self.procs[failed].returncode
        where = kept.get(failed, self.log_path(failed))
        print(f"error: process {failed} of {self.n} failed (exit status {code}); the last lines of {where}:",
              file=sys.stderr)
        print(_tail(where), file=sys.stderr)
        return code if code > 0 else 1

    def _wait(self) -> int | None:
        """Waits for every process; the index of the first that failed, ``None`` if none did.

        After a failure, process 0 gets :data:`STOP_AFTER_S` to end by itself (a refusal that every
        process meets is said once, by process 0); then the rest are stopped (they would wait for
        the failed one in the next collective), and killed if they do not end.
        """
        failed, since = None, 0.0
        while any(p.poll() is None for p in self.procs):
            now = time.monotonic()
            if self._interrupted:  # every process was told; each ends by itself or is killed
                if now - self._interrupted > GRACE_S:
                    self.signal_all(signal.SIGKILL)
            elif failed is None:
                failed = next((i for i, p in enumerate(self.procs) if p.poll() not in (None, 0)), None)
                since = now
            elif now - since > 2 * STOP_AFTER_S:
                self.signal_all(signal.SIGKILL)
            elif now - since > STOP_AFTER_S or failed == 0:
                self.signal_all(signal.SIGTERM)
            time.sleep(0.1)
        if failed is None:
            failed = next((i for i, p in enumerate(self.procs) if p.returncode != 0), None)
        return failed

    def _keep_logs(self) -> dict[int, pathlib.Path]:
        """Moves the other processes' logs into ``RUN/logs/`` where the run directory exists."""
        kept: dict[int, pathlib.Path] = {}
        if self.run_dir is None or not pathlib.Path(self.run_dir).is_dir():
            return kept  # left in the temporary directory, named on failure
        target = pathlib.Path(self.run_dir) / LOG_DIR
        try:
            target.mkdir(exist_ok=True)
            for index in range(1, self.n):
                path = target / self.log_path(index).name
                shutil.move(self.log_path(index), path)
                kept[index] = path
            shutil.rmtree(self.logs, ignore_errors=True)
        except OSError:
            pass
        return kept


def _tail(path: pathlib.Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text().splitlines()
    except OSError as e:
        return f"  ({e.strerror or e})"
    kept = [line for line in text if not line.startswith(NOISE_PREFIXES) and not line.startswith("    @ ")]
    return "\n".join(f"  {line}" for line in kept[-lines:])


def _die_with_parent() -> None:
    """Linux: the process gets SIGKILL when the launcher dies, even by SIGKILL (no orphans left
    running the collective alone)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

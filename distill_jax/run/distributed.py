"""Several processes on JAX's own distributed runtime: which ones, joining them, and who writes.

A command runs in several processes when it is told how to reach the others, first found wins:

1. ``--coordinator HOST:PORT --num-processes N --process-id I``;
2. the environment: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``
   (a flag given wins over its variable);
3. ``--distributed``, or a SLURM or Open MPI job of more than one task: JAX's own cluster
   detection (SLURM, Open MPI, Kubernetes, Cloud TPU) fills in whatever is unset.

:func:`join` checks first that the coordinator can be reached (process 0: that its port is free)
and fails in one line within the timeout; JAX's own client would abort the process after its
timeout with a C++ stack trace instead. Then ``jax.distributed.initialize``: ``jax.devices()``
spans every process, and each process runs the same commands on its share of the environments
(:mod:`distill_jax.multihost`). Process 0 writes the run directory's files; every process takes
part in the checkpoints (orbax writes each process's shards).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import time
from typing import Mapping

ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
# A SLURM or Open MPI job's size: several tasks start the command several times, so they must join.
JOB_SIZE_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
DEFAULT_TIMEOUT_S = 120
# Set by the local launcher (distill_jax.run.launch) in the processes it starts: the flags that
# start the same layout again, for the --resume hint.
LAUNCH_ENV = "DISTILL_JAX_LAUNCH"


class DistributedError(RuntimeError):
    """The processes cannot be joined as asked (bad address or count, coordinator unreachable)."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How this process joins the others; ``None`` fields are left to JAX's cluster detection.

    Attributes:
      coordinator: ``HOST:PORT`` of process 0's coordination service.
      num_processes: how many processes take part.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      timeout_s: how long to wait for the coordinator and for every process to join.
    """

    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    timeout_s: int = DEFAULT_TIMEOUT_S

    @property
    def explicit(self) -> bool:
        return None not in (self.coordinator, self.num_processes, self.process_id)


def requested(coordinator: str | None, num_processes: int | None, process_id: int | None, *, detect: bool = False,
              timeout_s: int = DEFAULT_TIMEOUT_S, environ: Mapping[str, str] | None = None) -> Layout | None:
    """The layout asked for by flags (``None``: not given), the environment or ``detect``;
    ``None`` when this command runs as one process.

    Raises:
      DistributedError: a malformed address or count, or an explicit layout with parts missing.
    """
    environ = os.environ if environ is None else environ
    coordinator = coordinator or environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _int_var(environ, ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _int_var(environ, ENV_PROCESS_ID)
    job = max((_int_var(environ, name) or 1 for name in JOB_SIZE_VARS), default=1)
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if timeout_s < 1:
        raise DistributedError(f"--coordinator-timeout {timeout_s}: must be at least 1 second")
    if not any(given) and not detect and job <= 1:
        return None
    if coordinator is not None:
        split_address(coordinator)
    if num_processes is not None and num_processes < 1:
        raise DistributedError(f"--num-processes {num_processes}: must be at least 1")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise DistributedError(f"--process-id {process_id}: must be in 0..{num_processes - 1} for "
                               f"--num-processes {num_processes}")
    if any(given) and not all(given) and not detect and job <= 1:
        missing = [flag for flag, ok in zip(("--coordinator", "--num-processes", "--process-id"), given) if not ok]
        raise DistributedError(f"several processes need --coordinator HOST:PORT, --num-processes N and --process-id I "
                               f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing {missing}; "
                               "--distributed lets JAX detect them on SLURM, Open MPI, Kubernetes or Cloud TPU")
    return Layout(coordinator, num_processes, process_id, timeout_s)


def _int_var(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"{name}={raw!r}: not an integer") from None


def split_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``[v6]:PORT`` too) -> ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--coordinator {address!r}: must look like HOST:PORT (e.g. 10.0.0.1:12355)")
    return host, int(port)


def check_reachable(address: str, process_id: int, timeout_s: float) -> None:
    """Process 0: its port is free to serve on. Others: a TCP connection to ``address`` opens
    within ``timeout_s`` (retried, as process 0 may still be starting).

    Raises:
      DistributedError: one line naming the address and what failed.
    """
    host, port = split_address(address)
    if process_id == 0:
        # JAX serves on every interface ([::]:PORT) whatever HOST says.
        probe = socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("::" if socket.has_ipv6 else "", port))
        except OSError as e:
            raise DistributedError(f"--coordinator {address}: process 0 cannot serve on port {port} "
                                   f"({e.strerror or e}); choose a free port") from None
        finally:
            probe.close()
        return
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
                return
        except socket.gaierror as e:
            raise DistributedError(f"--coordinator {address}: unknown host {host!r} ({e.strerror})") from None
        except OSError as e:
            last = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            raise DistributedError(f"--coordinator {address}: not reachable from process {process_id} within "
                                   f"{timeout_s:g} s ({last}); is process 0 running, and is the address right?")
        time.sleep(0.25)


def join(layout: Layout) -> None:
    """``jax.distributed.initialize`` for ``layout``, after checking the coordinator can be reached.

    Must run before anything uses a JAX device (MJX's import does).

    Raises:
      DistributedError: unreachable coordinator, port in use, nothing detected, JAX already started.
    """
    import jax
    from jax._src import xla_bridge

    if layout.explicit:
        check_reachable(layout.coordinator, layout.process_id, layout.timeout_s)
    if xla_bridge.backends_are_initialized():
        raise DistributedError("jax.distributed must be initialised before JAX uses a device; "
                               "call distill_jax.train.main before anything else that uses JAX")
    try:
        jax.distributed.initialize(layout.coordinator, layout.num_processes, layout.process_id,
                                   initialization_timeout=layout.timeout_s)
    except ValueError as e:  # JAX's cluster detection found nothing to fill the gaps with
        raise DistributedError(f"cannot tell how to join the other processes ({e}); give --coordinator HOST:PORT "
                               "--num-processes N --process-id I") from None


def process_count() -> int:
    """Processes in this run (1 before or without :func:`join`)."""
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """Whether this process writes the run directory's files (process 0; always with one process)."""
    import jax

    return jax.process_index() == 0


_keys = itertools.count()  # every process passes the same barriers and shares in the same order


def _client():
    from jax._src import distributed as state  # the client JAX joined with; orbax waits on it the same way

    return state.global_state.client


def barrier(name: str, timeout_s: float = 24 * 3600) -> None:
    """Waits until every process reaches ``barrier(name)`` (no-op with one process).

    Through the coordination service, not a device collective, so a long wait (the others while
    process 0 evaluates and exports) is no more than a wait.
    """
    import jax

    if jax.process_count() == 1:
        return
    _client().wait_at_barrier(f"distill_jax/{next(_keys)}/{name}", int(timeout_s * 1000))


def share(name: str, text: str | None = None, timeout_s: float = 24 * 3600) -> str | None:
    """Process 0's ``text`` in every process (the others pass nothing and wait for it); ``text``
    itself with one process. How process 0's decisions (the run directory it opened, the phases
    left to run, or that it failed) reach the others without each deciding again from files that
    process 0 may be writing."""
    import jax

    if jax.process_count() == 1:
        return text
    key = f"distill_jax/{next(_keys)}/{name}"
    if jax.process_index() == 0:
        _client().key_value_set(key, text if text is not None else "")
        return text
    return _client().blocking_key_value_get(key, int(timeout_s * 1000))


def relaunch_flags(environ: Mapping[str, str] | None = None) -> str:
    """The flags that start this layout again (``--local-processes N ...`` from the local launcher),
    for the ``--resume`` hint; ``""`` otherwise."""
    environ = os.environ if environ is None else environ
    return environ.get(LAUNCH_ENV, "")


def indivisible(config, devices: int, processes: int) -> str | None:
    """Why ``config``'s environments cannot be split evenly over ``devices`` devices of ``processes``
    processes (``None``: they can). Each phase's ``num_envs`` is sharded over every device."""
    for field, num_envs in (("ppo.num_envs", config.ppo.num_envs), ("distill.num_envs", config.distill.num_envs)):
        if num_envs % devices:
            where = f"the {devices} devices of {processes} processes" if processes > 1 else f"the {devices} devices"
            return (f"{field}={num_envs}: must be divisible by {where} it is sharded over "
                    f"(e.g. --set {field}={max(devices, num_envs // devices * devices)})")
    return None

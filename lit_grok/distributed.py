"""A sweep's groups on Ray: several at once on this machine (``--workers N``) or on a Ray cluster
(``--address``). The grid, the grouping and the records stay in ``lit_grok.sweep``; this module only
schedules its ``run_group`` calls.

Ray starts on demand (a local instance, no dashboard, token authentication on) and stops when the sweep
ends, Ctrl-C included. Each
worker is a Ray task asking for its share of the CPUs (``cores // workers``), and runs torch with that many
threads, so the machine is never oversubscribed. Groups go longest first. A worker that dies (its process
killed, its node lost) is retried by Ray, and its group resumes from its checkpoint; a run that fails
with an error comes back as a failed record. Each group's records come back to the driver, which alone
writes ``result.json`` and ``summary.csv``.

GPUs are not scheduled yet: this was built and tested on CPUs only, so a cluster that offers GPUs is
refused in one line rather than silently trained on its CPUs.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from typing import Any, Callable, Iterator, Optional

RETRIES = 3  # times Ray restarts a group whose worker died


def _ray(local: bool = False) -> Any:
    """Ray, imported; for a ``local`` instance, with token authentication on (``secure_local_instance``)."""
    if local:
        secure_local_instance()
    try:
        import ray
    except ImportError:
        raise ValueError('--workers above 1 and --address need Ray: pip install -e ".[ray]"') from None
    return ray


def secure_local_instance() -> bool:
    """Makes the local Ray instance this process starts accept only clients that hold a fresh random token.

    A local instance listens on every interface of the machine and, with Ray's default (authentication off),
    runs code for any client that reaches it. Ray 2.52+ checks a shared token on every RPC when
    ``RAY_AUTH_MODE=token``; Ray reads the mode and token once, when it is imported, so they are set here
    before the import: one token per process (per sweep), never written to disk. Returns whether it was
    done: not when Ray was already imported (by the caller's own code) or the user chose a mode."""
    if "ray" in sys.modules or "RAY_AUTH_MODE" in os.environ:
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return True


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster address (``host:port``, ``ray://host:port`` or ``auto``) that does not answer is refused in
    one line within ``timeout`` seconds, instead of Ray's connection error after its own retries."""
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address {address!r} is not host:port (``ray start --head`` prints the address).")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ValueError(f"cannot reach a Ray cluster at {address} ({error.strerror or error}); start one with "
                         f"`ray start --head` there, or leave --address out to use this machine.") from None


def _run_with_threads(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    """A Ray worker's body: torch limited to the worker's share of the cores, then the group."""
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


def run_on_ray(fn: Callable[..., Any], calls: list[tuple], costs: list[float], workers: int,
               address: Optional[str], lost: Callable[[tuple, str], Any]) -> Iterator[Any]:
    """Yields ``fn(*call)`` for every call, in the order they finish, computed by ``workers`` Ray tasks at
    a time (the costliest calls first); ``address`` joins an existing Ray cluster instead of starting one.
    A call whose worker died more than ``RETRIES`` times yields ``lost(call, message)`` instead."""
    ray = _ray(local=address is None)
    started = not ray.is_initialized()
    if started:
        if address is not None:
            check_reachable(address)
        ray.init(address=address, include_dashboard=False, logging_level="ERROR")
    try:
        resources = ray.cluster_resources()
        if resources.get("GPU", 0) > 0:
            raise ValueError("this Ray cluster has GPUs, which lit_grok's Ray workers do not schedule yet (only "
                             "CPUs were tested); run the sweep without --workers/--address on a GPU machine.")
        cpus = max(1, int(resources.get("CPU", 1)) // workers)
        task = ray.remote(num_cpus=cpus, max_retries=RETRIES, retry_exceptions=False)(_run_with_threads)
        order = sorted(range(len(calls)), key=lambda i: -costs[i])
        waiting = [calls[i] for i in order]
        submitted: dict[Any, tuple] = {}
        while waiting or submitted:
            while waiting and len(submitted) < workers:
                call = waiting.pop(0)
                submitted[task.remote(cpus, fn, call)] = call
            [done], _ = ray.wait(list(submitted), num_returns=1)
            call = submitted.pop(done)
            try:
                result = ray.get(done)
            except ray.exceptions.RayError as error:  # the worker died RETRIES + 1 times
                result = lost(call, f"{type(error).__name__}: {str(error).splitlines()[0]}")
            yield result
    finally:
        if started:
            ray.shutdown()

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

A group whose config trains on GPUs (``gpu_demand``) asks Ray for them: one GPU, ``1 / runs_per_gpu`` of
one when several small runs share a GPU, or all N of a run on ``devices: N`` (DDP) at once on one node.
Ray makes only those GPUs visible to the group (``CUDA_VISIBLE_DEVICES``), so ``devices`` counts them;
CPU groups ask for none, so CPU and GPU groups share a cluster.
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


def device_count(devices: Any) -> Optional[int]:
    """How many devices a Trainer's ``devices`` names: an int, a list of indices or ``"0,1"``; None for
    ``"auto"`` and -1 (every visible one)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return None
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text.isdigit():
        return int(text)
    raise ValueError(f"trainer.devices {devices!r} is not a count, a list of indices or 'auto'.")


def gpu_demand(trainer: dict[str, Any], runs_per_gpu: int = 1, cluster_has_gpus: bool = True) -> float:
    """The GPUs a group asks Ray for, from its config's ``trainer``: none on CPUs (``accelerator: cpu``, or
    ``auto`` on a cluster without GPUs); N for a run on N devices (DDP: the N at once, on one node); else
    ``1 / runs_per_gpu`` of one, so that that many runs share a GPU (``devices: auto`` or -1 is one GPU
    here, as the group sees only its own)."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator == "cpu" or (accelerator == "auto" and not cluster_has_gpus):
        return 0.0
    if accelerator not in ("auto", "gpu", "cuda"):
        raise ValueError(f"trainer.accelerator {accelerator!r} cannot be scheduled on Ray: use cpu, gpu, cuda or auto.")
    if (trainer.get("num_nodes") or 1) > 1:
        raise ValueError("a run on several nodes (trainer.num_nodes > 1) cannot run inside a sweep's Ray worker: "
                         "launch it alone with `python -m lit_grok fit` (docs/devices.md).")
    count = device_count(trainer.get("devices", "auto"))
    return 1.0 / runs_per_gpu if count in (None, 1) else float(count)


def _check_feasible(ray: Any, demands: list[float]) -> None:
    """A group that asks for more GPUs than any node has would wait forever: refused in one line instead."""
    wanted = max(demands, default=0.0)
    if wanted == 0:
        return
    per_node = [node["Resources"].get("GPU", 0) for node in ray.nodes() if node.get("Alive")]
    if not any(per_node):
        raise ValueError("the runs' configs train on GPUs (trainer.accelerator gpu or cuda) but this Ray cluster "
                         "has none: set trainer.accelerator to cpu or auto, or run on a cluster with GPUs.")
    if wanted > max(per_node):
        raise ValueError(f"a run asks for {wanted:g} GPUs (trainer.devices) but no node of this Ray cluster has more "
                         f"than {max(per_node):g}: a run's GPUs must be on one node.")


def _run_in_worker(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    """A Ray worker's body: torch limited to the worker's share of the cores, then the group. A fresh worker
    has not imported torch: it reads OMP_NUM_THREADS when the group imports it (nothing here imports it)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return fn(*args)


def _run_on_gpus(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    """``_run_in_worker`` as a Ray function of its own, declared with GPUs: its worker exits after each group
    (Ray's rule for GPU functions; ``max_calls`` cannot be set per call). CUDA reads CUDA_VISIBLE_DEVICES
    once per process, so a reused worker would stay on the first GPU it was given."""
    return _run_in_worker(threads, fn, args)


def run_on_ray(fn: Callable[..., Any], calls: list[tuple], costs: list[float], workers: int,
               address: Optional[str], lost: Callable[[tuple, str], Any],
               trainers: Optional[list[dict[str, Any]]] = None, runs_per_gpu: int = 1) -> Iterator[Any]:
    """Yields ``fn(*call)`` for every call, in the order they finish, computed by ``workers`` Ray tasks at
    a time (the costliest calls first); ``address`` joins an existing Ray cluster instead of starting one.
    Each call asks for the GPUs its ``trainers`` entry (the run's ``trainer`` config) trains on
    (``gpu_demand``). A call whose worker died more than ``RETRIES`` times yields ``lost(call, message)``."""
    ray = _ray(local=address is None)
    if address is not None:
        check_reachable(address)
    started = not ray.is_initialized()
    if started:
        # "local": a new instance of its own, even where another one runs (ray.init() would join that one)
        ray.init(address=address or "local", include_dashboard=False, logging_level="ERROR")
    try:
        resources = ray.cluster_resources()
        has_gpus = resources.get("GPU", 0) > 0
        demands = [gpu_demand(t, runs_per_gpu, has_gpus) for t in trainers] if trainers else [0.0] * len(calls)
        _check_feasible(ray, demands)
        cpus = max(1, int(resources.get("CPU", 1)) // workers)
        options = {"num_cpus": cpus, "max_retries": RETRIES, "retry_exceptions": False}
        on_cpus = ray.remote(**options)(_run_in_worker)  # its workers are reused across groups
        on_gpus = ray.remote(num_gpus=1, **options)(_run_on_gpus)
        order = sorted(range(len(calls)), key=lambda i: -costs[i])
        submitted: dict[Any, tuple] = {}
        while order or submitted:
            while order and len(submitted) < workers:
                i = order.pop(0)
                task = on_gpus.options(num_gpus=demands[i]) if demands[i] else on_cpus
                submitted[task.remote(cpus, fn, calls[i])] = calls[i]
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

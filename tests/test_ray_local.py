"""A sweep's own local Ray instance (--workers without --address): Ctrl-C stops it and every process it
started, and no client without the sweep's token gets in. Its own processes only, so it runs beside the
other Ray tests (which share a cluster, tests/test_distributed.py) on another pytest worker."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import default_sigint
from tests.test_distributed import BASE, TINY

pytest.importorskip("ray")


def _descendants(pid: int) -> dict[int, str]:
    """The processes started by ``pid`` and by their children (a sweep's Ray: GCS, raylet, workers)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for line in subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout.splitlines():
        child, parent, args = (line.split(None, 2) + [""])[:3]
        children.setdefault(int(parent), []).append((int(child), args))
    found, todo = {}, [pid]
    while todo:
        for child, args in children.get(todo.pop(), []):
            found[child] = args
            todo.append(child)
    return found


def _alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def test_ctrl_c_stops_the_workers_and_leaves_no_ray_process(tmp_path):
    overrides = {**TINY, "trainer.max_steps": 100000}
    command = [sys.executable, "-m", "lit_grok", "sweep", "--base", BASE, "--name", "ctrl-c", "--save_dir",
               str(tmp_path), "--max_members", "1", "--workers", "2",
               "--grids", '[{"data.init_args.train_size": [40, 60]}]', "--overrides", str(overrides).replace("'", '"')]
    # as from a shell: without the RAY_* variables that Ray put in this process's environment for its own workers
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean,
                               preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list((tmp_path / "ctrl-c").glob("*/version_0/events.*"))) < 2:
            time.sleep(0.1)
        assert len(list((tmp_path / "ctrl-c").glob("*/version_0/events.*"))) == 2, "both workers should have started"
        started = _descendants(process.pid)  # the sweep's own Ray instance: its GCS, raylet and workers
        gcs = next((arg for args in started.values() for arg in args.split() if arg.startswith("--gcs-address=")), None)
        assert gcs, started
        assert sum("_run_in_worker" in args for args in started.values()) == 2
        # no one else gets in: a client of this machine without the sweep's token is refused (ShadowRay); it
        # tries once (Ray's own default is to retry for 20 s)
        outsider = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r, logging_level='ERROR')"
                                   % gcs.split("=", 1)[1]], capture_output=True, text=True, timeout=120,
                                  env={**clean, "RAY_gcs_server_port_wait_time_s": "1"})
        assert outsider.returncode != 0 and "uthentication" in outsider.stderr, outsider.stderr[-2000:]
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    finally:  # a failed assertion leaves no sweep training on
        if process.poll() is None:
            for pid in [*_descendants(process.pid), process.pid]:
                os.kill(pid, signal.SIGKILL)
            process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(started):
        time.sleep(0.2)
    assert not {pid: started[pid] for pid in _alive(started)}  # every process Ray started is gone
    assert not (tmp_path / "ctrl-c" / "summary.csv").exists() or not list(csv.DictReader((tmp_path / "ctrl-c" / "summary.csv").open()))

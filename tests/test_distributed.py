"""Sweeps on Ray (--workers, --address): the sequential runner's results, nothing lost on faults."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from lit_grok.sweep import main, sweep

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # the tests below share one Ray cluster: one pytest worker runs them
ROOT = Path(__file__).resolve().parents[1]
BASE = str(ROOT / "configs/cpu/efficiency_base.yaml")
TINY = {"data.init_args.modulus": 11, "trainer.max_steps": 60, "trainer.check_val_every_n_epoch": 10,
        "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32,
        "trainer.callbacks": "[]"}
COLUMNS = ("step", "val/acc", "val/loss", "train/loss", "norm/params")


def rows(summary: Path) -> dict[str, dict[str, str]]:
    return {row["run"]: row for row in csv.DictReader(summary.open())}


@pytest.fixture(scope="module")
def cluster():
    """One Ray cluster of two one-CPU nodes for the sweeps of this module, joined by this process: a sweep
    finds Ray running and uses it (a sweep's own local instance is tested in tests/test_ray_local.py).
    Starting Ray and its workers' imports cost ~15 s a sweep here; shared, they are paid once."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, logging_level="ERROR", log_to_driver=False)  # xdist talks over stdio
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def test_two_workers_give_the_sequential_results_for_ensembles_and_record_a_failed_run(tmp_path, cluster, capsys):
    # two ensembles of two (true and random labels) and a run whose config is refused, on Ray and in order
    grids = [{"data.init_args.train_size": [40, 60]},
             {"data.init_args.train_size": [80, 90], "data.init_args.random_labels": [True]},
             {"data.init_args.train_size": [50], "model.init_args.network.init_args.n_heads": [3]}]  # 16 % 3: fails
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as each of two workers: the same arithmetic
    one = rows(sweep(BASE, "one", grids, TINY, save_dir=str(tmp_path), max_members=2))
    two = rows(sweep(BASE, "two", grids, TINY, save_dir=str(tmp_path), max_members=2, workers=2))
    assert capsys.readouterr().out.count("(ensemble of 2)") == 8  # two groups of two, in each sweep
    assert sorted(one) == sorted(two) and len(one) == 5
    bad = "train_size=50-n_heads=3"
    for summary in (one, two):
        assert summary[bad]["failed"] == "True"
        assert summary[bad]["error"] == "ConfigRefused: model: d_model (16) must be divisible by n_heads (3)."
    for run in one:
        if run != bad:
            for column in COLUMNS:
                assert float(two[run][column]) == float(one[run][column])
    # a rerun skips what finished and trains the failed run again (and records it failed again)
    with pytest.raises(SystemExit, match=r"1 run\(s\) failed \(train_size=50-n_heads=3\)"):
        main(["--base", BASE, "--name", "one", "--save_dir", str(tmp_path), "--max_members", "2",
              "--grids", json.dumps(grids), "--overrides", json.dumps(TINY)])


def test_a_killed_worker_is_retried_and_its_run_resumes_from_its_checkpoint(tmp_path, cluster):
    settings = {**TINY, "trainer.max_steps": 600, "trainer.enable_checkpointing": True, "trainer.callbacks": '[{"class_path": '
                '"lit_grok.callbacks.ModelCheckpoint", "init_args": {"every_n_train_steps": 50, "save_last": true}}]'}
    grids = [{"data.init_args.train_size": [60]}]
    checkpoints = tmp_path / "killed" / "train_size=60" / "version_0" / "checkpoints"
    killed = []

    def kill_the_worker_once_it_has_saved() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (checkpoints / "last.ckpt").exists():
            time.sleep(0.02)
        for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines():
            pid, _, args = line.strip().partition(" ")
            if args.startswith("ray::_run_in_worker"):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(pid)

    killer = threading.Thread(target=kill_the_worker_once_it_has_saved)
    killer.start()
    summary = rows(sweep(BASE, "killed", grids, settings, save_dir=str(tmp_path), max_members=1, workers=2))
    killer.join()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as the worker, one of two: the same arithmetic
    alone = rows(sweep(BASE, "alone", grids, settings, save_dir=str(tmp_path), max_members=1))
    assert killed, "the worker was never seen"
    run = summary["train_size=60"]
    assert run.get("failed") in (None, "", "False") and run["step"] == "600"
    events = list((checkpoints.parent).glob("events.out.tfevents.*"))
    assert len(events) == 2  # the killed attempt's and the resumed one's, in the same run folder
    step = int(run["resumed_from_step"])  # its seconds count from there: the record says so
    assert 50 <= step < 600 and step % 50 == 0 and "resumed_from_step" not in alone["train_size=60"]
    for column in COLUMNS:  # the killed run resumed exactly
        assert float(run[column]) == float(alone["train_size=60"][column])


def test_a_sweep_runs_on_a_ray_cluster_of_two_nodes(tmp_path, cluster):
    grids = [{"data.init_args.train_size": [40, 60]}]
    summary = rows(sweep(BASE, "cluster", grids, TINY, save_dir=str(tmp_path), max_members=1, workers=2,
                         address=cluster.address))
    assert sorted(summary) == ["train_size=40", "train_size=60"]
    assert all(row["step"] == "60" for row in summary.values())
    assert all((tmp_path / "cluster" / run / "version_0" / "result.json").exists() for run in summary)
    # a config that trains on GPUs is refused in one line on this cluster, which has none
    with pytest.raises(ValueError, match="train on GPUs .* but this Ray cluster has none"):
        sweep(BASE, "gpus", grids, {**TINY, "trainer.accelerator": "gpu"}, save_dir=str(tmp_path), max_members=1,
              workers=2, address=cluster.address)


def test_without_ray_more_than_one_worker_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(SystemExit) as exit:
        main(["--base", BASE, "--name", "no-ray", "--save_dir", str(tmp_path), "--workers", "2",
              "--grids", '[{"data.init_args.train_size": [40]}]'])
    assert exit.value.code == 2 and 'need Ray: pip install -e ".[ray]"' in capsys.readouterr().err


def test_an_address_that_does_not_answer_is_one_line_with_exit_status_2(tmp_path, capsys):
    import socket

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    for address, message in ((f"127.0.0.1:{port}", f"cannot reach a Ray cluster at 127.0.0.1:{port}"),
                             ("nowhere", "--address 'nowhere' is not host:port")):
        with pytest.raises(SystemExit) as exit:
            main(["--base", BASE, "--name", "far", "--save_dir", str(tmp_path), "--address", address,
                  "--grids", '[{"data.init_args.train_size": [40]}]'])
        err = capsys.readouterr().err
        assert exit.value.code == 2 and err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1

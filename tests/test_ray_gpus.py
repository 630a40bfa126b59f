"""GPUs in Ray sweeps, tested with logical GPUs: a local Ray instance that reports two GPUs places a sweep's
groups (which GPU ids each got, how many ran at once), with a probe in place of the training."""

import json
import os
from pathlib import Path

import pytest

import lit_grok.sweep
from lit_grok.distributed import device_count, gpu_demand, run_on_ray
from lit_grok.sweep import sweep
from tests.test_distributed import BASE, TINY, rows

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray-gpus")  # one Ray instance, shared by this module's tests


@pytest.fixture(scope="module")
def logical_gpus():
    """A local Ray instance with 4 CPUs and 2 GPUs that do not exist: Ray schedules and sets
    CUDA_VISIBLE_DEVICES as it would for real ones."""
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def placing(folder: Path, wave: int):
    """``run_group`` as a probe: notes the GPUs Ray gave the group, waits until ``wave`` groups have started
    together (up to 60 s: if Ray runs fewer at once, the spans show it) and records the notes as each run's
    result, without training (the GPUs are logical; training in Ray workers is tested in test_distributed).
    A closure, so Ray pickles it by value; it imports no torch, so a GPU group's fresh worker starts in ~1 s."""

    def placed(base, overrides, group):
        import time
        import uuid

        import ray as worker_ray

        seen = {"ids": sorted(worker_ray.get_gpu_ids()), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "devices": overrides.get("trainer.devices"), "start": time.time()}
        (folder / uuid.uuid4().hex).touch()
        arrived = len(list(folder.iterdir()))
        deadline = time.time() + 60
        while len(list(folder.iterdir())) < -(-arrived // wave) * wave and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        seen["end"] = time.time()
        return [{"record": {"run": log_dir.parent.name, "step": 0, "seconds": 0, "placement": json.dumps(seen)},
                 "log_dir": str(log_dir), "together": 0} for _, _, log_dir in group]

    return placed


def placements(summary: Path) -> dict[str, dict]:
    return {run: json.loads(row["placement"]) for run, row in rows(summary).items()}


def most_at_once(spans) -> int:
    """The most groups that were running at the same moment."""
    return max(sum(s["start"] <= p["start"] < s["end"] for s in spans) for p in spans)


@pytest.fixture
def probe(monkeypatch, tmp_path):
    def use(wave: int) -> None:
        folder = tmp_path / "arrivals"
        folder.mkdir()
        monkeypatch.setattr(lit_grok.sweep, "run_group", placing(folder, wave))

    return use


def test_packed_runs_share_a_gpu_and_run_at_once(tmp_path, logical_gpus, probe):
    probe(wave=4)
    grids = [{"trainer.accelerator": ["gpu"], "data.init_args.train_size": [40, 50, 60, 70]}]
    seen = placements(sweep(BASE, "packed", grids, {**TINY, "trainer.max_steps": 200}, save_dir=str(tmp_path),
                            max_members=1, workers=4, runs_per_gpu=2))
    assert all(len(s["ids"]) == 1 and s["visible"] == str(s["ids"][0]) for s in seen.values())
    assert sorted(s["ids"][0] for s in seen.values()) == [0, 0, 1, 1]  # two runs per GPU
    assert most_at_once(list(seen.values())) == 4


def test_one_run_per_gpu_by_default(tmp_path, logical_gpus, probe):
    probe(wave=2)
    grids = [{"trainer.accelerator": ["gpu"], "data.init_args.train_size": [40, 50, 60, 70]}]
    seen = placements(sweep(BASE, "whole", grids, {**TINY, "trainer.max_steps": 200}, save_dir=str(tmp_path),
                            max_members=1, workers=4))
    assert sorted(s["ids"][0] for s in seen.values()) == [0, 0, 1, 1]
    assert most_at_once(list(seen.values())) == 2  # four workers, but two GPUs


def test_a_ddp_run_gets_all_its_gpus_at_once_beside_cpu_runs(tmp_path, logical_gpus, probe):
    probe(wave=1)
    # a mixed grid: two runs on two GPUs each (one named by index), two on the CPU
    grids = [{"trainer.accelerator": ["gpu"], "trainer.devices": [2, "0,1"], "data.init_args.train_size": [40]},
             {"trainer.accelerator": ["cpu"], "data.init_args.train_size": [50, 60]}]
    seen = placements(sweep(BASE, "mixed", grids, TINY, save_dir=str(tmp_path), max_members=1, workers=4))
    gangs = [s for s in seen.values() if s["ids"]]
    assert len(gangs) == 2 and all(s["ids"] == [0, 1] and s["visible"] == "0,1" for s in gangs)
    assert sorted(str(s["devices"]) for s in gangs) == ["2", "None"]  # "0,1" became a count, 2 was one already
    # both gangs held GPUs 0 and 1, so they ran one after the other (Ray gives a GPU to one holder at a time)
    cpu = [s for s in seen.values() if not s["ids"]]
    assert len(cpu) == 2 and all(s["visible"] is None for s in cpu)


def test_a_run_asking_for_more_gpus_than_a_node_has_is_refused_in_one_line(tmp_path, logical_gpus):
    with pytest.raises(ValueError, match="asks for 3 GPUs .* no node of this Ray cluster has more than 2"):
        sweep(BASE, "three", [{"data.init_args.train_size": [40]}],
              {**TINY, "trainer.accelerator": "gpu", "trainer.devices": 3}, save_dir=str(tmp_path), workers=2)


def test_gpu_demand_follows_the_trainer_config():
    assert gpu_demand({"accelerator": "cpu", "devices": 4}) == 0
    assert gpu_demand({"accelerator": "auto"}, cluster_has_gpus=False) == 0
    assert gpu_demand({"accelerator": "auto"}) == 1
    assert gpu_demand({"accelerator": "gpu", "devices": 1}, runs_per_gpu=4) == 0.25
    assert gpu_demand({"accelerator": "gpu", "devices": -1}, runs_per_gpu=2) == 0.5
    assert gpu_demand({"accelerator": "cuda", "devices": [0, 3]}, runs_per_gpu=4) == 2  # a gang is never packed
    assert [device_count(d) for d in (3, "2", "0,1,", [1], "auto", -1)] == [3, 2, 2, 1, None, None]
    with pytest.raises(ValueError, match="num_nodes > 1"):
        gpu_demand({"accelerator": "gpu", "num_nodes": 2})
    with pytest.raises(ValueError, match="'tpu' cannot be scheduled on Ray"):
        gpu_demand({"accelerator": "tpu"})


def test_runs_per_gpu_without_workers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="runs_per_gpu 2 .* needs --workers above 1"):
        sweep(BASE, "alone", [{"data.init_args.train_size": [40]}], TINY, save_dir=str(tmp_path), runs_per_gpu=2)


def test_ray_started_for_a_sweep_stops_with_it_and_one_already_running_is_left_alone(monkeypatch):
    class FakeRay:
        class exceptions:
            RayError = RuntimeError

        def __init__(self, running: bool) -> None:
            self.running, self.calls = running, []

        def is_initialized(self):
            return self.running

        def init(self, **kwargs):
            self.calls.append("init")

        def shutdown(self):
            self.calls.append("shutdown")

        def cluster_resources(self):
            raise KeyboardInterrupt  # as a Ctrl-C would, once Ray is up

    for running, expected in ((False, ["init", "shutdown"]), (True, [])):  # a Ctrl-C once Ray is up
        fake = FakeRay(running)
        monkeypatch.setattr("lit_grok.distributed._ray", lambda local=False: fake)
        with pytest.raises(KeyboardInterrupt):
            list(run_on_ray(print, [()], [1.0], 2, None, lost=print))
        assert fake.calls == expected

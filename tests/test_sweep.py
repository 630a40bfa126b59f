import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_grok.reports.efficiency import d_crit, estimate, norm_at
from lit_grok import sweep as sweep_module
from lit_grok.branching import save_network
from lit_grok.execution import run_group
from lit_grok.sweep import expand, run_id, sweep
from tests.conftest import default_sigint

ROOT = Path(__file__).resolve().parents[1]


def test_expand_takes_the_union_of_grid_products_without_duplicates():
    runs = expand([{"a": [1, 2], "b": ["x"]}, {"a": [2], "b": ["x", "y"]}])
    assert runs == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    with pytest.raises(ValueError, match="grid entry 'a' must be a non-empty list"):
        expand([{"a": 3}])


def test_run_id_is_readable():
    assert run_id({"data.init_args.train_size": 200, "seed_everything": 1, "x.flag": True}) == \
        "train_size=200-seed_everything=1-flag=true"


def test_sweep_runs_a_grid_writes_the_summary_and_skips_finished_runs(tmp_path, capsys):
    tiny = {"data.init_args.modulus": 11, "trainer.max_steps": 20, "trainer.check_val_every_n_epoch": 10,
            "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32}
    grids = [{"data.init_args.train_size": [40, 60], "data.init_args.random_labels": [True]},
             {"data.init_args.train_size": [80], "data.init_args.random_labels": [False]}]
    kwargs = dict(base=str(ROOT / "configs/cpu/efficiency_base.yaml"), name="tiny", grids=grids, overrides=tiny,
                  save_dir=str(tmp_path))
    summary = sweep(**kwargs)
    out = capsys.readouterr().out.splitlines()
    assert [line[:5] for line in out if line.startswith("[")] == ["[1/3]", "[2/3]", "[3/3]"]  # counts up
    assert out[-1] == (f"sweep {tmp_path / 'tiny'}: 3 runs (3 trained now, 0 skipped as done), 0 failed, 0 diverged; "
                       f"summary: {summary}")
    rows = list(csv.DictReader(summary.open()))
    assert [int(r["data.init_args.train_size"]) for r in rows] == [40, 60, 80]
    assert all(int(r["step"]) == 20 and float(r["data/train_size"]) == int(r["data.init_args.train_size"]) for r in rows)
    assert {"events/grokked_step", "converged", "circuits/gen_fraction", "norm/params"} <= set(rows[0])
    from lit_grok.reports import curves

    assert curves.report(tmp_path / "tiny")["runs"] == 3
    points = list(csv.DictReader((tmp_path / "tiny" / "curves.csv").open()))
    assert [int(p["step"]) for p in points if p["run"] == rows[0]["run"]] == [10, 20]  # each validation's step
    last = next(p for p in points if p["run"] == rows[0]["run"] and p["step"] == "20")
    assert float(last["val/acc"]) == pytest.approx(float(rows[0]["val/acc"]), abs=1e-4)
    result = tmp_path / "tiny" / "train_size=40-random_labels=true" / "version_0" / "result.json"
    stamp = result.stat().st_mtime_ns
    capsys.readouterr()
    sweep(**kwargs)
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 3 and result.stat().st_mtime_ns == stamp
    assert "3 runs (0 trained now, 3 skipped as done)" in out
    assert json.loads(result.read_text())["run"] == "train_size=40-random_labels=true"
    # a narrowed grid in the same folder counts its own runs, not every row of the folder's summary
    sweep(**{**kwargs, "grids": [{"data.init_args.train_size": [40, 50], "data.init_args.random_labels": [True]}]})
    assert "2 runs (1 trained now, 1 skipped as done), 0 failed" in capsys.readouterr().out


def test_d_crit_is_interpolated_where_the_curves_cross():
    assert norm_at([(-3.0, 10.0), (-1.0, 20.0)], -2.0) == pytest.approx(15.0)
    assert norm_at([(-3.0, 10.0), (-1.0, 20.0)], 0.0) is None
    # C_mem norm at the reference loss 10, 20, 40 at D = 100, 200, 400; C_gen 30: crossing halfway (log) 200..400
    assert d_crit({100: 10.0, 200: 20.0, 400: 40.0}, 30.0) == pytest.approx(200 * 2**0.5)
    assert d_crit({100: 10.0, 200: 20.0}, 30.0) is None


def test_estimate_on_a_constructed_summary():
    rows = []
    for kind, d, offset in [("mem", 100, 0.0), ("mem", 400, 20.0), ("gen", 800, 10.0), ("gen", 900, 10.0)]:
        for wd, loss in [(0.5, 1e-6), (2.0, 1e-2)]:
            rows.append({"kind": kind, "D": d, "wd": wd, "seed": 0, "train/loss": loss,
                         "norm/params": offset + (20.0 if wd == 0.5 else 10.0)})
    result = estimate(rows)
    assert result["gen_norm"] == pytest.approx(result["gen_norm_at_ref"][800])
    assert result["mem_norm_at_ref"][400] - result["mem_norm_at_ref"][100] == pytest.approx(20.0)
    assert result["d_crit"] == pytest.approx(200.0)  # gen sits halfway between the mem curves: sqrt(100 * 400)


def test_reports_on_constructed_summaries(tmp_path):
    from lit_grok.reports import semigrok, ungrok

    ungrok_dir, semigrok_dir = tmp_path / "u", tmp_path / "s"
    ungrok_dir.mkdir()
    semigrok_dir.mkdir()
    with open(ungrok_dir / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "data.init_args.train_size", "model.init_args.optimizer.init_args.weight_decay",
                    "model.init_args.init_optimizer", "val/acc", "train/acc", "data/train_size", "converged", "step",
                    "model.init_args.init_from"])
        w.writerows([r + ["pre.ckpt"] for r in [
            ["a", 30, 1.0, "false", 0.1, 1.0, 30, "True", 900], ["b", 300, 1.0, "false", 0.9, 1.0, 300, "True", 800],
            ["c", 30, 1.0, "false", 0.3, 1.0, 30, "True", 700], ["d", 30, 16.0, "false", 0.2, 1.0, 30, "False", 3000],
            ["e", 30, 1.0, "true", 0.5, 1.0, 30, "True", 600], ["f", 30, 4.0, "false", 0.4, 1.0, 30, "True", 500]]])
    result = ungrok.report(ungrok_dir)
    assert result["mean_final_val_acc"]["weight decay 1, init_optimizer=false"] == {30: pytest.approx(0.2),
                                                                                     300: pytest.approx(0.9)}
    assert result["mean_final_val_acc"]["weight decay 1, init_optimizer=true"] == {30: pytest.approx(0.5)}
    assert result["not_converged"] == ["d"] and result["runs"] == 6 and (ungrok_dir / "ungrok.png").exists()
    table = (ungrok_dir / "ungrok_table.md").read_text().splitlines()
    assert table[0] == ("| D' | weight decay 1, init_optimizer=false | weight decay 1, init_optimizer=true | "
                        "weight decay 4, init_optimizer=false | weight decay 16, init_optimizer=false |")  # 4 before 16
    assert table[2] == "| 30 | 0.100, 0.300 | 0.500 | 0.400 | 0.200* (3000) |"
    assert table[3] == "| 300 | 0.900 |  |  |  |"
    from lit_grok.reports import NotThisExperiment

    rows = (ungrok_dir / "summary.csv").read_text().replace(",pre.ckpt", ",")
    (ungrok_dir / "summary.csv").write_text(rows)  # runs from scratch: an efficiency or grokking sweep
    with pytest.raises(NotThisExperiment, match="is not an ungrokking sweep"):
        ungrok.report(ungrok_dir)
    with open(semigrok_dir / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "data.init_args.train_size", "val/acc", "train/acc", "plateaus", "events/plateau_level",
                    "events/plateau_length", "plateau_transient", "events/grokked_step"])
        w.writerows([["x", 200, 0.5, 1.0, 1, 0.5, 4000, "False", -1], ["y", 100, 0.05, 1.0, 0, -1, -1, "", -1]])
    runs = semigrok.report(semigrok_dir)["runs"]
    assert [r["D"] for r in runs] == [100, 200] and runs[1]["events/plateau_level"] == 0.5


def test_a_bad_sweep_file_ends_with_one_line(tmp_path, capsys):
    from lit_grok.sweep import main

    (tmp_path / "bad.yaml").write_text("base: nope.yaml\nname: x\ngrids:\n  - a: [1]\n")
    with pytest.raises(SystemExit) as exit:
        main(["--config", str(tmp_path / "bad.yaml")])
    assert exit.value.code == 2 and capsys.readouterr().err == "error: base config 'nope.yaml' does not exist.\n"


# a run of ten steps on a tiny task, without callbacks (no convergence stop)
TEN_STEPS = {"data.init_args.modulus": 11, "trainer.max_steps": 10, "trainer.check_val_every_n_epoch": 10,
             "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32,
             "trainer.callbacks": "[]"}


def test_a_report_that_fails_after_the_runs_ends_with_one_line_saying_how_to_rerun_it(tmp_path):
    from lit_grok.sweep import main

    args = ["--base", str(ROOT / "configs/cpu/efficiency_base.yaml"), "--name", "r", "--save_dir", str(tmp_path),
            "--grids", '[{"data.init_args.train_size": [40]}]', "--overrides", json.dumps(TEN_STEPS),
            "--report", "lit_grok.reports.efficiency"]  # needs a random_labels column, which this grid lacks
    with pytest.raises(SystemExit, match=r"^error: the runs are done \(summary: .*summary.csv\), but the report "
                                         r"lit_grok.reports.efficiency failed: KeyError: .*Rerun it alone with "
                                         r"`python -m lit_grok.reports.efficiency .*r`\.$"):
        main(args)
    assert (tmp_path / "r" / "train_size=40" / "version_0" / "result.json").is_file()


def test_a_failing_report_still_says_which_runs_failed(tmp_path, monkeypatch):
    from lit_grok.module import GrokkingModule
    from lit_grok.sweep import main

    original = GrokkingModule.training_step

    def fail_at_60(self, batch, batch_idx):
        if self.trainer.datamodule.train_size == 60:
            raise ValueError("raised while training")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(GrokkingModule, "training_step", fail_at_60)
    args = ["--base", str(ROOT / "configs/cpu/efficiency_base.yaml"), "--name", "r", "--save_dir", str(tmp_path),
            "--grids", '[{"data.init_args.train_size": [40, 60]}]', "--overrides", json.dumps(TEN_STEPS),
            "--max_members", "1", "--report", "lit_grok.reports.efficiency"]
    with pytest.raises(SystemExit, match=r"Rerun it alone with `python -m lit_grok.reports.efficiency .*r`\. Also, "
                                         r"1 run\(s\) failed \(train_size=60\); summary.csv holds their errors"):
        main(args)


def test_figures_leave_the_global_matplotlib_backend_alone(tmp_path):
    """A notebook's backend must survive importing lit_grok and drawing its figures (no matplotlib.use)."""
    import matplotlib

    from lit_grok.callbacks import TrainingCurves
    from lit_grok.reports import new_figure, save_figure

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        curves = TrainingCurves()
        curves.history["train/acc"] = [(1, 0.5), (10, 1.0)]
        curves.figure().savefig(tmp_path / "curves.png")
        fig, ax = new_figure((3, 2))
        ax.plot([1, 2], [3, 4])
        save_figure(fig, tmp_path, "report.png", "report/tag")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "report.png").exists()
    finally:
        matplotlib.use(before)


def test_an_error_while_an_ensemble_trains_is_not_taken_for_an_incompatible_group(tmp_path, monkeypatch, capsys):
    """Only a refusal before training (NotAnEnsemble) reruns a group one run at a time; an error raised
    during training is recorded as the runs' failure (the sweep goes on), and a rerun trains them again."""
    from lit_grok.callbacks import Members

    tiny = {"data.init_args.modulus": 11, "trainer.max_steps": 20, "trainer.check_val_every_n_epoch": 10,
            "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32}
    grids = [{"data.init_args.train_size": [40, 60], "data.init_args.random_labels": [True]}]
    base = str(ROOT / "configs/cpu/efficiency_base.yaml")
    original = Members.on_validation_end

    def fail(self, trainer, pl_module):
        raise ValueError("raised while training")

    monkeypatch.setattr(Members, "on_validation_end", fail)
    rows = list(csv.DictReader(sweep(base, "fails", grids, tiny, save_dir=str(tmp_path)).open()))
    assert [(r["failed"], r["error"]) for r in rows] == [("True", "ValueError: raised while training")] * 2
    assert "cannot train as one ensemble" not in capsys.readouterr().out
    monkeypatch.setattr(Members, "on_validation_end", original)
    rows = list(csv.DictReader(sweep(base, "fails", grids, tiny, save_dir=str(tmp_path)).open()))
    assert [r["step"] for r in rows] == ["20", "20"] and not any(r.get("failed") == "True" for r in rows)


def test_launches_processes_reads_the_trainer_config():
    from lit_grok.execution import launches_processes

    assert launches_processes({"strategy": "ddp", "devices": 2}) and launches_processes({"devices": 2, "accelerator": "cpu"})
    assert launches_processes({"num_nodes": 2}) and launches_processes({"devices": [0, 1]})
    assert not launches_processes({"devices": 1}) and not launches_processes({"devices": "auto", "accelerator": "cpu"})


@pytest.mark.timeout(240)
def test_a_sweep_of_ddp_runs_launches_each_run_with_its_own_command_line(tmp_path):
    """Issue 17, bug 2: a DDP run inside a sweep hung (rank 1 was started from the sweep's command line)."""
    tiny = {"data.init_args.modulus": 11, "trainer.max_steps": 20, "trainer.check_val_every_n_epoch": 10,
            "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32,
            "trainer.accelerator": "cpu", "trainer.strategy": "ddp", "trainer.devices": 2}
    summary = sweep(str(ROOT / "configs/cpu/efficiency_base.yaml"), "ddp", [{"data.init_args.train_size": [60]}],
                    tiny, save_dir=str(tmp_path))
    row, = list(csv.DictReader(summary.open()))
    assert row["step"] == "20" and 0 <= float(row["val/acc"]) <= 1 and row["converged"] == "False"
    assert not list((tmp_path / "ddp").glob("*/version_0/run_result.json"))  # read and removed


def test_a_sweep_files_name_can_be_overridden_on_the_command_line(capsys):
    from lit_grok.cli import main

    with pytest.raises(SystemExit):  # --print_config prints and exits
        main(["sweep", "--config", str(ROOT / "configs/cpu/efficiency.yaml"), "--name", "renamed", "--print_config"])
    assert "name: renamed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        main(["sweep", "--name", "x", "--grids", '[{"seed_everything": [0]}]'])
    assert exit.value.code == 2 and capsys.readouterr().err.startswith("error: a sweep needs base")


@pytest.mark.parametrize("sig, members", [(signal.SIGINT, 1), (signal.SIGTERM, 2)])  # each signal, each kind of group
def test_an_interrupted_sweep_stops_with_one_line_instead_of_failing_the_run_and_going_on(tmp_path, sig, members):
    # Lightning ends a fit stopped by Ctrl-C or SIGTERM with SystemExit; the sweep took it for a refused config,
    # recorded the run as failed and trained the next one (ignoring any further Ctrl-C)
    overrides = {"data.init_args.modulus": 11, "trainer.max_steps": 100000, "trainer.check_val_every_n_epoch": 10,
                 "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32,
                 "trainer.callbacks": "[]"}
    command = [sys.executable, "-m", "lit_grok", "sweep", "--base", str(ROOT / "configs/cpu/efficiency_base.yaml"),
               "--name", "stop", "--save_dir", str(tmp_path), "--max_members", str(members),
               "--grids", '[{"data.init_args.train_size": [40, 60]}]', "--overrides", json.dumps(overrides)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "stop").glob("*/version_0/events.*")):
        time.sleep(0.1)
    time.sleep(1)
    process.send_signal(sig)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()  # a sweep that did not stop must not outlive the test
    assert process.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted (Ctrl-C or SIGTERM). Run the sweep again")
    assert not list((tmp_path / "stop").glob("*/version_0/result.json"))  # nothing recorded as failed (or done)
    if members == 1:
        assert not (tmp_path / "stop" / "train_size=60").exists()  # the next run was not started


def test_a_sweep_pretrains_once_per_task_and_branches_every_run_from_its_own_network(tmp_path, capsys, monkeypatch):
    tiny = {"data.init_args.modulus": 11, "trainer.max_steps": 20, "trainer.check_val_every_n_epoch": 10,
            "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32}
    kwargs = dict(base=str(ROOT / "configs/cpu/ungrok.yaml"), name="tasks", save_dir=str(tmp_path),
                  grids=[{"data.init_args.operation": ["add", "sub"], "data.init_args.train_size": [30, 60]}],
                  overrides={**tiny, "trainer.enable_checkpointing": False}, max_members=1,
                  pretrain={"base": str(ROOT / "configs/cpu/ungrok_pretrain.yaml"),
                            "keys": ["data.init_args.operation"], "overrides": tiny})
    rows = list(csv.DictReader(sweep(**kwargs).open()))
    pretrained = tmp_path / "tasks" / "pretrain"
    assert sorted(p.parents[2].name for p in pretrained.glob("*/version_0/checkpoints/last.ckpt")) == \
        ["operation=add", "operation=sub"]
    assert len(list(csv.DictReader((pretrained / "summary.csv").open()))) == 2
    assert len(rows) == 4 and {r["run"] for r in rows} == {"operation=add-train_size=30", "operation=add-train_size=60",
                                                           "operation=sub-train_size=30", "operation=sub-train_size=60"}
    for row in rows:  # each branch starts from the network pre-trained on its own task
        assert row["model.init_args.init_from"].endswith(
            f"pretrain/operation={row['data.init_args.operation']}/version_0/checkpoints/last.ckpt")
    capsys.readouterr()
    sweep(**kwargs)
    assert capsys.readouterr().out.count("done, skipped") == 4  # and no pre-training is run again
    with pytest.raises(ValueError, match="not in every grid"):
        sweep(**{**kwargs, "pretrain": {"base": kwargs["pretrain"]["base"], "keys": ["data.init_args.modulus"]}})

    # on a machine without these logs (logs/ is not in git), a kept summary stands for the finished runs:
    # only a missing run is trained, and only the network it starts from
    kept = tmp_path / "kept.csv"
    kept.write_text((tmp_path / "tasks" / "summary.csv").read_text())
    grids = kwargs["grids"] + [{"data.init_args.operation": ["sub"], "data.init_args.train_size": [45]}]
    again = list(csv.DictReader(sweep(**{**kwargs, "name": "again", "grids": grids, "restore": [str(kept)]}).open()))
    assert "5 runs (1 trained now, 4 skipped as done)" in capsys.readouterr().out
    assert [p.parents[2].name for p in (tmp_path / "again" / "pretrain").glob("*/version_0/checkpoints/last.ckpt")] \
        == ["operation=sub"]
    restored = {r["run"]: r for r in again if r.get("restored_from")}
    assert sorted(restored) == sorted(r["run"] for r in rows)
    assert {r["restored_from"] for r in restored.values()} == {str(kept)}
    assert all(restored[r["run"]]["val/acc"] == r["val/acc"] and restored[r["run"]]["converged"] == r["converged"]
               for r in rows)  # the kept values, unchanged
    # kept networks: a sweep writes each network it pre-trains to `weights`, weights only, and a sweep
    # elsewhere starts from that file instead of training it again; the branch is the same as from last.ckpt
    weights = tmp_path / "weights"
    one = {**kwargs, "grids": [{"data.init_args.operation": ["add", "sub"], "data.init_args.train_size": [30]}],
           "pretrain": {**kwargs["pretrain"], "weights": str(weights)}}
    events = []  # each network is kept as soon as it is trained, so that a sweep stopped later keeps it
    monkeypatch.setattr(sweep_module, "run_group", lambda base, overrides, group: events.append(
        ("train", run_id(group[0][1]))) or run_group(base, overrides, group))
    monkeypatch.setattr(sweep_module, "save_network", lambda path, out, record: events.append(
        ("keep", out.name)) or save_network(path, out, record))
    first = list(csv.DictReader(sweep(**{**one, "name": "w1"}).open()))
    assert events[:4] == [("train", "operation=add"), ("keep", "operation=add.ckpt"),
                          ("train", "operation=sub"), ("keep", "operation=sub.ckpt")]
    monkeypatch.undo()
    assert sorted(p.name for p in weights.iterdir()) == ["operation=add.ckpt", "operation=sub.ckpt"]
    net = torch.load(weights / "operation=add.ckpt", weights_only=True)
    assert "optimizer_states" not in net and net["record"]["step"] == 20
    assert net["state_dict"] and all(key.startswith("net.") for key in net["state_dict"])
    capsys.readouterr()
    second = list(csv.DictReader(sweep(**{**one, "name": "w2"}).open()))
    assert "operation=add: kept in" in capsys.readouterr().out
    assert not (tmp_path / "w2" / "pretrain" / "operation=add").exists()  # nothing trained again
    (weights / "operation=add.ckpt").write_bytes(b"not a checkpoint")  # e.g. a git-lfs pointer, or cut short
    with pytest.raises(ValueError, match="pretrain weights: .* is not a readable checkpoint"):
        sweep(**{**one, "name": "w3"})
    with pytest.raises(ValueError, match="is a file: give the folder"):
        sweep(**{**one, "name": "w3", "pretrain": {**one["pretrain"], "weights": str(weights / "operation=add.ckpt")}})
    for row in first + second:
        original = next(r for r in rows if r["run"] == row["run"])
        assert row["model.init_args.init_from"] == str(weights / f"operation={row['data.init_args.operation']}.ckpt")
        assert row["val/acc"] == original["val/acc"] and row["train/loss"] == original["train/loss"]
    (tmp_path / "bad.csv").write_text("task,val/acc\nadd,0.5\n")
    with pytest.raises(ValueError, match="no 'run' column"):
        sweep(**{**kwargs, "name": "bad", "restore": [str(tmp_path / "bad.csv")]})


def test_the_tasks_report_draws_a_panel_per_task_and_finds_each_lines_crossing(tmp_path):
    from lit_grok.reports import ungrok_tasks

    with open(tmp_path / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "data.init_args.operation", "data.init_args.train_size",
                    "model.init_args.optimizer.init_args.weight_decay", "val/acc", "train/acc", "data/train_size",
                    "converged", "step", "model.init_args.init_from"])
        w.writerows([r + ["pre.ckpt"] for r in [
            ["a", "sub", 50, 1.0, 0.0, 1.0, 50, "True", 900], ["b", "sub", 200, 1.0, 1.0, 1.0, 200, "True", 800],
            ["c", "sub", 50, 2.0, 0.2, 1.0, 50, "False", 3000], ["d", "sub", 200, 2.0, 0.6, 1.0, 200, "True", 800],
            ["e", "mul", 50, 1.0, 0.9, 1.0, 50, "True", 700]]])
    result = ungrok_tasks.report(tmp_path)
    assert result["crossing_0.5"]["sub"] == {"1": pytest.approx(100.0), "2": pytest.approx(50 * 4 ** 0.75)}
    assert result["crossing_0.5"]["mul"] == {"1": None} and result["not_converged"] == ["c"]
    rows = list(csv.DictReader((tmp_path / "ungrok_tasks.csv").open()))
    assert [(r["task"], r["D'"]) for r in rows][:2] == [("sub", "50"), ("sub", "200")] and len(rows) == 5
    assert (tmp_path / "ungrok_tasks.png").exists()
    (tmp_path / "summary.csv").write_text("run,data.init_args.train_size,model.init_args.optimizer.init_args."
                                          "weight_decay,val/acc,train/acc,data/train_size,step,model.init_args."
                                          "init_from\nx,5,1,0,1,5,9,pre.ckpt\n")
    with pytest.raises(KeyError):  # an ungrokking sweep of one task: not this report's experiment
        ungrok_tasks.report(tmp_path)


def test_a_checkpoint_that_would_run_code_in_a_sweep_folder_is_refused_not_loaded(tmp_path):
    import os

    import torch

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    tiny = {"data.init_args.modulus": 11, "trainer.max_steps": 5, "model.init_args.network.init_args.d_model": 16,
            "model.init_args.network.init_args.d_mlp": 32}
    grids = [{"data.init_args.train_size": [40]}]
    planted = tmp_path / "s" / "train_size=40" / "version_0" / "checkpoints" / "last.ckpt"
    planted.parent.mkdir(parents=True)
    torch.save({"global_step": 3, "state_dict": {}, "payload": Payload()}, planted)
    summary = sweep(base=str(ROOT / "configs/cpu/efficiency_base.yaml"), name="s", grids=grids, overrides=tiny,
                    save_dir=str(tmp_path))
    row = next(csv.DictReader(summary.open()))
    assert row["failed"] == "True" and "is not a readable checkpoint (it holds objects other than tensors" in row["error"]
    assert not marker.exists()


def test_editing_the_base_config_while_a_sweep_runs_changes_none_of_its_runs(tmp_path, monkeypatch):
    import lit_grok.sweep as sweep_module

    base = tmp_path / "base.yaml"
    base.write_text((ROOT / "configs/cpu/efficiency_base.yaml").read_text())
    calls = []

    def edit_after_first(*args, **kwargs):
        records = sweep_module.run_group.__wrapped__(*args, **kwargs)
        calls.append(1)
        base.write_text("trainer:\n  max_steps: -7\n")  # a mistake made in the editor while the sweep runs
        return records

    edit_after_first.__wrapped__ = sweep_module.run_group
    monkeypatch.setattr(sweep_module, "run_group", edit_after_first)
    tiny = {"data.init_args.modulus": 11, "trainer.max_steps": 5, "model.init_args.network.init_args.d_model": 16,
            "model.init_args.network.init_args.d_mlp": 32}
    summary = sweep(base=str(base), name="s", grids=[{"data.init_args.train_size": [40, 60]}], overrides=tiny,
                    save_dir=str(tmp_path), max_members=1)
    rows = list(csv.DictReader(summary.open()))
    assert len(calls) == 2 and [r.get("failed", "") for r in rows] == ["", ""] and [r["step"] for r in rows] == ["5", "5"]
    assert (tmp_path / "s" / "base.yaml").read_text().startswith(f"# {base} as the sweep read it")

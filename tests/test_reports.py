import csv
import json
import math
import os
import time
from pathlib import Path

import pytest

from lit_grok.reports import efficiency
from lit_grok.reports.efficiency import estimate, stop_step

ROOT = Path(__file__).resolve().parents[1]

FIELDS = ["run", "data.init_args.random_labels", "data.init_args.train_size",
          "model.init_args.optimizer.init_args.weight_decay", "seed_everything", "train/loss", "norm/params",
          "circuits/gen_fraction", "logits/train_margin", "train/acc", "step", "converged"]


def _row(kind, d, wd, seed, loss, norm, fraction=0.99, acc=1.0, converged=True):
    run = f"{kind}-D={d}-wd={wd}-seed={seed}"
    return {"run": run, "data.init_args.random_labels": kind == "mem", "data.init_args.train_size": d,
            "model.init_args.optimizer.init_args.weight_decay": wd, "seed_everything": seed, "train/loss": loss,
            "norm/params": norm, "circuits/gen_fraction": fraction, "logits/train_margin": 10.0,
            "train/acc": acc, "step": 5000, "converged": converged}


def _clean_rows():
    """Two seeds (seed 1 misses D=400: uneven coverage), mem curves 20 apart in norm, gen halfway."""
    rows = []
    for seed in (0, 1):
        for kind, d, offset in [("mem", 100, 0.0), ("mem", 400, 20.0), ("gen", 800, 10.0)]:
            if (seed, d) == (1, 400):
                continue
            for wd, loss in [(1.0, 1e-6), (4.0, 1e-2)]:
                rows.append(_row(kind, d, wd, seed, loss, offset + seed + (20.0 if wd == 1.0 else 10.0)))
    return rows


def _write(sweep_dir, rows):
    sweep_dir.mkdir()
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def test_efficiency_report_drops_lists_and_counts_unfit_unconverged_and_mixed_runs(tmp_path):
    bad = [_row("mem", 400, 2.0, 0, 1e-4, 99.0, converged=False),  # stopped by max_steps
           _row("mem", 400, 2.0, 1, 1e-4, 99.0, acc=0.995),  # has not fitted its random labels
           _row("gen", 800, 2.0, 0, 1e-4, 99.0, fraction=0.93),  # not C_gen-only by App. B
           _row("gen", 800, 2.0, 1, 1e-4, 99.0, fraction=0.94, converged=False)]
    _write(tmp_path / "sweep", _clean_rows() + bad)
    result = efficiency.report(tmp_path / "sweep")
    assert result["runs"] == 14 and result["kept"] == 10
    assert result["rejected"] == {
        "mem-D=400-wd=2.0-seed=0": ["not converged"],
        "mem-D=400-wd=2.0-seed=1": ["train/acc 0.9950 < 1"],
        "gen-D=800-wd=2.0-seed=0": ["circuits/gen_fraction 0.930 <= 0.95"],
        "gen-D=800-wd=2.0-seed=1": ["not converged", "circuits/gen_fraction 0.940 <= 0.95"]}
    assert result["rejected_count"] == {"not converged": 2, "train/acc": 1, "circuits/gen_fraction": 2}
    # the estimate is the clean rows' own: the rejected points (norm 99) would have moved every curve
    clean = estimate(efficiency.load_rows(_clean_rows()))
    assert result["d_crit"] == pytest.approx(clean["d_crit"]) == pytest.approx(200.0, rel=0.05)
    assert result["log10_ref_loss"] == -2.0  # the median of the losses every curve covers
    assert result["per_seed"][1]["mem_norm_at_ref"] == {100: pytest.approx(11.0)}  # seed 1 has no D=400
    assert result["per_seed"][1]["d_crit"] is None
    # at equal weight decay: mem norms (seeds averaged) 20.5 at D=100 and 40 at D=400 against gen's 30.5 (wd 1)
    assert result["at_weight_decay"][1.0]["mem_norm"] == {100: 20.5, 400: 40.0}
    assert result["at_weight_decay"][1.0]["gen_norm"] == 30.5
    assert result["at_weight_decay"][1.0]["d_crit"] == pytest.approx(100 * 4 ** (10 / 19.5))
    assert set(result["at_weight_decay"]) == {1.0, 4.0}  # wd 2 ran only rejected runs
    seed1 = result["per_seed"][1]["at_weight_decay"][1.0]  # seed 1's C_mem (21 at D=100) against every C_gen run
    assert seed1["mem_norm"] == {100: 21.0} and seed1["gen_norm"] == 30.5 and seed1["d_crit"] is None
    # the constructed curves are parallel: the crossing is the same at every reference loss from 1e-6 to 1e-2
    spread = result["over_reference_losses"]
    assert min(spread) == -6.0 and max(spread) == -2.0 and len(spread) == 81  # every 0.05
    assert all(d == pytest.approx(100 * 4 ** (10 / 19.5)) for d in spread.values())
    assert (tmp_path / "sweep" / "efficiency_by_size.png").stat().st_size > 0
    saved = json.loads((tmp_path / "sweep" / "d_crit.json").read_text())
    assert saved["rejected_count"] == result["rejected_count"]
    with open(tmp_path / "sweep" / "efficiency.csv") as f:
        assert len(list(csv.DictReader(f))) == 14  # every run listed, rejected ones too


def test_stop_step_follows_stop_on_convergence_rule():
    # the norm settles geometrically: each validation moves it by half as much as the one before; the margin
    # is constant until step 800, then jumps by 0.3 once
    history = [(100 * (i + 1), [20.0 + 2.0 * 0.5**i, 10.0 + 0.3 * (i >= 8)]) for i in range(30)]
    # over 3 validations ending at i the norm spreads by 2 (0.5^(i-2) - 0.5^i) = 6 * 0.5^i
    assert stop_step(history, (1e-2, 0.1, 3)) == 600  # i = 5: 0.19 < 0.2 (i = 4: 0.375)
    assert stop_step(history, (1e-3, 0.1, 3)) == 1100  # the norm is still at i = 9, the margin's jump until i = 10
    assert stop_step(history, (1e-3, 0.5, 3)) == 1000  # a margin tolerance above the jump
    assert stop_step(history, (1e-3, 0.1, 30)) is None  # not enough validations
    assert stop_step(history, (1e-12, 0.1, 3)) is None


def test_grok_time_report_gives_slopes_of_log_steps_and_keeps_capped_runs_apart(tmp_path):
    from lit_grok.reports import grok_time

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    steps = {(3000, 0): 1000, (3000, 1): 1000, (2000, 0): 10000, (2000, 1): 10000, (1500, 0): 100000,
             (1500, 1): 100000, (1000, 0): -1}  # tenfold per 1000 pairs, then per 500: faster than exponential
    with open(sweep / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "seed_everything", "data.init_args.train_size", "events/grokked_step", "step"])
        for (d, seed), step in steps.items():
            writer.writerow([f"D={d}-seed={seed}", seed, d, step, 200000 if step < 0 else step])
    result = grok_time.report(sweep)
    assert result["not_grokked"] == ["D=1000-seed=0"]
    assert [(s["from_D"], s["to_D"]) for s in result["slopes"]] == [(1000, 1500), (1500, 2000), (2000, 3000)]
    assert [s["log10_steps_per_100_pairs"] for s in result["slopes"]] == [
        pytest.approx(-math.log10(2) / 5), pytest.approx(-0.2), pytest.approx(-0.1)]  # 200,000 at the cap: a bound
    assert [s["bound"] for s in result["slopes"]] == ["at least", "exact", "exact"]
    assert result["slopes_per_seed"][0] == result["slopes"]  # seed 0 ran every size, with the median's steps
    assert result["curvature"]["c2"] > 0 and result["curvature"]["sizes"] == [1500, 2000, 3000]
    assert result["curvature_without"] == {1500: None, 2000: None, 3000: None}  # two sizes are no curve
    assert [(s["from_D"], s["to_D"]) for s in result["slopes_per_seed"][1]] == [(1500, 2000), (2000, 3000)]
    with open(sweep / "grok_time.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["D"], r["grokked"], r["steps"]) for r in rows][:1] == [("1000", "False", "200000")]
    assert (sweep / "grok_time.png").stat().st_size > 0


def test_a_report_on_a_folder_that_is_not_its_sweep_ends_with_one_line(tmp_path, capsys):
    import re

    from lit_grok.reports import main
    from lit_grok.reports.grok_time import report

    def refused(argv, pattern):
        with pytest.raises(SystemExit) as exit:
            main(report, argv)
        err = capsys.readouterr().err
        assert exit.value.code == 2 and len(err.strip().splitlines()) == 1 and re.search(pattern, err), err

    refused([str(tmp_path / "nope")], "is not a folder; give the sweep's folder")
    refused([str(tmp_path)], r"summary.csv does not exist: is .* a sweep's folder\?")
    (tmp_path / "summary.csv").write_text("run,step\nx,10\n")
    refused([str(tmp_path)], r"summary.csv has no column 'data.init_args.train_size', which lit_grok.reports.grok_time reads")
    refused([], r"^usage: python -m lit_grok.reports.grok_time FOLDER")


def test_grok_time_curvature_is_zero_for_exponential_growth_and_positive_for_faster():
    from lit_grok.reports.grok_time import curvature

    def rows(log_steps, slower=0.3):  # seed 1 takes 10^0.3 = 2x seed 0's steps everywhere, plus noise
        return [{"D": d, "seed": seed, "grokked": True, "steps": 10 ** (log_steps(d) + slower * seed + noise)}
                for i, d in enumerate((3000, 3500, 4000, 4500)) for seed, noise in enumerate((0.02 * (-1) ** i, 0))]

    exponential = curvature(rows(lambda d: 6 - d / 1000))
    assert exponential["c2"] == pytest.approx(0, abs=0.1) and exponential["runs"] == 8
    faster = curvature(rows(lambda d: 6 - d / 1000 + 0.5 * ((d - 3750) / 1000) ** 2))
    assert faster["c2"] == pytest.approx(0.5, abs=0.1) and 0 < faster["c2_se"] < 0.2
    assert faster["c2"] - exponential["c2"] == pytest.approx(0.5)
    dropped = rows(lambda d: 6 - d / 1000)[:-1]  # seed 1 lacks D = 4500: its offset must not bend the fit
    assert curvature(dropped)["c2"] == pytest.approx(exponential["c2"], abs=0.1)
    assert faster["sizes"] == [3000, 3500, 4000, 4500]
    assert curvature(rows(lambda d: 3)[:4])["c2"] is None  # two sizes: no curvature to fit


def test_the_median_time_to_grok_is_a_bound_only_when_a_capped_run_reaches_the_middle():
    from lit_grok.reports.grok_time import median_is_a_bound, slopes

    def runs(*steps):  # a negative number: a run stopped by the cap at that many steps
        return [{"D": 0, "seed": i, "grokked": s > 0, "steps": abs(s)} for i, s in enumerate(steps)]

    assert not median_is_a_bound(runs(100, 200, -300))  # the capped run is the largest: the middle is exact
    assert median_is_a_bound(runs(100, -300, -300))
    assert median_is_a_bound(runs(100, -300))  # the median of two averages in the capped run
    assert not median_is_a_bound(runs(100, 300, 200, 400, -500))
    assert not median_is_a_bound(runs(300, -300, 100))  # the capped run (>= 300) sorts after the grokked 300
    rows = [dict(r, D=1000) for r in runs(1000, 2000, -25000)] + [dict(r, D=2000) for r in runs(100, 200, 300)]
    assert [(s["to_D"], s["bound"]) for s in slopes(rows)] == [(2000, "exact")]
    assert slopes(rows)[0]["log10_steps_per_100_pairs"] == pytest.approx(-0.1)


def test_d_crit_crossings_are_log_interpolated_means_over_seeds(tmp_path):
    from lit_grok.reports.d_crit import crossing, semigrok_crossing, ungrok_crossings, ungrok_crossings_by_task

    assert crossing({100: 0.0, 200: 1.0}) == pytest.approx(200 / 2**0.5)  # halfway in log D
    assert crossing({100: 0.6, 200: 1.0}) is None and crossing({100: 0.1, 200: 0.4}) is None
    with open(tmp_path / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "model.init_args.optimizer.init_args.weight_decay", "data.init_args.train_size", "val/acc"])
        writer.writerows([["a", 1.0, 100, 0.0], ["b", 1.0, 400, 0.8], ["c", 1.0, 400, 1.0],  # mean 0.9 at 400
                          ["d", 2.0, 100, 0.2], ["e", 2.0, 400, 0.2]])
    crossings = ungrok_crossings(tmp_path / "summary.csv")
    assert crossings[1.0] == pytest.approx(100 * 4 ** (0.5 / 0.9)) and crossings[2.0] is None
    assert semigrok_crossing(tmp_path / "summary.csv") == pytest.approx(100 * 4 ** (0.4 / (2 / 3 - 0.1)))  # 0.1 -> 0.667
    # a sweep over tasks: one crossing per task, never a mean of two tasks' accuracies
    with open(tmp_path / "tasks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "data.init_args.operation", "data.init_args.modulus",
                         "model.init_args.optimizer.init_args.weight_decay", "data.init_args.train_size", "val/acc"])
        writer.writerows([["a", "sub", 113, 8.0, 100, 0.0], ["b", "sub", 113, 8.0, 400, 1.0],
                          ["c", "s5_compose", "", 8.0, 100, 0.4], ["d", "s5_compose", "", 8.0, 400, 0.6]])
    assert ungrok_crossings_by_task(tmp_path / "tasks.csv") == {"sub (P=113)": {8.0: pytest.approx(200.0)},
                                                               "s5_compose": {8.0: pytest.approx(200.0)}}
    with pytest.raises(ValueError, match="holds 2 tasks"):
        ungrok_crossings(tmp_path / "tasks.csv")


def test_the_efficiency_report_judges_convergence_on_the_curves_as_well(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    rows = _clean_rows() + [_row("mem", 400, 2.0, 0, 1e-4, 30.0, converged=False),  # hit the step cap...
                            _row("mem", 400, 8.0, 0, 1e-4, 30.0, converged=False)]
    _write(tmp_path / "sweep", rows)
    for run, wobble in (("mem-D=400-wd=2.0-seed=0", 0.0), ("mem-D=400-wd=8.0-seed=0", 0.5)):
        with SummaryWriter(str(tmp_path / "sweep" / run / "version_0")) as writer:
            for i in range(20):  # ...but its norm and margin had settled (or, with a wobble, had not)
                writer.add_scalar("norm/params", 30.0 + wobble * (i % 2), i * 100 - 1)
                writer.add_scalar("logits/train_margin", 14.0, i * 100 - 1)
    result = efficiency.report(tmp_path / "sweep")
    assert "mem-D=400-wd=2.0-seed=0" not in result["rejected"]
    assert result["rejected"]["mem-D=400-wd=8.0-seed=0"] == ["not converged"]
    with open(tmp_path / "sweep" / "rule_sensitivity.csv") as f:
        stops = {(r["run"], r["norm_rel_tol"]): r["stop_step"] for r in csv.DictReader(f)}
    assert stops[("mem-D=400-wd=2.0-seed=0", "0.002")] == "900"  # the 10th validation (steps 0..900)
    assert stops[("mem-D=400-wd=8.0-seed=0", "0.002")] == ""


def test_compare_reads_runs_back_side_by_side(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from lit_grok.reports.compare import compare

    for name, accs, grokked in (("fast", [0.1, 0.995, 1.0], 200), ("never", [0.1, 0.2, 0.3], -1)):
        with SummaryWriter(str(tmp_path / name)) as writer:
            for i, acc in enumerate(accs):  # validations after 100, 200, 300 steps (logged at step - 1)
                writer.add_scalar("val/acc", acc, 100 * (i + 1) - 1)
                writer.add_scalar("norm/params", 10.0 + i, 100 * (i + 1) - 1)
            writer.add_scalar("events/grokked_step", grokked, 199)
    rows = compare(tmp_path / "out", [tmp_path / "fast", tmp_path / "never"])
    assert [(r["grokked_step"], r["last_step"], r["final val/acc"]) for r in rows] == [(200, 300, 1.0),
                                                                                      (-1, 300, pytest.approx(0.3))]
    assert rows[0]["final norm/params"] == 12.0 and (tmp_path / "out.png").stat().st_size > 0


def test_status_says_where_each_run_of_a_sweep_stands(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    from lit_grok.reports import status

    results = {"a": {"step": 300}, "b": None, "c": {"failed": True, "error": "x"}, "d": {"diverged": True}}
    for run, result in results.items():
        run_dir = tmp_path / run / "version_0"
        with SummaryWriter(str(run_dir)) as writer:
            for step in (100, 200, 300 if result else 200):  # b is still at its validation of step 200
                writer.add_scalar("val/acc", step / 1000, step - 1)  # Lightning logs step N's at N - 1
                writer.add_scalar("norm/params", 40.0, step - 1)
        if result is not None:
            (run_dir / "result.json").write_text(json.dumps(result))
    retried = tmp_path / "e" / "version_0"  # failed, and being trained again: written after its result.json
    retried.mkdir(parents=True)
    (retried / "result.json").write_text(json.dumps({"failed": True}))
    os.utime(retried / "result.json", (time.time() - 30, time.time() - 30))
    with SummaryWriter(str(retried)) as writer:
        writer.add_scalar("val/acc", 0.5, 99)
    pretrain = tmp_path / "pretrain" / "operation=add" / "version_0"  # on every pair: no val/acc
    with SummaryWriter(str(pretrain)) as writer:
        writer.add_scalar("train/loss", 0.5, 99)
        writer.add_scalar("norm/params", 30.0, 99)
    rows = status.status(tmp_path, now=time.time() + 60)
    assert [(r["run"], r["state"], r["step"]) for r in rows] == [
        ("pretrain/operation=add", "unfinished", 100), ("a", "done", 300), ("b", "unfinished", 200), ("c", "failed", 300),
        ("d", "diverged", 300), ("e", "unfinished", 100)]
    assert rows[0]["train/loss"] == 0.5 and rows[0]["val/acc"] is None
    rows = rows[1:]
    assert rows[1]["val/acc"] == pytest.approx(0.2) and rows[1]["train/loss"] is None
    assert all(60 <= r["idle_s"] < 120 for r in rows)
    status.main([str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "state", "step", "val/acc", "train/loss", "norm/params", "idle_s"]
    assert lines[3].split()[:5] == ["b", "unfinished", "200", "0.2", "-"]
    with pytest.raises(SystemExit) as exit:
        status.main([str(tmp_path / "a")])
    assert exit.value.code == 2 and "holds no run folders" in capsys.readouterr().err


def test_status_of_a_sweep_file_lists_the_runs_not_started(tmp_path, capsys):
    from lit_grok.reports import status

    sweep = tmp_path / "logs" / "s"
    (sweep / "train_size=40-seed_everything=0" / "version_0").mkdir(parents=True)
    (sweep / "train_size=40-seed_everything=0" / "version_0" / "result.json").write_text('{"step": 10}')
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: b.yaml\nname: s\nsave_dir: {tmp_path / 'logs'}\ngrids:\n"
                    f"  - data.init_args.train_size: [40, 60]\n    seed_everything: [0]\n")
    assert status.sweep_file(path) == (sweep, {"train_size=40-seed_everything=0": "not started",
                                               "train_size=60-seed_everything=0": "not started"})
    status.main([str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[1:]] == [["train_size=40-seed_everything=0", "done", "-"],
                                                        ["train_size=60-seed_everything=0", "not", "started"]]
    # on a fresh checkout: what a restore summary records and a network pretrain.weights keeps are not trained
    (tmp_path / "kept.csv").write_text("run,val/acc,failed\ntrain_size=60-seed_everything=0,0.5,False\n"
                                       "train_size=80-seed_everything=0,0.1,True\n")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "seed_everything=0.ckpt").write_bytes(b"")
    path.write_text(path.read_text().replace("[40, 60]", "[60, 80]") + f"restore: [{tmp_path / 'kept.csv'}]\n"
                    f"pretrain:\n  base: {ROOT / 'configs/cpu/ungrok_pretrain.yaml'}\n  keys: [seed_everything]\n"
                    f"  weights: {tmp_path / 'weights'}\n")
    assert status.sweep_file(path)[1] == {"pretrain/seed_everything=0": "kept",
                                          "train_size=60-seed_everything=0": "kept",
                                          "train_size=80-seed_everything=0": "not started"}  # it failed there
    path.write_text("trainer:\n  max_steps: 3\n")
    with pytest.raises(SystemExit) as exit:
        status.main([str(path)])
    assert exit.value.code == 2 and "is not a sweep file" in capsys.readouterr().err


def test_d_crit_reads_every_efficiency_estimate(tmp_path):
    from lit_grok.reports.d_crit import efficiency_d_crit

    path = tmp_path / "d_crit.json"
    path.write_text(json.dumps({
        "d_crit": 760.0, "over_reference_losses": {"-6.5": 770.0, "-6.3": 762.0, "-6.2": 756.0},
        "at_weight_decay": {"2.0": {"d_crit": 769.0}, "4.0": {"d_crit": None}},
        "per_seed": {"0": {"d_crit": 764.0, "at_weight_decay": {"2.0": {"d_crit": 778.0}}},
                     "1": {"d_crit": None, "at_weight_decay": {"2.0": {"d_crit": 761.0}}}}}))
    assert efficiency_d_crit(path) == {
        "d_crit": 760.0, "per_seed": {"0": 764.0, "1": None}, "over_reference_losses": [756.0, 770.0],
        "at_weight_decay": {"2.0": 769.0, "4.0": None},
        "at_weight_decay_per_seed": {"0": {"2.0": 778.0}, "1": {"2.0": 761.0}}}
    path.write_text(json.dumps({"d_crit": 184.0, "per_seed": {"0": {"d_crit": 178.0}}}))  # an older report's file
    assert efficiency_d_crit(path) == {"d_crit": 184.0, "per_seed": {"0": 178.0}}


def test_dynamics_checks_the_papers_two_statements_on_constructed_curves():
    from lit_grok.reports import dynamics

    steps = range(100, 8001, 100)
    gen = {s: min(s, 3000) / 100 - max(0, s - 5000) / 1000 for s in steps}  # rises, plateaus, falls after 5000
    mem = {s: (5 + s / 100 if s <= 1500 else max(0.0, 20 - (s - 1500) / 100)) for s in steps}  # rises, then ~0
    norm = {s: 60 - s / 1000 for s in steps}
    acc = {s: float(s >= 3000) for s in steps}
    result = dynamics.check({dynamics.GEN: gen, dynamics.MEM: mem, "norm/params": norm, "val/acc": acc})
    assert result["statement_1_holds"] and result["share_of_intervals_rising"]["norm"] == 0
    assert result["gen_logit"] == [pytest.approx(2.0), pytest.approx(15.0)] and result["grokked_step"] == 3000
    assert result["statement_2_holds"] and result["gen_logit_peak_after"]["step"] in range(4000, 5001)
    mem_late = {s: 5.0 for s in steps}  # C_mem still large after C_gen's peak: statement 2 fails
    assert not dynamics.check({dynamics.GEN: gen, dynamics.MEM: mem_late, "norm/params": norm,
                               "val/acc": acc})["statement_2_holds"]


def test_ratio_report_orders_the_sizes_and_measures_the_rise(tmp_path):
    from lit_grok.reports import ratio

    with open(tmp_path / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "data/train_size", ratio.GEN, ratio.MEM, "val/acc", "step", "converged"])
        w.writerows([["b", 400, 20.0, 2.0, 0.5, 10000, "True"], ["a", 100, 5.0, 50.0, 0.01, 10000, "True"],
                     ["c", 1600, 30.0, 0.03, 1.0, 12000, "False"]])
    result = ratio.report(tmp_path)
    assert result["monotonic"] and result["orders_of_magnitude"] == pytest.approx(4.0)
    assert result["not_converged"] == ["c"] and result["mem_logit_not_positive_at"] == []
    rows = list(csv.DictReader((tmp_path / "ratio.csv").open()))
    assert [r["D"] for r in rows] == ["100", "400", "1600"] and float(rows[0]["ratio"]) == pytest.approx(0.1)
    with open(tmp_path / "summary.csv", "a", newline="") as f:  # every pair: C_mem's logit is 0 by construction
        csv.writer(f).writerow(["d", 12769, 40.0, -1e-13, "", 4200, "True"])
    result = ratio.report(tmp_path)
    assert result["mem_logit_not_positive_at"] == [12769] and result["orders_of_magnitude"] == pytest.approx(4.0)
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    with open(tmp_path / "summary.csv", "w", newline="") as f:  # a failed run (no metrics) is left out, not a crash
        w = csv.DictWriter(f, fieldnames=[*rows[0], "failed"])
        w.writeheader()
        w.writerows(rows + [{"run": "e", "failed": "True"}])
    assert ratio.report(tmp_path)["orders_of_magnitude"] == pytest.approx(4.0)


def test_the_efficiency_report_judges_a_sweep_by_its_own_configs_rule(tmp_path):
    from lit_grok.reports.efficiency import RULE, rules_around, sweep_rule

    run_dir = tmp_path / "r" / "version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        "trainer:\n  callbacks:\n  - class_path: lit_grok.callbacks.StopOnConvergence\n    init_args:\n"
        "      monitor: [logits/train_margin, norm/params]\n      rel_tol: 5.0e-3\n      window: 4\n")
    assert sweep_rule(tmp_path, ["missing", "r"]) == (5e-3, None, 4)  # P=31's: a relative margin tolerance
    assert sweep_rule(tmp_path, ["missing"]) == RULE
    assert rules_around((5e-3, None, 4)) == ((1e-2, None, 4), (5e-3, None, 4), (2.5e-3, None, 4), (2.5e-3, None, 4))
    history = [(100 * i, [30.0, 14.0 + 0.05 * (i % 2)]) for i in range(1, 9)]  # margin wobbles by 0.36 %
    assert stop_step(history, (5e-3, None, 4)) == 400 and stop_step(history, (5e-3, 0.01, 4)) is None


def test_curves_of_a_single_runs_folder_are_that_runs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from lit_grok.reports import curves

    with SummaryWriter(str(tmp_path)) as writer:  # a run's own folder: events directly in it
        for step in (49, 99):
            writer.add_scalar("val/acc", step / 100, step)
            writer.add_scalar("train/acc", 1.0, step)
    assert curves.report(tmp_path) == {"runs": 1, "csv": str(tmp_path / "curves.csv"), "validations": 2}
    rows = list(csv.DictReader((tmp_path / "curves.csv").open()))
    assert [(r["step"], r["val/acc"]) for r in rows] == [("50", "0.49"), ("100", "0.99")]


def test_rule_check_replays_a_configs_convergence_rule_on_recorded_curves(tmp_path, capsys):
    from lit_grok.reports import rule_check

    config = tmp_path / "rule.yaml"
    config.write_text("""
trainer:
  callbacks:
    - class_path: lit_grok.callbacks.StepProgressBar
    - class_path: lit_grok.callbacks.StopOnConvergence
      init_args: {monitor: [val/acc, norm/params], abs_tol: {val/acc: 0.02}, window_time: 4.0}
model:
  init_args:
    optimizer: {init_args: {lr: 0.1, weight_decay: 1.0}}
""")
    curves = tmp_path / "curves.csv"
    with open(curves, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "val/acc", "norm/params"])
        # val/acc = 1 / (1 + t) in decay time t = 0.1 x weight decay x step: the rule fires at t = 16
        for run, decay, last in (("weight_decay=1.0-train_size=9", 1.0, 300), ("weight_decay=2.0-x", 2.0, 60)):
            for step in range(10, last + 1, 10):
                writer.writerow([run, step, 1 / (1 + 0.1 * decay * step), 10.0])
    rows = rule_check.check(config, [curves])
    assert [(r["weight_decay"], r["last_step"], r["rule_step"]) for r in rows] == [(1.0, 300, 160), (2.0, 60, None)]
    rule_check.main([str(config), str(curves)])
    out = capsys.readouterr().out
    assert "| weight_decay=1.0-train_size=9 | 300 | 0.032 | 160 | 0.059 |" in out and "| weight_decay=2.0-x | 60 | 0.077 | - | - |" in out
    with pytest.raises(SystemExit) as exit_:
        rule_check.main([str(config), str(tmp_path / "missing.csv")])
    assert exit_.value.code == 2 and "missing.csv does not exist" in capsys.readouterr().err

"""Slingshot detection (Thilak et al. 2022): loss spikes from a low plateau with a jump of the norm."""

import csv
from pathlib import Path

import pytest

from lit_grok.callbacks import SlingshotDetector
from lit_grok.callbacks.run_result import outcome

ROOT = Path(__file__).resolve().parents[1]


def _feed(detector, curve):
    return [e for e in (detector.observe(step, loss, norm) for step, loss, norm in curve) if e]


def test_a_spike_of_the_loss_with_a_norm_jump_is_one_slingshot_at_its_peak():
    low = [(100 * i, 1e-6, 30.0) for i in range(1, 6)]
    spike = [(600, 1e-3, 29.0), (700, 1e-1, 27.0), (800, 1e-4, 33.0), (900, 1e-6, 31.0)]
    detector = SlingshotDetector(norm="norm/unembed")
    (step, orders, change), = _feed(detector, low + spike + [(1000, 1e-6, 31.0)])
    assert step == 700 and orders == pytest.approx(5.0) and change == pytest.approx((33 - 27) / 30)
    assert detector.summary() == {"slingshots": 1, "events/slingshot_step": 700, "events/slingshot_orders": orders}
    assert "1 slingshot(s), the largest 5.0 orders of magnitude at step 700" in outcome(
        {"step": 1000, **detector.summary()}, 1000)


def test_small_rises_and_spikes_without_a_norm_jump_are_not_slingshots():
    low = [(100 * i, 1e-6, 30.0) for i in range(1, 4)]
    assert not _feed(SlingshotDetector(), low + [(400, 5e-5, 30.0), (500, 1e-6, 30.0)])  # 1.7 orders: noise
    assert not _feed(SlingshotDetector(), low + [(400, 1e-2, 30.1), (500, 1e-6, 30.0)])  # the norm did not move
    unfinished = SlingshotDetector()
    assert not _feed(unfinished, low + [(400, 1e-2, 35.0)])  # still up: counted when it comes down
    state = unfinished.state_dict()
    resumed = SlingshotDetector()
    resumed.load_state_dict(state)
    assert [e[0] for e in _feed(resumed, [(500, 1e-6, 30.0)])] == [400]  # a resumed run finishes the spike


def test_the_p113_oscillating_run_has_a_slingshot_every_1500_steps():
    """The C_mem run at D = 1000, weight decay 4 of docs/results/p113/efficiency.md, which never settled."""
    detector = SlingshotDetector(norm="norm/params")  # the CSV holds the global norm
    with open(ROOT / "docs/results/p113/efficiency_oscillation_D1000_wd4.csv") as f:
        events = _feed(detector, [(int(r["step"]), float(r["train/loss"]), float(r["norm/params"]))
                                  for r in csv.DictReader(f)])
    assert [e[0] for e in events] == [2500, 4400, 6100, 7700, 9200, 10600, 11700]
    assert all(e[1] >= 2.9 and e[2] >= 0.11 for e in events)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_orders must be > 0"):
        SlingshotDetector(min_orders=0)


def test_it_is_a_yaml_switch_and_its_count_reaches_the_runs_result(tiny_args):
    import json

    from lit_grok.cli import main

    cli = main(["fit", *tiny_args, "--trainer.max_steps=100", "--trainer.callbacks+=lit_grok.callbacks.SlingshotDetector",
                "--trainer.callbacks.min_orders=3"])
    detector = next(c for c in cli.trainer.callbacks if isinstance(c, SlingshotDetector))
    assert detector.min_orders == 3 and detector._low is not None  # it watched the validations
    result = json.loads((Path(cli.trainer.log_dir) / "result.json").read_text())
    assert result["slingshots"] == 0 and result["events/slingshot_step"] == -1


def test_the_report_finds_slingshots_in_a_folders_runs_after_the_fact(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from lit_grok.reports import slingshots

    for name, spike in (("calm", 1e-6), ("spiky", 1e-1)):
        with SummaryWriter(str(tmp_path / "sweep" / name / "version_0")) as writer:
            for i, (loss, norm) in enumerate([(1e-6, 30.0)] * 4 + [(spike, 27.0), (1e-6, 32.0)] + [(1e-6, 32.0)] * 2):
                writer.add_scalar("train/loss", loss, 100 * (i + 1) - 1)  # as Lightning logs at step - 1
                writer.add_scalar("norm/unembed", norm, 100 * (i + 1) - 1)
    assert slingshots.report(tmp_path / "sweep") == {"runs": 2, "with_slingshots": 1,
                                                      "csv": str(tmp_path / "sweep" / "slingshots.csv")}
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "sweep" / "slingshots.csv").open())}
    assert rows["spiky"]["steps"] == "500" and rows["calm"]["slingshots"] == "0" and rows["calm"]["last_step"] == "800"

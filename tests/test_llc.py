"""The local learning coefficient callback: its glue around devinterp (a fake estimator here, as devinterp is an
optional extra), its one-line message when devinterp is missing, and a real estimate where it is installed."""

import csv
import math
import sys
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.callbacks import llc as llc_module
from lit_grok.callbacks.llc import LocalLearningCoefficient

NET = dict(d_model=16, n_heads=2, d_mlp=32)


def fit(callbacks, steps=6):
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_size=50)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **NET),
                           optimizer=partial(torch.optim.AdamW, lr=1e-2))
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, check_val_every_n_epoch=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, callbacks=callbacks,
                         num_sanity_val_steps=0)
    trainer.fit(model, data)
    return model, data, trainer


def test_the_llc_callback_hands_devinterp_the_training_pairs_and_leaves_training_alone(monkeypatch):
    seen = []

    class FakeDataset:  # the two calls the callback makes on a HuggingFace Dataset
        @staticmethod
        def from_dict(columns):
            fake = FakeDataset()
            fake.rows = torch.tensor(columns["input_ids"])
            return fake

        def with_format(self, kind):
            return self

    def fake_llc(model, data, observables, *, lr, n_beta, loss_fn, **kwargs):
        torch.manual_seed(12345)  # devinterp seeds the global generator: the callback must restore it
        loss = float(loss_fn(model, data.rows).mean().detach())  # the per-pair loss the chains would sample
        seen.append((len(data.rows), n_beta, lr, loss, kwargs["num_chains"], kwargs["num_draws"]))
        return {"llc_mean": torch.tensor(loss), "llc_std": torch.tensor(0.0)}

    monkeypatch.setattr(llc_module, "import_llc", lambda: (fake_llc, FakeDataset))
    callback = LocalLearningCoefficient(every_n_validations=2, lr=1e-3, num_chains=3, num_draws=7)
    model, data, trainer = fit([callback])
    # validations at steps 2, 4, 6: estimates at the first and third, on the 50 training pairs
    assert [s[0] for s in seen] == [50, 50] and seen[0][1:3] == (50 / math.log(50), 1e-3) and seen[0][4:] == (3, 7)
    rows = data.train_indices
    expected = F.cross_entropy(model.net(data.tokens[rows]).double(), data.answers[rows])
    assert float(trainer.callback_metrics["llc/mean"]) == pytest.approx(float(expected), rel=1e-5)  # at step 6
    plain, _, _ = fit([])  # the same run without the callback: the same weights (random state restored)
    for (name, a), b in zip(model.net.state_dict().items(), plain.net.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_llc_callback_says_how_to_install_devinterp(monkeypatch):
    monkeypatch.setitem(sys.modules, "devinterp", None)
    monkeypatch.setitem(sys.modules, "devinterp.slt.llc", None)
    with pytest.raises(ImportError, match=r'LocalLearningCoefficient needs devinterp .*pip install -e "\.\[llc\]"'):
        LocalLearningCoefficient()
    with pytest.raises(ValueError, match="num_draws must be >= 1"):
        LocalLearningCoefficient(num_draws=0)


def test_a_real_llc_estimate_is_positive_and_finite():
    pytest.importorskip("devinterp", reason="the optional extra: pip install -e '.[llc]'")
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_size=50)
    data.setup("fit")
    net = Transformer(data.vocab_size, data.n_classes, **NET)
    tokens, answers = data.tokens[data.train_indices], data.answers[data.train_indices]
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for _ in range(300):  # to a minimum of the training loss: the LLC is a property of one
        optimizer.zero_grad()
        F.cross_entropy(net(tokens), answers).backward()
        optimizer.step()
    result = LocalLearningCoefficient(num_draws=50).sample(net, tokens, answers)
    mean, std = result["mean"], result["std"]
    n_params = sum(p.numel() for p in net.parameters())
    assert math.isfinite(mean) and 0 < mean < n_params / 2 and std >= 0  # at most half the parameter count
    # the chains' trace, for calibration: 2 chains x 50 draws, whose mean gives the estimate back
    assert [len(chain) for chain in result["trace"]] == [50, 50]
    per_chain = [result["n_beta"] * (sum(c) / len(c) - result["init_loss"]) for c in result["trace"]]
    assert sum(per_chain) / 2 == pytest.approx(mean, rel=1e-4)


def test_the_llc_report_reads_the_estimates_back_beside_held_out_accuracy(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    from lit_grok.reports import llc as report

    writer = SummaryWriter(str(tmp_path))
    for step, (value, acc) in enumerate([(200.0, 0.1), (90.0, 0.5), (20.0, 0.995), (15.0, 1.0)]):
        # TensorBoard holds a validation after s optimiser steps at s - 1
        writer.add_scalar("llc/mean", value, 100 * (step + 1) - 1)
        writer.add_scalar("llc/std", 1.0, 100 * (step + 1) - 1)
        writer.add_scalar("val/acc", acc, 100 * (step + 1) - 1)
    writer.close()
    result = report.report(tmp_path)
    assert result == {"estimates": 4, "peak": {"step": 100, "llc": 200.0}, "last": {"step": 400, "llc": 15.0},
                      "grokked_step_0.99": 300}
    assert (tmp_path / "llc.csv").read_text().splitlines()[1].startswith("100,200,1,0.1,")
    assert (tmp_path / "llc.png").is_file()
    with pytest.raises(SystemExit):
        report.main(report.report, [str(tmp_path / "nothing")])  # not a folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        report.main(report.report, [str(tmp_path / "empty")])
    assert "has no llc/mean" in capsys.readouterr().err


def test_the_calibration_check_tells_a_flat_chain_from_a_climbing_or_diverged_one():
    from lit_grok.callbacks.llc import plateau

    flat = [[1.0 + 0.5 * (1 - math.exp(-t / 3)) for t in range(40)]] * 2  # risen by draw ~10, flat after
    climbing = [[1.0 + 0.01 * t for t in range(40)]]  # still rising at the end
    assert plateau(flat, init_loss=1.0, n_beta=10) < 0.01
    assert plateau(climbing, init_loss=1.0, n_beta=10) == pytest.approx(10 / 34.5, rel=1e-6)  # quarters 20-29 and 30-39
    assert plateau(flat + climbing, 1.0, 10) == plateau(climbing, 1.0, 10)  # the worst chain counts
    assert math.isnan(plateau([[1.0, math.inf] * 10], 1.0, 10))  # a diverged chain
    assert math.isnan(plateau([[1.0] * 7], 1.0, 10))  # too short to tell


def test_the_calibration_report_estimates_each_checkpoint_at_each_step_size(monkeypatch, tmp_path):
    from lit_grok.cli import main
    from lit_grok.reports import llc_calibration

    class FakeDataset:
        @staticmethod
        def from_dict(columns):
            return FakeDataset()

        def with_format(self, kind):
            return self

    def fake_llc(model, data, observables, *, lr, n_beta, num_draws, **kwargs):  # climbs faster at larger lr
        trace = [[2.0 - math.exp(-lr * 100 * t) for t in range(num_draws)]] * kwargs["num_chains"]
        return {"llc_mean": torch.tensor(lr), "llc_std": torch.tensor(0.0), "loss_trace": trace, "init_loss": 1.0}

    monkeypatch.setattr(llc_module, "import_llc", lambda: (fake_llc, FakeDataset))
    config = str(Path(__file__).resolve().parents[1] / "configs/cpu/grok.yaml")
    model = main(["-c", config, "--trainer.logger=false"], run=False).model
    checkpoint = tmp_path / "step7.ckpt"
    torch.save({"state_dict": model.state_dict(), "global_step": 7}, checkpoint)
    llc_calibration.main([config, str(tmp_path / "out"), str(checkpoint), "--lr", "1e-4", "1e-2", "--draws", "40"])
    rows = list(csv.DictReader((tmp_path / "out" / "llc_calibration.csv").open()))
    assert [(r["step"], float(r["lr"]), float(r["llc_mean"])) for r in rows] == [("7", 1e-4, 1e-4), ("7", 1e-2, 1e-2)]
    assert float(rows[0]["late_rise"]) > 0.05 > float(rows[1]["late_rise"])  # the small step has not flattened
    assert (tmp_path / "out" / "llc_calibration.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        llc_calibration.main([config, str(tmp_path / "out"), str(tmp_path / "missing.ckpt")])

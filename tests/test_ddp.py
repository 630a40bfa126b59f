"""Two CPU processes (gloo, fork) against one: full-batch DDP must be exact, not just run."""

import sys

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.callbacks import CircuitEfficiency, DatasetSwap
from functools import partial

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="ddp_fork needs fork"), pytest.mark.timeout(120)]

STEPS = 30


def fit(devices: int, train_size: int, callbacks=(), batch_size=None, logger=False, **module):
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 13, train_size=train_size, batch_size=batch_size)
    model = GrokkingModule(data.vocab_size, data.n_classes,
                           network=partial(Transformer, d_model=32, n_heads=4, d_mlp=64),
                           # plain SGD: unlike Adam it is not scale-invariant, so a mis-weighted loss shows
                           optimizer=partial(torch.optim.SGD, lr=0.1, weight_decay=1e-2), **module)
    strategy = "ddp_fork" if devices > 1 else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=STEPS, max_epochs=-1,
                         check_val_every_n_epoch=10, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(model, data)
    return model, {k: float(v) for k, v in trainer.callback_metrics.items()}


# float32 sums split over two ranks round differently; over 30 SGD steps the parameters agree to ~1e-6.
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("train_size", [80, 81, 168], ids=["even", "odd", "one-held-out-pair"])
def test_two_processes_equal_one(train_size):
    one, m1 = fit(1, train_size, [CircuitEfficiency()])
    two, m2 = fit(2, train_size, [CircuitEfficiency()])
    for p, q in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(p, q, **TOL)
    for name in ("val/loss", "val/acc", "train/loss", "train/acc", "norm/params", "efficiency/val"):
        assert m2[name] == pytest.approx(m1[name], rel=1e-4, abs=1e-6), name


def test_minibatches_are_exact_under_ddp():
    one, _ = fit(1, 81, batch_size=20)
    two, _ = fit(2, 81, batch_size=20)
    for p, q in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(p, q, **TOL)


def test_dataset_swap_from_every_pair_draws_the_same_subset_on_both_ranks():
    # the ungrokking protocol: no held-out set until the swap makes the removed pairs the validation set
    one, m1 = fit(1, 169, [DatasetSwap(new_size=31, at_step=10), CircuitEfficiency()])
    two, m2 = fit(2, 169, [DatasetSwap(new_size=31, at_step=10), CircuitEfficiency()])
    assert m2["data/train_size"] == m1["data/train_size"] == 31
    assert m2["val/acc"] == pytest.approx(m1["val/acc"], abs=1e-6)
    for p, q in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(p, q, **TOL)


def test_rank_zero_writes_the_curves_and_grok_events_under_ddp(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    from lit_grok.callbacks import GrokEvents, TrainingCurves

    logger = TensorBoardLogger(tmp_path, name="ddp", version=0)
    fit(2, 81, [TrainingCurves(), GrokEvents()], logger=logger)
    assert (tmp_path / "ddp" / "version_0" / "curves.png").exists()
    assert len(list((tmp_path / "ddp" / "version_0").glob("events.*"))) == 1  # one writer: rank 0


def test_gradient_filters_and_stablemax_are_exact_under_ddp():
    from lit_grok.callbacks import ProgressMeasures
    from lit_grok.optim import GrokfastEMA, OrthogonalGradient

    settings = dict(loss_function="stablemax")
    one, m1 = fit(1, 81, [ProgressMeasures()], grad_filters=[GrokfastEMA(), OrthogonalGradient()], **settings)
    two, m2 = fit(2, 81, [ProgressMeasures()], grad_filters=[GrokfastEMA(), OrthogonalGradient()], **settings)
    for p, q in zip(one.parameters(), two.parameters()):  # filtered after the all-reduce: the same on each rank
        torch.testing.assert_close(p, q, **TOL)
    for name in ("train/loss", "progress/restricted_loss", "fourier/n_key_freqs"):
        assert m2[name] == pytest.approx(m1[name], rel=1e-4, abs=1e-6), name

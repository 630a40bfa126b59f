"""A diverging run stops with one line, keeps its last good checkpoint, and does not take a sweep or an
ensemble down with it."""

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.callbacks import Diverged, Members, StopOnDivergence, TrainingCurves
from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule

ROOT = Path(__file__).resolve().parents[1]
NET = partial(Transformer, d_model=16, n_heads=2, d_mlp=32)


class PoisonAt(pl.Callback):
    """Makes the run diverge: sets a weight to NaN after ``step`` optimiser steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def event_steps(self) -> list[int]:
        return [self.step]  # the step engine ends a batch there

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


def test_a_diverging_run_stops_at_the_next_validation_with_one_message(tmp_path):
    data = ModularArithmeticDataModule("add", 11, train_size=60)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=NET)
    guard, curves = StopOnDivergence(), TrainingCurves()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=10, save_last=True,
                                              save_on_exception=True)
    trainer = pl.Trainer(max_steps=100, max_epochs=-1, check_val_every_n_epoch=5, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[PoisonAt(12), guard, curves, checkpoint])
    with pytest.raises(Diverged, match=r"training diverged at step 15: train/loss is nan, norm/params is nan.*"
                                       r"lower learning rate.*last.ckpt holds the last finite weights\.$") as error:
        trainer.fit(model, data)
    assert error.value.step == 15 and guard.summary() == {"diverged": True, "events/diverged_step": 15}
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 10  # the exception did not overwrite it with NaN weights
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert curves.figure() is not None  # non-finite points are left out of the figure


def test_the_command_line_exits_non_zero_with_one_line(tmp_path):
    net = "--model.init_args.network.init_args."
    result = subprocess.run(
        [sys.executable, "-m", "lit_grok", "fit", "-c", str(ROOT / "configs/cpu/grok.yaml"),
         "--data.init_args.modulus=11", f"{net}d_model=16", f"{net}n_heads=2", f"{net}d_mlp=32",
         "--model.init_args.optimizer.init_args.lr=1.0e+6", "--model.init_args.loss_dtype=float32",
         "--trainer.max_steps=200", "--trainer.check_val_every_n_epoch=20", "--trainer.enable_progress_bar=false",
         f"--trainer.logger.init_args.save_dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged at step 20: ") and "lower learning rate" in last
    assert last.endswith("(loss_dtype).") and "checkpoint" not in last  # the config saves none: nothing promised


def test_an_ensemble_freezes_a_diverged_member_and_the_others_go_on():
    data = EnsembleDataModule("add", 11, train_sizes=[60, 60])
    model = EnsembleModule(data.vocab_size, data.n_classes, 2, network=partial(Transformer, d_model=16, n_heads=2, d_mlp=32))

    class PoisonMember(pl.Callback):
        def event_steps(self) -> list[int]:
            return [7]

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            if trainer.global_step == 7:
                with torch.no_grad():
                    pl_module.net.embed[0, 0, 0] = float("nan")  # member 0 only

    guards = [StopOnDivergence(), StopOnDivergence()]
    members = Members([[guards[0]], [guards[1]]])
    trainer = pl.Trainer(max_steps=30, max_epochs=-1, check_val_every_n_epoch=5, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[PoisonMember(), members])
    trainer.fit(model, data)
    assert guards[0].diverged_step == 10 and guards[1].diverged_step is None
    assert members.stopped_steps == [10, None] and trainer.global_step == 30
    assert torch.isfinite(model.net.embed[1]).all()


def test_a_sweep_records_a_diverged_run_and_goes_on(tmp_path):
    import csv

    from lit_grok.sweep import sweep

    tiny = {"data.init_args.modulus": 11, "trainer.max_steps": 40, "trainer.check_val_every_n_epoch": 10,
            "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32,
            "model.init_args.loss_dtype": "float32", "data.init_args.train_size": 60}
    grids = [{"model.init_args.optimizer.init_args.lr": [1.0e+6, 3.0e-3]}]
    summary = sweep(str(ROOT / "configs/cpu/efficiency_base.yaml"), "div", grids, tiny, save_dir=str(tmp_path),
                    max_members=1)
    rows = {float(r["model.init_args.optimizer.init_args.lr"]): r for r in csv.DictReader(summary.open())}
    assert rows[1.0e+6]["diverged"] == "True" and "training diverged at step" in rows[1.0e+6]["error"]
    assert rows[3.0e-3]["diverged"] == "False" and rows[3.0e-3]["step"] == "40"

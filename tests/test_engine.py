"""The step engine (lit_grok.engine): many optimiser steps per Lightning batch, bit-identical to one."""

import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from lit_grok import GrokkingModule, ModularArithmeticDataModule, engine
from lit_grok.callbacks import DatasetSwap, ModelCheckpoint
from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule
from lit_grok.optim import GrokfastEMA, fused_where_possible


class Batches(pl.Callback):
    """The step at which each Lightning batch starts, and the steps at which validations run."""

    def __init__(self) -> None:
        self.starts, self.validations = [], []

    def on_train_batch_start(self, trainer, *args) -> None:
        self.starts.append(trainer.global_step)

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validations.append(trainer.global_step)


def fit(tmp_path, steps_per_batch, max_steps=30, ckpt_path=None, extra=()):
    """P=11, D=80, a validation every 7 steps, a swap to 50 pairs at step 12, a save every 10 steps, a
    warm-up and a Grokfast filter: every step-keyed event inside one short run."""
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_size=80)
    model = GrokkingModule(data.vocab_size, data.n_classes, warmup_steps=5, grad_filters=[GrokfastEMA()])
    batches = Batches()
    callbacks = [batches, DatasetSwap(new_size=50, at_step=12),
                 ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=10, save_top_k=-1), *extra]
    trainer = pl.Trainer(max_steps=max_steps, max_epochs=-1, check_val_every_n_epoch=7, num_sanity_val_steps=0,
                         logger=CSVLogger(tmp_path, name="", version=""), enable_progress_bar=False,
                         enable_model_summary=False, callbacks=callbacks)
    if steps_per_batch is None:
        trainer.fit(model, data, ckpt_path=ckpt_path)
    else:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine, "MAX_STEPS_PER_BATCH", steps_per_batch)
            trainer.fit(model, data, ckpt_path=ckpt_path)
    return trainer, model, batches


def logged(tmp_path, name):
    with open(tmp_path / "metrics.csv") as f:
        return [(int(row["step"]), float(row[name])) for row in csv.DictReader(f) if row.get(name)]


def test_many_steps_per_batch_are_bit_identical_to_one_and_keep_every_step_keyed_event(tmp_path):
    _, one, one_batches = fit(tmp_path / "one", 1)
    trainer, many, batches = fit(tmp_path / "many", None)
    for p, q in zip(one.parameters(), many.parameters()):
        assert torch.equal(p, q)
    assert trainer.global_step == 30
    # a batch ends at each validation (7, 14, ...), save (10, 20), the swap (12) and the end (30)
    assert batches.starts == [0, 7, 10, 12, 14, 20, 21, 28]
    assert one_batches.starts == list(range(30))
    assert batches.validations == one_batches.validations == [7, 14, 21, 28]
    # metrics are logged against the same steps, and the saves are the same steps' states
    assert logged(tmp_path / "many", "val/acc") == logged(tmp_path / "one", "val/acc")
    assert logged(tmp_path / "many", "data/train_size")[-1][1] == 50
    assert sorted(p.name for p in (tmp_path / "many/checkpoints").iterdir()) == ["step=10.ckpt", "step=20.ckpt",
                                                                                 "step=30.ckpt"]
    for name in ("step=10.ckpt", "step=20.ckpt"):
        a, b = (torch.load(tmp_path / run / "checkpoints" / name, weights_only=False) for run in ("one", "many"))
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        assert a["global_step"] == b["global_step"]


class AfterBackward(pl.Callback):
    """A per-step hook: the engine must take Lightning's path, so that it is called at every step."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls += 1


def test_direct_steps_are_bit_identical_to_lightnings_and_give_way_to_per_step_hooks(tmp_path):
    trainer, direct, _ = fit(tmp_path / "direct", None)  # with a Grokfast filter: the module's hook runs in both
    hook = AfterBackward()
    _, dispatched, _ = fit(tmp_path / "dispatched", None, extra=[hook])
    assert direct._direct and not dispatched._direct and hook.calls == 30
    for p, q in zip(direct.parameters(), dispatched.parameters()):
        assert torch.equal(p, q)
    assert trainer.global_step == 30 and trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.total.ready == 30


@pytest.mark.parametrize("settings", [dict(precision="bf16-mixed"), dict(strategy="ddp", devices=2), dict(profiler="simple"),
                                      dict(callbacks=[AfterBackward()])], ids=["mixed", "ddp", "profiler", "hook"])
def test_anything_that_watches_or_changes_a_step_takes_lightnings_path(settings):
    model = GrokkingModule(13, 11)
    assert engine.direct_steps(pl.Trainer(accelerator="cpu", logger=False), model)
    assert not engine.direct_steps(pl.Trainer(**{"accelerator": "cpu", "logger": False, **settings}), model)


@pytest.mark.parametrize("resume_step", [10, 20], ids=["before-swap", "after-swap"])
def test_a_resumed_engine_run_continues_bit_identically(tmp_path, resume_step):
    _, full, full_batches = fit(tmp_path / "full", None)
    ckpt = tmp_path / "full/checkpoints" / f"step={resume_step}.ckpt"
    _, resumed, batches = fit(tmp_path / "resumed", None, ckpt_path=str(ckpt))
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert batches.validations == [s for s in full_batches.validations if s > resume_step]


def test_a_checkpoint_of_one_step_per_batch_resumes_under_the_engine(tmp_path):
    _, full, _ = fit(tmp_path / "full", 1)
    _, resumed, batches = fit(tmp_path / "resumed", None, ckpt_path=str(tmp_path / "full/checkpoints/step=10.ckpt"))
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert batches.validations == [14, 21, 28]


def test_max_epochs_counts_optimiser_steps_in_full_batch(tmp_path):
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_size=80)
    trainer = pl.Trainer(max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(GrokkingModule(data.vocab_size, data.n_classes), data)
    assert trainer.global_step == 15


def test_minibatches_keep_one_step_per_batch_and_epochs_as_passes(tmp_path):
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_size=80, batch_size=20)
    batches = Batches()
    trainer = pl.Trainer(max_epochs=3, check_val_every_n_epoch=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[batches], default_root_dir=tmp_path)
    trainer.fit(GrokkingModule(data.vocab_size, data.n_classes), data)
    assert trainer.global_step == 12 and batches.starts == list(range(12)) and batches.validations == [8]


def test_ensembles_take_many_steps_per_batch_bit_identically(tmp_path):
    def run(steps_per_batch):
        data = EnsembleDataModule("add", 11, train_sizes=[80, 60], data_seeds=[0, 1])
        model = EnsembleModule(data.vocab_size, data.n_classes, 2)
        batches = Batches()
        trainer = pl.Trainer(max_steps=25, max_epochs=-1, check_val_every_n_epoch=10, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, callbacks=[batches], default_root_dir=tmp_path)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine, "MAX_STEPS_PER_BATCH", steps_per_batch)
            trainer.fit(model, data)
        return model, batches

    one, _ = run(1)
    many, batches = run(100)
    assert batches.starts == [0, 10, 20] and batches.validations == [10, 20]
    for p, q in zip(one.parameters(), many.parameters()):
        assert torch.equal(p, q)


def test_adamw_is_fused_unless_the_config_chose_an_implementation():
    params = [torch.nn.Parameter(torch.randn(4, 3))]
    assert fused_where_possible(torch.optim.AdamW(params, lr=1e-3, weight_decay=1.0)).defaults["fused"] is None
    fused = fused_where_possible(torch.optim.AdamW(params, lr=2e-3, weight_decay=0.5))
    assert fused.param_groups[0]["fused"] is True
    assert (fused.param_groups[0]["lr"], fused.param_groups[0]["weight_decay"]) == (2e-3, 0.5)
    chosen = torch.optim.AdamW(params, foreach=True)
    assert fused_where_possible(chosen) is chosen
    sgd = torch.optim.SGD(params, lr=0.1)
    assert fused_where_possible(sgd) is sgd


def test_fused_adamw_follows_torchs_adamw_to_float_rounding():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(50, 20))
    b = torch.nn.Parameter(a.detach().clone())
    plain = torch.optim.AdamW([a], lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0)
    fused = fused_where_possible(torch.optim.AdamW([b], lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0))
    for _ in range(50):
        grad = torch.randn(50, 20)
        a.grad, b.grad = grad.clone(), grad.clone()
        plain.step()
        fused.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(a.detach(), torch.zeros(50, 20))


class InterruptAt(pl.Callback):
    """Ctrl-C inside a batch of the engine, before the optimiser step that would make ``step`` + 1."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_inside_a_batch_saves_the_last_step_and_resumes_bit_identically(tmp_path):
    _, full, full_batches = fit(tmp_path / "full", None)
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_size=80)
    model = GrokkingModule(data.vocab_size, data.n_classes, warmup_steps=5, grad_filters=[GrokfastEMA()])
    saver = ModelCheckpoint(dirpath=tmp_path / "interrupted", save_last=True, save_top_k=0, save_on_exception=True)
    trainer = pl.Trainer(max_steps=30, max_epochs=-1, check_val_every_n_epoch=7, num_sanity_val_steps=0,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[InterruptAt(17), DatasetSwap(new_size=50, at_step=12), saver])
    with pytest.raises(SystemExit):  # Lightning's answer to Ctrl-C, after the exception hooks
        trainer.fit(model, data)
    last = tmp_path / "interrupted/last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 17  # between step 14's and 21's validations
    _, resumed, batches = fit(tmp_path / "resumed", None, ckpt_path=str(last))
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert batches.starts[0] == 17 and batches.validations == [21, 28]
    assert logged(tmp_path / "resumed", "val/acc") == [(s, a) for s, a in logged(tmp_path / "full", "val/acc") if s > 17]

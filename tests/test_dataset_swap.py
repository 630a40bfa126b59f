import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule
from lit_grok.callbacks import DatasetSwap, PlateauDetector
from lit_grok.callbacks.dataset_swap import nested_subset
from lit_grok.cli import main
from tests.conftest import checkpoint_at

ROOT = Path(__file__).resolve().parents[1]


class BatchSizes(pl.Callback):
    """The training-set size of every optimiser step (a Lightning batch of the step engine holds several)."""

    def __init__(self):
        self.starts = []  # (step at the batch's start, its size)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append((trainer.global_step, len(batch[1])))

    def on_train_end(self, trainer, pl_module):
        self.end = trainer.global_step

    @property
    def sizes(self) -> list[int]:
        ends = [step for step, _ in self.starts[1:]] + [self.end]
        return [size for (start, size), end in zip(self.starts, ends) for _ in range(end - start)]


def fit(callbacks, max_steps, tmp_path, ckpt_path=None, **trainer_kwargs):
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_size=80)
    model = GrokkingModule(data.vocab_size, data.n_classes)
    trainer = pl.Trainer(max_steps=max_steps, max_epochs=-1, check_val_every_n_epoch=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=callbacks, **trainer_kwargs)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return trainer, model, data


def test_nested_subset_is_a_seeded_subset():
    train = torch.arange(100, 200)
    a, b = nested_subset(train, 30, seed=1), nested_subset(train, 30, seed=1)
    assert torch.equal(a, b) and len(a) == 30 and set(a.tolist()) <= set(train.tolist())
    assert not torch.equal(a, nested_subset(train, 30, seed=2))
    assert set(nested_subset(a, 10, seed=3).tolist()) <= set(a.tolist())  # nested again


def test_swap_at_a_step_changes_the_batch_once_and_validates_on_the_complement(tmp_path):
    sizes = BatchSizes()
    swap = DatasetSwap(new_size=30, at_step=5)
    trainer, _, data = fit([sizes, swap], 10, tmp_path, enable_checkpointing=False)
    assert sizes.sizes == [80] * 5 + [30] * 5
    assert swap.swap_step == 5 and data.train_size == 30 and len(data.val_indices) == 121 - 30
    assert set(data.train_indices.tolist()).isdisjoint(data.val_indices.tolist())
    assert trainer.callback_metrics["data/train_size"] == 30


def test_swap_can_keep_the_original_validation_set(tmp_path):
    data_before = ModularArithmeticDataModule("add", 11, train_size=80)
    _, _, data = fit([DatasetSwap(new_fraction=0.5, at_step=2, validation="original")], 4, tmp_path,
                     enable_checkpointing=False)
    assert data.train_size == 40 and torch.equal(data.val_indices, data_before.val_indices)


class ValAcc(pl.Callback):
    """Records (step, val/acc) at every validation; with ``swap``, stops the run two validations after it."""

    def __init__(self, swap=None) -> None:
        self.seen, self.swap = [], swap

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
            self.seen.append((trainer.global_step, float(trainer.callback_metrics["val/acc"])))
            swapped = [s for s, _ in self.seen if self.swap and self.swap.swap_step is not None and s > self.swap.swap_step]
            trainer.should_stop = trainer.should_stop or len(swapped) >= 2


def test_swap_once_grokked(tiny_args):
    cli = main([*tiny_args, "--trainer.max_steps=1500", "--trainer.check_val_every_n_epoch=25"], run=False)
    sizes, swap = BatchSizes(), DatasetSwap(new_fraction=0.5, after_grokked=2)
    watch = ValAcc(swap)  # the run ends two validations after the swap: nothing later is asserted
    cli.trainer.callbacks.extend([sizes, swap, watch])
    cli.trainer.fit(cli.model, cli.datamodule)
    # the swap comes at the second validation in a row with val/acc >= 0.99, and not before
    streaks = [s for (s, a), (_, prev) in zip(watch.seen[1:], watch.seen) if a >= 0.99 and prev >= 0.99]
    assert swap.swap_step == streaks[0] and 0 < swap.swap_step < 1500
    changes = [i for i in range(1, len(sizes.sizes)) if sizes.sizes[i] != sizes.sizes[i - 1]]
    assert changes == [swap.swap_step] and sizes.sizes[-1] == 185 and len(sizes.sizes) == swap.swap_step + 50


@pytest.mark.parametrize("resume_step", [3, 9], ids=["before-swap", "after-swap"])
def test_resume_before_or_after_the_swap_continues_exactly(tmp_path, resume_step):
    checkpoint = pl.callbacks.ModelCheckpoint(every_n_train_steps=3, save_top_k=-1)
    _, full_model, full_data = fit([DatasetSwap(new_size=30, at_step=6), checkpoint], 12, tmp_path / "full")
    ckpt = checkpoint_at(checkpoint.dirpath, resume_step)
    sizes, swap = BatchSizes(), DatasetSwap(new_size=30, at_step=6)
    _, model, data = fit([sizes, swap], 12, tmp_path / "resumed", ckpt_path=str(ckpt), enable_checkpointing=False)
    assert swap.swap_step == 6 and torch.equal(data.train_indices, full_data.train_indices)
    assert sizes.sizes == [80] * max(0, 6 - resume_step) + [30] * (12 - max(6, resume_step))
    for p, q in zip(full_model.parameters(), model.parameters()):
        assert torch.equal(p, q)


def test_ungrok_a_trained_checkpoint_from_its_first_step(tmp_path):
    checkpoint = pl.callbacks.ModelCheckpoint(every_n_train_steps=8, save_top_k=-1)
    fit([checkpoint], 8, tmp_path / "pretrain")
    sizes, swap = BatchSizes(), DatasetSwap(new_size=30, at_step=0)
    _, _, data = fit([sizes, swap], 12, tmp_path / "ungrok", ckpt_path=str(checkpoint_at(checkpoint.dirpath, 8)),
                     enable_checkpointing=False)
    assert swap.swap_step == 8 and sizes.sizes == [30] * 4 and data.train_size == 30


@pytest.mark.parametrize("init_args, message", [
    ({"new_size": 100000, "at_step": 5}, "DatasetSwap new_size 100000 is larger than the training set"),
    ({"new_size": 0, "at_step": 5}, "new_size must be >= 1"),
    ({"new_size": 10}, "give exactly one trigger"),
    ({"new_fraction": 1.5, "at_step": 5}, "new_fraction must lie strictly between 0 and 1"),
])
def test_bad_new_size_is_rejected_when_the_config_is_built(tiny_args, capsys, init_args, message):
    swap = json.dumps({"class_path": "lit_grok.callbacks.DatasetSwap", "init_args": init_args})
    with pytest.raises(SystemExit):
        main([*tiny_args, f"--trainer.callbacks+={swap}"], run=False)
    assert message in capsys.readouterr().err


def feed(detector, script):
    for step, (train, val) in enumerate(script):
        detector.observe(step * 100, train, val)
    detector.close()
    return detector.plateaus


def test_plateau_detection_finds_a_middling_plateau_and_marks_it_transient():
    script = [(0.5, 0.0)] * 3 + [(1.0, 0.02)] * 5 + [(1.0, 0.55 + 0.01 * (i % 3)) for i in range(30)] + [(1.0, 1.0)] * 5
    plateaus = feed(PlateauDetector(min_steps=2000), script)
    assert len(plateaus) == 1
    assert plateaus[0]["start"] == 800 and plateaus[0]["end"] == 3700
    assert plateaus[0]["level"] == pytest.approx(0.56, abs=0.01) and plateaus[0]["transient"]


def test_plateau_detection_ignores_short_low_or_pre_memorisation_stretches():
    short = [(1.0, 0.5)] * 10 + [(1.0, 0.9)] * 3
    assert feed(PlateauDetector(min_steps=2000), short) == []
    low = [(1.0, 0.02)] * 40  # not middling: no generalisation at all
    assert feed(PlateauDetector(min_steps=2000), low) == []
    before = [(0.5, 0.5)] * 40  # train not memorised yet
    assert feed(PlateauDetector(min_steps=2000), before) == []


def test_two_plateaus_and_an_ongoing_one_at_the_end():
    script = [(1.0, 0.3)] * 25 + [(1.0, 0.6)] * 25
    plateaus = feed(PlateauDetector(min_steps=2000), script)
    assert [round(p["level"], 2) for p in plateaus] == [0.3, 0.6] and not any(p["transient"] for p in plateaus)


def test_two_swaps_in_one_run_keep_their_own_checkpoint_state(tmp_path):
    """Callbacks of one class are keyed by their settings (as Lightning keys callback states), so a resume
    restores each swap's own step instead of one overwriting the other."""
    first, second = DatasetSwap(new_size=60, at_step=4), DatasetSwap(new_size=30, at_step=8)
    assert first.state_key != second.state_key
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=10)
    fit([first, second, checkpoint], 10, None, enable_checkpointing=True)
    states = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    assert states[first.state_key]["swap_step"] == 4 and states[second.state_key]["swap_step"] == 8


def test_reset_optimizer_clears_adamw_state_at_the_swap_in_a_single_run(tmp_path):
    kept, model_kept, _ = fit([DatasetSwap(new_size=40, at_step=6)], 10, tmp_path, enable_checkpointing=False)
    reset, model_reset, data = fit([DatasetSwap(new_size=40, at_step=6, reset_optimizer=True)], 10, tmp_path,
                                   enable_checkpointing=False)
    states = [next(iter(t.optimizers[0].state.values())) for t in (kept, reset)]
    assert float(states[0]["step"]) == 10 and float(states[1]["step"]) == 4  # moments restarted after step 6
    assert data.train_size == 40
    assert not torch.equal(next(model_kept.parameters()), next(model_reset.parameters()))

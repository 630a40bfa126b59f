"""The ungrokking protocol's pieces: training on every pair, branching runs from a checkpoint, convergence."""

import math
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.callbacks import (CircuitEfficiency, GrokEvents, PlateauDetector, StopOnConvergence,
                                TrainingCurves)
from lit_grok.cli import main
from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule

ROOT = Path(__file__).resolve().parents[1]
NET = partial(Transformer, d_model=16, n_heads=2, d_mlp=32)


def trainer(steps: int, callbacks=(), **kwargs) -> pl.Trainer:
    kwargs = {"logger": False, "enable_checkpointing": False, **kwargs}
    return pl.Trainer(max_steps=steps, max_epochs=-1, check_val_every_n_epoch=5, num_sanity_val_steps=0,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks), **kwargs)


def pretrained(tmp_path: Path, steps: int = 20) -> Path:
    """A tiny network trained on every pair of add mod 11, and its checkpoint."""
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_fraction=1.0)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=NET)
    t = trainer(steps, default_root_dir=tmp_path, enable_checkpointing=True)
    t.fit(model, data)
    path = tmp_path / "pre.ckpt"
    t.save_checkpoint(path)
    return path


def test_every_pair_trains_without_a_held_out_set_and_every_callback_copes():
    data = ModularArithmeticDataModule("add", 11, train_fraction=1.0)
    assert data.train_size == 121 and len(data.val_indices) == 0
    assert ModularArithmeticDataModule("add", 11, train_size=121).train_size == 121
    curves, events, plateaus = TrainingCurves(), GrokEvents(), PlateauDetector(min_steps=0)
    stop = StopOnConvergence(window=2, rel_tol=10.0)  # converges at the second validation
    model = GrokkingModule(data.vocab_size, data.n_classes, network=NET)
    t = trainer(40, [CircuitEfficiency(), curves, events, plateaus, stop])
    t.fit(model, data)
    metrics = t.callback_metrics
    assert not any(name.startswith("val/") or "_val" in name for name in metrics)
    assert {"train/loss", "train/acc", "norm/params", "efficiency/train", "circuits/gen_fraction"} <= set(metrics)
    assert metrics["data/train_size"] == 121
    assert stop.converged_step == 10 and t.global_step == 10
    assert curves.history["val/acc"] == [] and len(curves.history["train/acc"]) == 2
    assert events.grokked_step is None and plateaus.memorised_step is None
    assert curves.figure() is not None


def test_an_ensemble_member_on_every_pair_has_no_val_metrics_and_the_others_do():
    data = EnsembleDataModule("add", 11, train_sizes=[121, 60])
    model = EnsembleModule(data.vocab_size, data.n_classes, data.n_members, network=NET)
    from lit_grok.callbacks import Members
    members = Members()
    t = trainer(10, [members])
    t.fit(model, data)
    first, second = (view.callback_metrics for view in members.views)
    assert "val/acc" not in first and "train/acc" in first
    assert "val/acc" in second and 0 <= float(second["val/acc"]) <= 1
    assert float(t.callback_metrics["members/val_acc"]) == pytest.approx(float(second["val/acc"]))
    every = EnsembleDataModule("add", 11, train_sizes=[121, 121])
    t = trainer(10, [Members()])
    t.fit(EnsembleModule(every.vocab_size, every.n_classes, 2, network=NET), every)
    assert "members/val_acc" not in t.callback_metrics and "members/train_acc" in t.callback_metrics


def test_a_branch_starts_from_the_weights_with_a_fresh_step_and_optimiser(tmp_path):
    path = pretrained(tmp_path)
    saved = torch.load(path, weights_only=True)
    data = ModularArithmeticDataModule("add", 11, train_size=40, data_seed=3)
    branch = GrokkingModule(data.vocab_size, data.n_classes, network=NET, init_from=str(path),
                            optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=2.0))
    for name, value in branch.net.state_dict().items():
        assert torch.equal(value, saved["state_dict"][f"net.{name}"])
    optimizer = branch.configure_optimizers()
    assert optimizer.state == {} and optimizer.param_groups[0]["weight_decay"] == 2.0
    t = trainer(5)
    t.fit(branch, data)
    assert t.global_step == 5 and len(data.val_indices) == 121 - 40


def test_a_branch_can_carry_the_optimiser_state_but_keeps_its_own_settings(tmp_path):
    path = pretrained(tmp_path)
    saved = torch.load(path, weights_only=True)["optimizer_states"][0]
    data = ModularArithmeticDataModule("add", 11, train_size=40)
    branch = GrokkingModule(data.vocab_size, data.n_classes, network=NET, init_from=str(path), init_optimizer=True,
                            optimizer=partial(torch.optim.AdamW, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.5))
    optimizer = branch.configure_optimizers()
    first = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert torch.equal(first["exp_avg"], saved["state"][0]["exp_avg"]) and float(first["step"]) == 20
    assert optimizer.param_groups[0]["weight_decay"] == 0.5 and saved["param_groups"][0]["weight_decay"] == 1.0
    with pytest.raises(ValueError, match="init_optimizer needs init_from"):
        GrokkingModule(data.vocab_size, data.n_classes, init_optimizer=True)


def test_ensemble_members_branch_from_one_network(tmp_path):
    path = pretrained(tmp_path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    model = EnsembleModule(12, 11, 3, network=NET, init_from=str(path),
                           weight_decay=[0.5, 1.0, 2.0])
    for k in range(3):
        member = model.member_net(k).state_dict()
        assert all(torch.equal(member[name], saved[f"net.{name}"]) for name in member)
    single = [GrokkingModule(12, 11, network=NET, init_from=str(path), init_optimizer=True)]
    with pytest.raises(ValueError, match="init_optimizer needs single runs"):
        EnsembleModule.from_modules(single * 2)


def branch_args(tmp_path: Path, path: Path, *change: str) -> list[str]:
    net = "--model.init_args.network.init_args."
    return ["-c", str(ROOT / "configs/cpu/ungrok.yaml"), f"--model.init_args.init_from={path}",
            "--data.init_args.modulus=11", f"{net}d_model=16", f"{net}n_heads=2", f"{net}d_mlp=32",
            "--trainer.max_steps=1", f"--trainer.logger.init_args.save_dir={tmp_path}", *change]


@pytest.mark.parametrize("change, message", [
    ("--model.init_args.network.init_args.d_model=32", "differs from the config's: embed.weight is [12, 16] there"),
    ("--data.init_args.operation=sub", "was trained on another task (operation='add' there, operation='sub' in the config)"),
])
def test_a_branch_of_another_shape_or_task_is_one_parser_error(tmp_path, change, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(branch_args(tmp_path, pretrained(tmp_path, steps=5), change), run=False)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


def test_a_branch_from_the_command_line_is_a_new_run_at_step_zero(tmp_path):
    path = pretrained(tmp_path)
    net = "--model.init_args.network.init_args."
    cli = main(["fit", "-c", str(ROOT / "configs/cpu/ungrok.yaml"), f"--model.init_args.init_from={path}",
                "--data.init_args.modulus=11", "--data.init_args.train_size=30", f"{net}d_model=16",
                f"{net}n_heads=2", f"{net}d_mlp=32", "--trainer.max_steps=10", "--trainer.check_val_every_n_epoch=5",
                f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert cli.trainer.global_step == 10 and cli.datamodule.train_size == 30
    assert Path(cli.trainer.log_dir).name == "version_0"
    assert f"init_from: {path}" in (Path(cli.trainer.log_dir) / "config.yaml").read_text()  # reproducible


def test_convergence_with_an_absolute_tolerance_and_a_minimum_step():
    class Fake:
        def __init__(self):
            self.sanity_checking, self.loggers, self.should_stop = False, [], False
            self.global_step, self.callback_metrics = 0, {}

    def feed(stop, values):
        fake = Fake()
        for step, (acc, norm) in enumerate(values, 1):
            fake.global_step, fake.callback_metrics = step * 10, {"val/acc": torch.tensor(acc),
                                                                   "norm/params": torch.tensor(norm)}
            stop.on_validation_end(fake, None)
            if fake.should_stop:
                return fake.global_step
        return None

    # an accuracy near 0 wobbling by one pair in a hundred: relative to 0.02 that is movement, absolutely not
    values = [(0.02, 10.0), (0.03, 10.0), (0.02, 10.0), (0.03, 10.0), (0.02, 10.0)]
    assert feed(StopOnConvergence(("val/acc", "norm/params"), rel_tol=1e-3, window=3), values) is None
    assert feed(StopOnConvergence(("val/acc", "norm/params"), rel_tol=1e-3, window=3,
                                  abs_tol={"val/acc": 0.011}), values) == 30
    assert feed(StopOnConvergence(("val/acc", "norm/params"), rel_tol=1e-3, window=3,
                                  abs_tol={"val/acc": 0.011}, min_steps=45), values) == 50
    with pytest.raises(ValueError, match="not monitored"):
        StopOnConvergence(("norm/params",), abs_tol={"val/acc": 0.01})

    # held-out accuracy flickering by 0.02 around 0.65 (the P=113 branch at weight decay 16, D' = 763): the raw
    # spread never settles within 0.01; the running mean over 2 or 3 validations does (once the window and the
    # k - 1 validations before it are in), where a drift does not
    flicker = [(0.64 if i % 2 else 0.66, 10.0) for i in range(20)]
    drift = [(0.65 - 0.003 * i, 10.0) for i in range(20)]  # 0.03 per 10 validations
    rule = dict(monitor=("val/acc", "norm/params"), window=10, abs_tol={"val/acc": 0.01})
    assert feed(StopOnConvergence(**rule), flicker) is None
    assert feed(StopOnConvergence(**rule, smooth=2), flicker) == 110
    assert feed(StopOnConvergence(**rule, smooth=3), flicker) == 120
    assert feed(StopOnConvergence(**rule, smooth=3), drift) is None
    # slingshot cycles (P=113 subtraction, D' = 1600: the norm swings between 34 and 38.5 every ~6 validations):
    # a running mean over whole cycles settles; a slow drift shows over the whole window however long the mean,
    # here 0.0012 per validation, 0.011 over the window, which a mean over 8 of its 10 validations would hide
    cycles = [(0.8, 36.0 + 2.25 * math.sin(2 * math.pi * i / 6)) for i in range(40)]
    slow = [(0.8 - 0.0012 * i, 36.0) for i in range(40)]
    assert feed(StopOnConvergence(**rule, smooth=3), cycles) is None
    assert feed(StopOnConvergence(**{**rule, "rel_tol": 1e-2}, smooth=6), cycles) == 150
    assert feed(StopOnConvergence(**rule, smooth=8), slow) is None
    with pytest.raises(ValueError, match="smooth must be >= 1"):
        StopOnConvergence(smooth=0)


def test_convergence_in_decay_time_asks_the_same_of_every_weight_decay():
    from types import SimpleNamespace

    def feed(stop, weight_decay, curve, every=10, resume_at=None):
        """Validates every ``every`` steps a run whose val/acc follows ``curve`` of decay time (lr 0.1)."""
        group = {"lr": 0.1, "weight_decay": weight_decay}
        fake = SimpleNamespace(sanity_checking=False, loggers=[], should_stop=False, global_step=0,
                               optimizers=[SimpleNamespace(param_groups=[{"lr": 0.1, "weight_decay": 0.0}, group])])
        stop.on_train_start(fake, None)
        for i in range(1, 1000):
            fake.global_step = i * every
            fake.callback_metrics = {"val/acc": torch.tensor(curve(0.1 * weight_decay * fake.global_step)),
                                     "norm/params": torch.tensor(10.0)}
            stop.on_validation_end(fake, None)
            if fake.should_stop:
                return fake.global_step
            if i == resume_at:  # a checkpoint and a fresh callback
                state, stop = stop.state_dict(), StopOnConvergence(**rule)
                stop.load_state_dict(state)
        return None

    # val/acc falls as 1/(1 + t) in decay time t: its spread over a window of 4 units, 4 / ((t - 3)(t + 1)), is
    # below 0.02 once t > 15.3
    curve = lambda t: 1.0 / (1.0 + t)  # noqa: E731
    rule = dict(monitor=("val/acc", "norm/params"), abs_tol={"val/acc": 0.02}, window_time=4.0)
    at_1 = feed(StopOnConvergence(**rule), 1.0, curve)
    assert at_1 == 160 and feed(StopOnConvergence(**rule), 2.0, curve, every=5) == 80  # the same decay time
    assert feed(StopOnConvergence(**rule), 1.0, curve, resume_at=7) == 160  # a resume changes nothing
    # five validations 10 steps apart span 40 steps: 4 units at weight decay 1 (stops at step 160 as above),
    # 8 at weight decay 2, whose spread 8 / ((t - 7)(t + 1)) first falls below 0.02 at t = 24, step 120 (not 80)
    by_count = dict(monitor=("val/acc", "norm/params"), abs_tol={"val/acc": 0.02}, window=5)
    assert feed(StopOnConvergence(**by_count), 1.0, curve) == 160
    assert feed(StopOnConvergence(**by_count), 2.0, curve) == 120
    assert feed(StopOnConvergence(**rule, min_time=20.0), 1.0, curve) == 200
    with pytest.raises(ValueError, match="not both"):
        StopOnConvergence(window=5, window_time=1.0)
    with pytest.raises(ValueError, match="give window_time too"):
        StopOnConvergence(min_time=1.0)
    with pytest.raises(ValueError, match="has no weight decay"):
        feed(StopOnConvergence(**rule), 0.0, curve)

"""Single-run callbacks per ensemble member (lit_grok.callbacks.Members) and sweeps grouped into ensembles."""

import csv
import json
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.callbacks import CircuitEfficiency, DatasetSwap, GrokEvents, Members
from lit_grok.cli import main
from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule
from lit_grok.sweep import group_key, sweep
from tests.test_training import hparams_plugin, scalars

ROOT = Path(__file__).resolve().parents[1]
NET = dict(n_layers=1, d_model=32, n_heads=4, d_mlp=64)
TRAINER = dict(max_epochs=-1, num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False)


class StopAt(pl.Callback):
    """Stops the run it watches after ``step`` steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def single(seed, data_seed, train_size, weight_decay, steps, callbacks=(), log_dir=None):
    data = ModularArithmeticDataModule("add", 13, train_size=train_size, data_seed=data_seed)
    torch.manual_seed(seed)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **NET),
                           optimizer=partial(torch.optim.AdamW, lr=3e-3, betas=(0.9, 0.98), weight_decay=weight_decay))
    logger = pl.loggers.TensorBoardLogger(log_dir, name="", version="") if log_dir else False
    trainer = pl.Trainer(max_steps=steps, check_val_every_n_epoch=10, logger=logger, callbacks=list(callbacks), **TRAINER)
    trainer.fit(model, data)
    return model, data, trainer


def ensemble(members, steps, callbacks, log_dir=None):
    modules, datas = [], []
    for seed, data_seed, size, wd in members:
        data = ModularArithmeticDataModule("add", 13, train_size=size, data_seed=data_seed)
        torch.manual_seed(seed)
        modules.append(GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **NET),
                                      optimizer=partial(torch.optim.AdamW, lr=3e-3, betas=(0.9, 0.98), weight_decay=wd)))
        datas.append(data)
    model = EnsembleModule.from_modules(modules, seeds=[m[0] for m in members])
    logger = pl.loggers.TensorBoardLogger(log_dir, name="", version="") if log_dir else False
    trainer = pl.Trainer(max_steps=steps, check_val_every_n_epoch=10, logger=logger, callbacks=[callbacks], **TRAINER)
    trainer.fit(model, EnsembleDataModule.from_datamodules(datas))
    return model, trainer


def test_members_get_their_single_runs_callbacks_metrics_and_runs(tmp_path):
    members = [(0, 0, 60, 1.0), (1, 5, 90, 0.3)]
    callbacks = Members([[GrokEvents(), CircuitEfficiency()] for _ in members])
    model, trainer = ensemble(members, 200, callbacks, tmp_path / "ensemble")
    _, _, alone = single(1, 5, 90, 0.3, 200, [events := GrokEvents(), CircuitEfficiency()], tmp_path / "single")
    member = tmp_path / "ensemble" / "member_1"
    assert callbacks.callbacks[1][0].summary() == events.summary()  # grok events, step for step
    # float32 rounding differs between batched and single kernels; after 200 steps the largest relative
    # difference measured was 1.9e-4 (efficiency/val)
    for tag in ("val/acc", "efficiency/val", "circuits/gen_fraction", "norm/attn", "data/train_size"):
        assert scalars(str(member), tag)[199] == pytest.approx(float(alone.callback_metrics[tag]), rel=1e-3), tag
    assert scalars(str(member), "val/acc").keys() == scalars(str(tmp_path / "single"), "val/acc").keys()  # same steps
    metrics, params = hparams_plugin(str(member))  # the member's own HPARAMS entry
    assert "events/grokked_step" in metrics and {"train_size", "data_seed", "loss_dtype"} <= set(params)


def test_each_member_swaps_to_its_own_size(tmp_path):
    swaps = [DatasetSwap(new_size=30, at_step=20), DatasetSwap(new_size=45, at_step=40)]
    callbacks = Members([[swaps[0]], [swaps[1]]])
    model, trainer = ensemble([(0, 0, 60, 1.0), (1, 5, 90, 1.0)], 60, callbacks, tmp_path)
    data = trainer.datamodule
    assert [m.train_size for m in data.members] == [30, 45]
    assert [s.swap_step for s in swaps] == [20, 40]
    assert [len(m.val_indices) for m in data.members] == [169 - 30, 169 - 45]  # validated on the complement
    sizes = scalars(str(tmp_path / "member_0"), "data/train_size")
    assert sizes[19] == 60 and sizes[29] == 30  # after 20 steps (logged at 19, as Lightning does) and after the swap
    assert scalars(str(tmp_path / "member_1"), "events/swap_step") == {40: 40.0}


def test_a_stopped_member_is_frozen_where_its_single_run_stops():
    callbacks = Members([[StopAt(20)], [StopAt(40)]])
    model, trainer = ensemble([(0, 0, 60, 1.0), (1, 5, 90, 0.3)], 100, callbacks)
    assert trainer.global_step == 40  # the run ends when its last member stops
    assert callbacks.stopped_steps == [20, 40]
    alone, _, _ = single(0, 0, 60, 1.0, 20)
    for name, value in alone.net.state_dict().items():  # member 0 did not move after step 20
        torch.testing.assert_close(model.net.member_state_dict(0)[name], value, rtol=1e-5, atol=1e-6)
    assert [step for _, step in callbacks.results(trainer)] == [20, 40]


def test_members_refuse_what_an_ensemble_cannot_do():
    with pytest.raises(ValueError, match="reset_optimizer=True\\) is not supported in ensembles"):
        ensemble([(0, 0, 60, 1.0)], 10, Members([[DatasetSwap(new_size=30, at_step=5, reset_optimizer=True)]]))
    with pytest.raises(ValueError, match="Members has 1 callbacks for 2 members"):
        ensemble([(0, 0, 60, 1.0), (1, 0, 60, 1.0)], 10, Members([[]]))
    data = ModularArithmeticDataModule("add", 13, train_size=60)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **NET))
    with pytest.raises(ValueError, match="Members needs an EnsembleModule, got GrokkingModule"):
        pl.Trainer(max_steps=1, callbacks=[Members()], logger=False, **TRAINER).fit(model, data)
    warm = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **NET), warmup_steps=10)
    with pytest.raises(ValueError, match="warmup_steps"):
        EnsembleModule.from_modules([model, warm])


def test_the_cli_gives_each_member_a_copy_of_the_configs_callbacks(tmp_path):
    args = ["fit", "--model=lit_grok.ensemble_module.EnsembleModule", "--model.seeds=[0,1]", "--model.lr=3.0e-3",
            "--model.network=lit_grok.Transformer", *[f"--model.network.{k}={v}" for k, v in NET.items()], "--data=lit_grok.ensemble_module.EnsembleDataModule",
            "--data.modulus=13", "--data.train_sizes=[60,90]", "--trainer.max_steps=20",
            "--trainer.check_val_every_n_epoch=10", "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.callbacks+=lit_grok.callbacks.GrokEvents", "--trainer.callbacks+=lit_grok.callbacks.DatasetSwap",
            "--trainer.callbacks.new_size=100", "--trainer.callbacks.at_step=10"]
    with pytest.raises(SystemExit):  # member 0 has 60 pairs: D'=100 cannot be drawn from it
        main(args)
    cli = main(args[:-2] + ["--trainer.callbacks.new_size=50", "--trainer.callbacks.at_step=10"])
    members = next(c for c in cli.trainer.callbacks if isinstance(c, Members))
    kinds = [[type(c).__name__ for c in mine] for mine in members.callbacks]
    assert kinds == [["GrokEvents", "DatasetSwap", "TrainingCurves", "TensorBoardLayout", "StopOnDivergence"]] * 2
    assert members.callbacks[0][0] is not members.callbacks[1][0]
    assert not any(isinstance(c, GrokEvents) for c in cli.trainer.callbacks)
    assert [m.train_size for m in cli.datamodule.members] == [50, 50]
    assert (Path(cli.trainer.log_dir) / "member_1" / "curves.png").is_file()


TINY = {"data.init_args.modulus": 11, "trainer.max_steps": 40, "trainer.check_val_every_n_epoch": 10,
        "model.init_args.network.init_args.d_model": 16, "model.init_args.network.init_args.d_mlp": 32}
GRIDS = [{"data.init_args.train_size": [40, 60], "data.init_args.random_labels": [True], "seed_everything": [0, 1]},
         {"data.init_args.train_size": [80, 90], "data.init_args.random_labels": [False],
          "model.init_args.warmup_steps": [5]}]


def test_a_grouped_sweep_records_what_the_sequential_one_does(tmp_path, capsys):
    base = str(ROOT / "configs/cpu/efficiency_base.yaml")
    rows = {}
    for k in (1, 3):
        summary = sweep(base, f"k{k}", GRIDS, TINY, save_dir=str(tmp_path), max_members=k)
        rows[k] = list(csv.DictReader(summary.open()))
    out = capsys.readouterr().out
    assert out.count("(ensemble of 3)") == 3 and out.count("(ensemble of 2)") == 0  # 4 compatible runs: 3 + 1
    assert "runs 5, 6 cannot train as one ensemble (ensembles do not support warmup_steps yet.)" in out
    assert list(rows[1][0]) == list(rows[3][0])  # same columns in the same order
    for one, grouped in zip(rows[1], rows[3]):
        assert one["run"] == grouped["run"]
        for key, value in one.items():
            if key == "seconds":
                continue
            try:
                assert float(grouped[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-6), (one["run"], key)
            except ValueError:
                assert grouped[key] == value, (one["run"], key)
    member = tmp_path / "k3" / "train_size=40-random_labels=true-seed_everything=1" / "version_0"
    assert {"config.yaml", "hparams.yaml", "curves.png", "result.json"} <= {p.name for p in member.iterdir()}
    assert json.loads((member / "result.json").read_text())["step"] == 40


def test_runs_group_only_when_they_differ_in_member_keys():
    config = {"seed_everything": 0, "data": {"init_args": {"train_size": 40, "modulus": 11}},
              "model": {"init_args": {"optimizer": {"init_args": {"lr": 1e-3, "weight_decay": 1.0}}}},
              "trainer": {"max_steps": 10, "callbacks": [1]}}
    other = json.loads(json.dumps(config))
    other["seed_everything"], other["data"]["init_args"]["train_size"] = 1, 80
    other["model"]["init_args"]["optimizer"]["init_args"]["weight_decay"], other["trainer"]["callbacks"] = 0.5, [2]
    assert group_key(config) == group_key(other)
    other["trainer"]["max_steps"] = 20
    assert group_key(config) != group_key(other)


def test_an_ensemble_resumes_exactly_with_its_members_state(tmp_path):
    def run(save_dir, steps, *extra):
        return main(["fit", "--model=lit_grok.ensemble_module.EnsembleModule", "--model.seeds=[0,1]",
                     "--model.lr=3.0e-3", "--model.weight_decay=[1.0,0.3]", "--model.network=lit_grok.Transformer", *[f"--model.network.{k}={v}" for k, v in NET.items()],
                     "--data=lit_grok.ensemble_module.EnsembleDataModule", "--data.modulus=13",
                     "--data.train_sizes=[60,90]", f"--trainer.max_steps={steps}",
                     "--trainer.check_val_every_n_epoch=10", "--trainer.enable_progress_bar=false",
                     f"--trainer.logger.init_args.save_dir={save_dir}",
                     "--trainer.callbacks+=lit_grok.callbacks.DatasetSwap", "--trainer.callbacks.new_size=50",
                     "--trainer.callbacks.at_step=10", *extra])

    full = run(tmp_path / "full", 40)
    first = run(tmp_path / "part", 20)
    resumed = run(tmp_path / "part", 40, f"--ckpt_path={first.trainer.checkpoint_callback.last_model_path}")
    members = next(c for c in resumed.trainer.callbacks if isinstance(c, Members))
    assert [mine[0].swap_step for mine in members.callbacks] == [10, 10]  # restored, not swapped again
    assert [m.train_size for m in resumed.datamodule.members] == [50, 50]
    for k in (0, 1):
        after = scalars(f"{resumed.trainer.log_dir}/member_{k}", "val/loss")
        assert sorted(after) == [9, 19, 29, 39]  # resumed into the same folder: one run per member
        expected = scalars(f"{full.trainer.log_dir}/member_{k}", "val/loss")[39]
        assert after[39] == pytest.approx(expected, rel=1e-6)


class CountValidations(pl.Callback):
    """A user's own callback: counts the validations of the run it watches."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self.seen.append(float(trainer.callback_metrics["val/acc"]))


def test_a_users_own_callback_watches_each_member():
    from lit_grok.callbacks.members import per_member
    from pytorch_lightning.callbacks import ModelCheckpoint

    assert per_member(CountValidations()) and per_member(GrokEvents()) and not per_member(ModelCheckpoint())
    counters = [CountValidations(), CountValidations()]
    ensemble([(0, 0, 60, 1.0), (1, 5, 90, 0.3)], 30, Members([[counters[0]], [counters[1]]]))
    assert [len(c.seen) for c in counters] == [3, 3] and counters[0].seen != counters[1].seen


def test_an_interrupted_ensemble_resumes_from_its_checkpoint_when_the_sweep_runs_again(tmp_path, monkeypatch):
    base = str(ROOT / "configs/cpu/efficiency_base.yaml")
    grids = [{"data.init_args.train_size": [40, 60], "data.init_args.random_labels": [True]}]
    settings = {**TINY, "trainer.callbacks": "[]"}  # no convergence stop: both members run all 40 steps
    whole = list(csv.DictReader(sweep(base, "whole", grids, settings, save_dir=str(tmp_path)).open()))
    original = Members.on_validation_end

    def crash_at_step_20(self, trainer, pl_module):
        original(self, trainer, pl_module)
        if trainer.global_step == 20:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(Members, "on_validation_end", crash_at_step_20)
    crashed = list(csv.DictReader(sweep(base, "crashed", grids, settings, save_dir=str(tmp_path)).open()))
    assert [(r["failed"], r["error"]) for r in crashed] == [("True", "RuntimeError: simulated crash")] * 2
    saved = list((tmp_path / "crashed" / ".ensembles").glob("*/last.ckpt"))
    assert len(saved) == 1 and torch.load(saved[0], weights_only=False)["global_step"] == 20
    monkeypatch.setattr(Members, "on_validation_end", original)
    again = list(csv.DictReader(sweep(base, "crashed", grids, settings, save_dir=str(tmp_path)).open()))
    assert not saved[0].parent.exists()  # removed once the ensemble finished
    member = tmp_path / "crashed" / "train_size=40-random_labels=true" / "version_0"
    first, second = sorted(member.glob("events.*"), key=lambda p: p.stat().st_mtime_ns)  # crashed, resumed
    assert sorted(scalars(str(first), "val/loss")) == [9, 19] and sorted(scalars(str(second), "val/loss")) == [29, 39]
    assert [r["resumed_from_step"] for r in again] == ["20", "20"] and "resumed_from_step" not in whole[0]
    for one, other in zip(whole, again):
        assert other["step"] == one["step"] == "40"
        assert float(other["val/loss"]) == pytest.approx(float(one["val/loss"]), rel=1e-6)
        assert float(other["norm/params"]) == pytest.approx(float(one["norm/params"]), rel=1e-6)


def test_a_resumed_ensemble_keeps_the_results_of_a_member_that_had_stopped(tmp_path):
    """Issue 17, bug 1: member 0 stops at step 20, the run is checkpointed at 30 and resumed to 40; member 0's
    result must still carry its final metrics (they are never measured again)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(steps, ckpt_path=None):
        members = Members([[StopAt(20)], [StopAt(1000)]])
        checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=30)
        data = EnsembleDataModule.from_datamodules(
            [ModularArithmeticDataModule("add", 13, train_size=60, data_seed=s) for s in (0, 5)])
        torch.manual_seed(0)
        modules = [GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **NET)) for _ in (0, 1)]
        trainer = pl.Trainer(max_steps=steps, callbacks=[members, checkpoint], logger=False,
                             **{**TRAINER, "enable_checkpointing": True})
        trainer.fit(EnsembleModule.from_modules(modules), data, ckpt_path=ckpt_path)
        return members.results(trainer)

    whole = run(40)
    run(30)
    resumed = run(40, str(tmp_path / "last.ckpt"))
    (metrics, step), (whole_metrics, whole_step) = resumed[0], whole[0]
    assert step == whole_step == 20
    assert {"val/acc", "train/loss", "norm/params"} <= set(metrics)
    assert metrics["norm/params"] == pytest.approx(whole_metrics["norm/params"], rel=1e-6)


class NormAtFitEnd(pl.Callback):
    """Reads the member's network after training, outside inference mode."""

    def on_fit_end(self, trainer, pl_module) -> None:
        self.norm = float(sum(p.detach().pow(2).sum() for p in pl_module.net.parameters()))


def test_a_member_network_first_built_under_inference_mode_can_be_refreshed_outside_it():
    from lit_grok.callbacks.members import MemberModule

    model = EnsembleModule(14, 13, 2, network=partial(Transformer, **NET))
    nets: dict = {}
    with torch.inference_mode():  # as a hook called inside Lightning's evaluation loop would
        MemberModule(model, 0, {}, nets).net
    with torch.no_grad():
        model.net.embed[0].add_(1.0)
    refreshed = MemberModule(model, 0, {}, nets).net  # outside inference mode: load_state_dict in place
    assert torch.equal(refreshed.embed.weight, model.net.embed[0])


def test_member_networks_built_during_validation_can_be_read_after_it():
    """CircuitEfficiency builds member networks at validation; a callback reading them at fit end (after more
    training steps) sees them refreshed."""
    readers = [NormAtFitEnd(), NormAtFitEnd()]
    model, _ = ensemble([(0, 0, 60, 1.0), (1, 5, 90, 0.3)], 25,
                        Members([[CircuitEfficiency(), readers[0]], [CircuitEfficiency(), readers[1]]]))
    for k, reader in enumerate(readers):
        expected = sum(float(v.pow(2).sum()) for v in model.net.member_state_dict(k).values())
        assert reader.norm == pytest.approx(expected, rel=1e-6)


def test_member_callback_states_are_matched_by_key_not_position():
    saved_swap, saved_events = DatasetSwap(new_size=30, at_step=5), GrokEvents()
    saved_swap.swap_step, saved_events.grokked_step = 5, 40
    state = Members([[saved_swap, saved_events]]).state_dict()
    swap, events, other = DatasetSwap(new_size=30, at_step=5), GrokEvents(), DatasetSwap(new_size=20, at_step=5)
    Members([[events, other, swap]]).load_state_dict(state)  # another order, and one callback more
    assert swap.swap_step == 5 and events.grokked_step == 40 and other.swap_step is None
    with pytest.warns(UserWarning, match="state for callbacks this run does not have"):
        Members([[GrokEvents()]]).load_state_dict(state)


class CountBatches(pl.Callback):
    """A callback that relies on a hook members never get."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        pass


def test_callbacks_that_rely_on_hooks_members_never_get_are_refused_in_one_line(tmp_path, capsys):
    from pytorch_lightning.callbacks import EarlyStopping

    from lit_grok.callbacks import PlateauDetector, StopOnConvergence, StopOnDivergence, TrainingCurves
    from lit_grok.callbacks.members import MEMBER_HOOKS, unsupported_hooks

    with pytest.raises(ValueError, match="CountBatches cannot watch an ensemble member: it implements "
                                         "on_train_batch_end, which members never call"):
        Members().share([CountBatches()], 2)
    with pytest.raises(ValueError, match="EarlyStopping cannot watch an ensemble member: it implements setup"):
        Members().share([EarlyStopping("val/loss")], 2)
    with pytest.raises(ValueError, match="CountBatches cannot watch"):  # given per member, refused at setup
        ensemble([(0, 0, 60, 1.0)], 10, Members([[CountBatches()]]))
    # every per-member callback lit_grok ships keeps to the contract (StopOnDivergence says what it skips)
    shipped = [CircuitEfficiency(), DatasetSwap(new_size=30, at_step=5), GrokEvents(), PlateauDetector(),
               StopOnConvergence(), StopOnDivergence(), TrainingCurves()]
    assert [unsupported_hooks(c) for c in shipped] == [[]] * len(shipped)
    assert set(StopOnDivergence.member_hooks_unused).isdisjoint(MEMBER_HOOKS)
    with pytest.raises(SystemExit):  # from a config: one line, no traceback
        main(["fit", "-c", str(ROOT / "configs/cpu/ensemble.yaml"), "--trainer.logger=false",
              "--trainer.callbacks+=pytorch_lightning.callbacks.LearningRateMonitor"])
    err = capsys.readouterr().err
    assert "error: LearningRateMonitor cannot watch an ensemble member" in err and "Traceback" not in err


def test_members_stop_through_grok_events_and_convergence_as_their_single_runs_do():
    from lit_grok.callbacks import StopOnConvergence

    # member 0 "groks" at its first validation (threshold 0.01) and stops 20 steps later; member 1 converges
    # once data/train_size has been the same at 5 validations (steps 10..50); a third member's window is in
    # decay time, its own lr 3e-3 x weight decay 0.3 x 39.5 steps: also steps 10..50
    callbacks = Members([[GrokEvents(threshold=0.01, stop_after=20)],
                         [StopOnConvergence(monitor=("data/train_size",), window=5)],
                         [StopOnConvergence(monitor=("data/train_size",), window_time=3e-3 * 0.3 * 39.5)]])
    model, trainer = ensemble([(0, 0, 60, 1.0), (1, 5, 90, 0.3), (2, 5, 90, 0.3)], 100, callbacks)
    assert callbacks.stopped_steps == [30, 50, 50] and trainer.global_step == 50
    assert callbacks.callbacks[0][0].grokked_step == 10 and callbacks.callbacks[1][0].converged_step == 50
    for k, steps in ((0, 30), (1, 50)):
        events = GrokEvents(threshold=0.01, stop_after=20) if k == 0 else StopOnConvergence(("data/train_size",), window=5)
        seed, data_seed, size, wd = [(0, 0, 60, 1.0), (1, 5, 90, 0.3)][k]
        alone, _, run = single(seed, data_seed, size, wd, 100, callbacks=[events])
        assert run.global_step == steps  # the single run stops at the same step
        for name, value in alone.net.state_dict().items():  # float32 rounding, over 30 and 50 steps
            torch.testing.assert_close(model.net.member_state_dict(k)[name], value, rtol=1e-4, atol=1e-5)


def test_from_modules_refuses_what_an_ensemble_cannot_reproduce():
    data = ModularArithmeticDataModule("add", 13, train_size=60)

    def module(optimizer=partial(torch.optim.AdamW, lr=1e-3), **kw):
        return GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **NET),
                              optimizer=optimizer, **kw)

    plain = module()
    for other, message in [
        (module(optimizer=partial(torch.optim.SGD, lr=0.1)), "ensembles train with plain AdamW, got SGD"),
        (module(optimizer=partial(torch.optim.AdamW, lr=1e-3, amsgrad=True)), "ensembles train with plain AdamW"),
        (module(optimizer=partial(torch.optim.AdamW, lr=1e-3, betas=(0.9, 0.99))), "must share their betas"),
        (module(optimizer=partial(torch.optim.AdamW, lr=1e-3, eps=1e-6)), "must share their eps"),
        (module(loss_dtype="float32"), "must share their loss dtype"),
        (GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **{**NET, "d_mlp": 32})), ""),
    ]:
        with pytest.raises(ValueError, match=message):
            EnsembleModule.from_modules([plain, other])


def test_the_command_line_routes_sweep_to_the_sweep_runner(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--help"])
    assert exit_.value.code == 0 and "--max_members" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--base", "missing.yaml", "--name", "x", "--grids", '[{"seed_everything": [0]}]'])
    assert exit_.value.code == 2 and "error: base config 'missing.yaml' does not exist" in capsys.readouterr().err


def test_ensembles_refuse_the_four_token_format_in_one_sentence():
    datas = [ModularArithmeticDataModule("mul_nonzero", 13, train_size=60, op_token=True, data_seed=s) for s in (0, 1)]
    with pytest.raises(ValueError, match="ensembles use the 3-token format a b =; a member has op_token: true."):
        EnsembleDataModule.from_datamodules(datas)

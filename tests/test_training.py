import json
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_grok.cli import main
from lit_grok.data import ModularArithmeticDataModule
from lit_grok.module import GrokkingModule
from lit_grok.runs import quiet_lightning
from tests.conftest import checkpoint_at

METRICS = {"train/loss", "train/acc", "val/loss", "val/acc", "norm/params", "data/train_size"}


def events(log_dir: str) -> EventAccumulator:
    ea = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def scalars(log_dir: str, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in events(log_dir).Scalars(tag)}


def hparams_plugin(log_dir: str) -> tuple[list[str], list[str]]:
    """The metric tags the HPARAMS tab compares and the hyperparameter names it shows."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    metrics, params = [], []
    for path in Path(log_dir).glob("events.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    metrics += [m.name.tag for m in data.experiment.metric_infos]
                    params += list(data.session_start_info.hparams)
    return metrics, params


def test_tiny_config_groks_and_logs_every_metric(tiny_args):
    cli = main(["fit", *tiny_args])
    metrics = cli.trainer.callback_metrics
    assert metrics["train/acc"] >= 0.99 and metrics["val/acc"] >= 0.99
    log_dir = Path(cli.trainer.log_dir)
    ea = events(str(log_dir))
    assert METRICS <= set(ea.Tags()["scalars"])
    assert [e.step for e in ea.Scalars("val/acc")][:3] == [49, 99, 149]  # every validation (after 50, 100, ... steps)
    assert scalars(str(log_dir), "data/train_size")[49] == cli.datamodule.train_size
    assert "curves" in ea.Tags()["images"] and "config/text_summary" in ea.Tags()["tensors"]
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout.FromString(ea.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["accuracy: train and val"] == ["train/acc$", "val/acc$"]  # the grokking plot, one chart
    assert charts["logits: C_gen and C_mem (App. B)"][:2] == ["circuits/gen_logit$", "circuits/mem_logit_train$"]
    assert (log_dir / "curves.png").stat().st_size > 10_000
    assert (log_dir / "config.yaml").exists() and (log_dir / "hparams.yaml").exists()
    assert "operation: add" in (log_dir / "hparams.yaml").read_text()
    assert (log_dir / "checkpoints" / "last.ckpt").exists()
    hp_metrics, hp_params = hparams_plugin(str(log_dir))
    assert hp_metrics == ["events/memorised_step", "events/grokked_step", "events/grok_delay"]
    assert {"operation", "modulus", "loss_dtype"} <= set(hp_params)
    grokked = scalars(str(log_dir), "events/grokked_step")
    (at, value), = [(at, v) for at, v in grokked.items() if v > 0]  # logged once it happened...
    assert at == value - 1 and scalars(str(log_dir), "val/acc")[at] >= 0.99  # ...beside the val/acc that made it


def test_a_run_without_a_logger_leaves_no_config_in_the_working_directory(tiny_args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", *tiny_args, "--trainer.logger=false", "--trainer.max_steps=2",
                "--trainer.enable_checkpointing=false"])
    assert cli.trainer.global_step == 2
    assert not list(tmp_path.glob("*.yaml"))  # Lightning's default writes config.yaml into the cwd


def test_resume_continues_exactly(tiny_args, tmp_path):
    checkpoint = ('--trainer.callbacks=[{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", '
                  '"init_args": {"every_n_train_steps": 20, "save_top_k": -1, "save_last": true}}]')
    common = [*tiny_args, "--trainer.max_steps=40", "--trainer.check_val_every_n_epoch=5", checkpoint]
    full = main(["fit", *common])
    ckpt = checkpoint_at(Path(full.trainer.log_dir) / "checkpoints", 20)
    assert ckpt.exists()
    # a version of its own (asked for), so that its scalars can be compared with the uninterrupted run's
    resumed = main(["fit", *common, f"--ckpt_path={ckpt}", "--trainer.logger.init_args.version=resumed"])
    assert resumed.trainer.global_step == 40 and Path(resumed.trainer.log_dir).name == "resumed"
    assert torch.equal(resumed.datamodule.train_indices, full.datamodule.train_indices)
    a = scalars(full.trainer.log_dir, "train/loss")
    b = scalars(resumed.trainer.log_dir, "train/loss")
    # Lightning's convention: what is measured after N steps is logged at step N - 1.
    assert sorted(b) == [24, 29, 34, 39] and sorted(a) == [4, 9, 14, 19, 24, 29, 34, 39]
    assert [b[s] for s in sorted(b)] == [a[s] for s in sorted(b)]
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    optim_a, optim_b = full.trainer.optimizers[0].state_dict(), resumed.trainer.optimizers[0].state_dict()
    assert all(torch.equal(optim_a["state"][k]["exp_avg_sq"], optim_b["state"][k]["exp_avg_sq"])
               for k in optim_a["state"])


class _Interrupt(pl.Callback):
    def event_steps(self) -> list[int]:
        return [7]  # the step engine ends a batch there

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 7:
            raise KeyboardInterrupt


def test_ctrl_c_writes_a_checkpoint(tiny_args):
    cli = main([*tiny_args], run=False)
    cli.trainer.callbacks.append(_Interrupt())
    with pytest.raises(SystemExit):
        cli.trainer.fit(cli.model, cli.datamodule)
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 7


def test_loss_is_float64_by_default_and_float32_on_request():
    logits, answers = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    module = GrokkingModule(6, 5)
    assert module.loss(logits, answers).dtype == torch.float64
    assert GrokkingModule(6, 5, loss_dtype="float32").loss(logits, answers).dtype == torch.float32


def test_linear_warmup_reaches_the_base_rate():
    module = GrokkingModule(6, 5, warmup_steps=4)
    [optimizer], [scheduler] = module.configure_optimizers()
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_python_api_without_the_cli(tmp_path):
    data = ModularArithmeticDataModule("add", 11, train_size=60)
    model = GrokkingModule(data.vocab_size, data.n_classes)
    trainer = pl.Trainer(max_steps=3, max_epochs=-1, check_val_every_n_epoch=3, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert trainer.global_step == 3 and set(trainer.callback_metrics) == METRICS


def test_validate_subcommand_reads_a_checkpoint(tiny_args):
    fit = main(["fit", *tiny_args, "--trainer.max_steps=20", "--trainer.check_val_every_n_epoch=10"])
    ckpt = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    checked = main(["validate", *tiny_args, f"--ckpt_path={ckpt}"])
    assert checked.trainer.callback_metrics["val/loss"] == pytest.approx(float(fit.trainer.callback_metrics["val/loss"]))


def test_minibatch_mode_takes_ceil_n_over_b_steps_per_epoch(tiny_args):
    cli = main([*tiny_args, "--data.init_args.batch_size=100", "--trainer.max_steps=-1", "--trainer.max_epochs=3",
                "--trainer.check_val_every_n_epoch=1"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.datamodule.train_size == 370
    assert cli.trainer.global_step == 3 * 4
    assert cli.trainer.callback_metrics["data/train_size"] == 370


def test_mlp_trains_through_the_same_module(tmp_path):
    from functools import partial

    from lit_grok.model import MLP

    data = ModularArithmeticDataModule("sub", 13, train_fraction=0.5)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=partial(MLP, d_embed=16, hidden=(32,)),
                           optimizer=partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1))
    trainer = pl.Trainer(max_steps=100, max_epochs=-1, check_val_every_n_epoch=100, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, data)
    assert trainer.callback_metrics["train/acc"] > 0.9


def test_last_checkpoint_holds_the_final_step_of_a_run_that_stopped_between_saves(tmp_path):
    from functools import partial

    import pytorch_lightning as pl

    from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
    from lit_grok.callbacks import GrokEvents, ModelCheckpoint

    data = ModularArithmeticDataModule("add", 11, train_size=60)
    torch.manual_seed(0)  # unseeded, a network could answer none of the held-out pairs at step 5 and never "grok"
    model = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, d_model=16, n_heads=2, d_mlp=32))
    stop = GrokEvents(threshold=1e-9, stop_after=10)  # "grokked" at the first validation (step 5): stop at 15
    trainer = pl.Trainer(max_steps=100, max_epochs=-1, check_val_every_n_epoch=5, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[stop, ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=10, save_last=True)])
    trainer.fit(model, data)
    assert trainer.global_step == 15  # stopped after the save at step 10; Lightning's own would keep step 10
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 15


def test_resuming_continues_the_checkpoints_own_run_folder(tiny_args, capsys):
    first = main(["fit", *tiny_args, "--trainer.max_steps=100"])
    run = Path(first.trainer.log_dir)
    original = (run / "config.yaml").read_text()
    resumed = main(["fit", *tiny_args, "--trainer.max_steps=200", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    assert Path(resumed.trainer.log_dir) == run and not (run.parent / "version_1").exists()
    assert (run / "config.yaml").read_text() == original  # kept; the resumed run's config beside it
    assert "max_steps: 200" in (run / "config.resume_1.yaml").read_text()
    assert len(list(run.glob("events.*"))) == 2  # one TensorBoard run, appended
    curves = next(c for c in resumed.trainer.callbacks if type(c).__name__ == "TrainingCurves")
    assert [s for s, _ in curves.history["val/acc"]] == [50, 100, 150, 200]  # the figure covers the whole run
    result = json.loads((run / "result.json").read_text())  # as a sweep records it: its time counts from step 100
    assert result["step"] == 200 and result["resumed_from_step"] == 100 and result["seconds"] > 0
    # a callback resumed with other settings: one line naming it, not Lightning's warning to add it back
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning(False)
        main(["fit", *tiny_args, "--trainer.max_steps=250", "--trainer.callbacks.init_args.threshold=0.5",
              f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("resume:")]
    assert len(said) == 1 and "GrokEvents{'threshold': 0.99" in said[0] and said[0].endswith("start afresh.")
    assert not [w for w in caught if "callbacks used to create the checkpoint" in str(w.message)]
    fresh = main(["fit", *tiny_args, "--trainer.max_steps=100"])  # without --ckpt_path: a new version
    assert Path(fresh.trainer.log_dir).name == "version_1"


def _stateful_callbacks():
    from lit_grok.callbacks import DatasetSwap, GrokEvents, PlateauDetector, StopOnConvergence, TrainingCurves

    return [StopOnConvergence(rel_tol=1e-12, window=4),  # never fires: its history fills and slides
            PlateauDetector(low=0.0, high=1.0, min_steps=10, memorised=0.0),  # always on a "plateau"
            TrainingCurves(),
            DatasetSwap(new_size=40, after_grokked=1000, threshold=0.0),  # a streak that grows, no swap
            GrokEvents(threshold=0.5)]


def test_callback_states_after_resume_equal_an_uninterrupted_runs(tmp_path):
    from functools import partial

    from lit_grok.callbacks import ModelCheckpoint
    from lit_grok.model import Transformer

    def fit(max_steps, ckpt_path=None):
        torch.manual_seed(0)
        data = ModularArithmeticDataModule("add", 13, train_size=80)
        model = GrokkingModule(data.vocab_size, data.n_classes,
                               network=partial(Transformer, n_layers=1, d_model=32, n_heads=4, d_mlp=64))
        callbacks = _stateful_callbacks()
        saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=30, save_top_k=-1)
        trainer = pl.Trainer(max_steps=max_steps, max_epochs=-1, check_val_every_n_epoch=5, logger=False,
                             num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[*callbacks, saver], default_root_dir=tmp_path)
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return callbacks

    full = fit(60)
    resumed = fit(60, ckpt_path=checkpoint_at(tmp_path, 30))
    for a, b in zip(full, resumed):
        assert a.state_dict() == b.state_dict(), type(a).__name__
    convergence, plateaus, curves, swap, events = resumed
    assert len(convergence.history) == 4 and convergence.converged_step == -1
    # the save at step 30 waited for step 30's validation: the resumed run has it, and does not run it again
    assert [step for step, _ in curves.history["val/acc"]] == list(range(5, 65, 5))
    assert swap.streak == 12 and swap.swap_step is None
    assert [(p["start"], p["end"]) for p in plateaus.plateaus] == [(5, 60)]  # closed at fit end, all 12 points


def test_a_module_built_from_a_config_built_modules_callables_describes_their_classes(tmp_path):
    """A class from a config reaches the module as jsonargparse's partial(call_without_instantiate_context, ...);
    hyperparameters must name the class itself, so that load_from_checkpoint can rebuild the module."""
    from lit_grok.module import describe, resolve

    root = Path(__file__).resolve().parents[1]
    cli = main(["-c", str(root / "configs/cpu/grok.yaml"), "--trainer.logger=false"], run=False)
    again = GrokkingModule(cli.datamodule.vocab_size, cli.datamodule.n_classes, optimizer=cli.model.make_optimizer)
    assert again.hparams.optimizer["class_path"] == "torch.optim.adamw.AdamW"
    assert again.hparams.optimizer["init_args"]["lr"] == 3.0e-3
    optimizer = resolve(describe(cli.model.make_optimizer))(again.parameters())
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 3.0e-3

from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.ensemble import EnsembleAdamW, EnsembleTransformer, member_loss, padded_batch

NET = dict(d_model=32, n_heads=4, d_mlp=64)
# three members that differ in model seed, data seed, training-set size, labels and weight decay
MEMBERS = [dict(seed=0, data_seed=0, train_size=60, random_labels=False, weight_decay=1.0),
           dict(seed=1, data_seed=5, train_size=90, random_labels=False, weight_decay=0.3),
           dict(seed=2, data_seed=7, train_size=40, random_labels=True, weight_decay=2.0)]
STEPS, LR = 20, 3e-3


def single_run(member):
    data = ModularArithmeticDataModule("add", 13, train_size=member["train_size"], data_seed=member["data_seed"],
                                       random_labels=member["random_labels"])
    torch.manual_seed(member["seed"])
    model = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **NET),
                           optimizer=partial(torch.optim.AdamW, lr=LR, betas=(0.9, 0.98),
                                             weight_decay=member["weight_decay"]))
    trainer = pl.Trainer(max_steps=STEPS, max_epochs=-1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    return model.net.state_dict(), data


def test_forward_equals_the_members():
    members = [Transformer(14, 13, n_layers=2, **NET) for _ in range(3)]
    tokens = torch.randint(0, 14, (3, 9, 3))
    expected = torch.stack([m(t) for m, t in zip(members, tokens)])
    torch.testing.assert_close(EnsembleTransformer(members)(tokens), expected, rtol=1e-5, atol=1e-5)


def test_k_members_trained_together_equal_k_single_runs():
    singles = [single_run(m) for m in MEMBERS]
    nets = []
    for m in MEMBERS:
        torch.manual_seed(m["seed"])
        nets.append(Transformer(14, 13, **NET))
    ensemble = EnsembleTransformer(nets)
    optimizer = EnsembleAdamW(ensemble.parameters(), lr=torch.full((3,), LR),
                              weight_decay=torch.tensor([m["weight_decay"] for m in MEMBERS]))
    data = [d for _, d in singles]
    tokens, answers, mask = padded_batch(data[0].tokens, torch.stack([d.answers for d in data]),
                                         [d.train_indices for d in data])
    for _ in range(STEPS):
        loss = member_loss(ensemble(tokens), answers, mask)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    # float32: batched and per-member kernels round differently; after 20 AdamW steps the largest difference
    # measured was 1.2e-7
    for k, (state, _) in enumerate(singles):
        together = ensemble.member_state_dict(k)
        for name, value in state.items():
            torch.testing.assert_close(together[name], value, rtol=1e-5, atol=1e-6, msg=f"member {k}: {name}")


def test_layer_norm_members_are_refused():
    with pytest.raises(ValueError, match="without LayerNorm only"):
        EnsembleTransformer([Transformer(5, 4, d_model=8, n_heads=2, d_mlp=8, layer_norm=True)])


def test_ensemble_module_logs_each_member_as_a_run_matching_its_single_run(tmp_path):
    from tests.test_training import scalars

    from lit_grok.cli import main

    net = dict(n_layers=1, d_model=32, n_heads=4, d_mlp=64)
    args = ["fit", "--model=lit_grok.ensemble_module.EnsembleModule", "--model.seeds=[0,1]", "--model.lr=3.0e-3",
            "--model.weight_decay=[1.0,0.3]", "--model.network=lit_grok.Transformer", *[f"--model.network.{k}={v}" for k, v in net.items()],
            "--data=lit_grok.ensemble_module.EnsembleDataModule", "--data.modulus=13", "--data.train_sizes=[60,90]",
            "--data.data_seeds=[0,5]", "--trainer.max_steps=20", "--trainer.check_val_every_n_epoch=10",
            "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}"]
    cli = main(args)
    assert cli.model.hparams.n_members == 2  # linked from the data
    member = scalars(f"{cli.trainer.log_dir}/member_1", "val/loss")
    assert sorted(member) == [9, 19]  # where Lightning logs a single run's validation after 10 and 20 steps
    data = ModularArithmeticDataModule("add", 13, train_size=90, data_seed=5)
    torch.manual_seed(1)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, **net),
                           optimizer=partial(torch.optim.AdamW, lr=3e-3, betas=(0.9, 0.98), weight_decay=0.3))
    trainer = pl.Trainer(max_steps=20, max_epochs=-1, check_val_every_n_epoch=20, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    assert member[19] == pytest.approx(float(trainer.callback_metrics["val/loss"]), rel=1e-5)


def test_mlp_members_train_together_as_their_single_runs():
    from lit_grok import MLP
    from lit_grok.ensemble import EnsembleNetwork
    from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule

    net = dict(d_embed=16, hidden=(32,))
    modules, datas = [], []
    for seed, size, wd in ((0, 60, 1.0), (1, 90, 0.3)):
        data = ModularArithmeticDataModule("add", 13, train_size=size, data_seed=seed)
        torch.manual_seed(seed)
        modules.append(GrokkingModule(data.vocab_size, data.n_classes, network=partial(MLP, **net),
                                      optimizer=partial(torch.optim.AdamW, lr=LR, weight_decay=wd)))
        datas.append(data)
    ensemble = EnsembleModule.from_modules(modules, seeds=[0, 1])
    assert isinstance(ensemble.net, EnsembleNetwork)  # no hand-written stacked MLP: vmap
    singles = []
    for module in modules:
        torch.manual_seed(0)
        single = GrokkingModule(module.hparams.vocab_size, module.hparams.n_classes, network=partial(MLP, **net),
                                optimizer=module.make_optimizer)
        single.net.load_state_dict(module.net.state_dict())
        singles.append(single)
    trainer = dict(max_steps=STEPS, max_epochs=-1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    pl.Trainer(**trainer).fit(ensemble, EnsembleDataModule.from_datamodules(datas))
    for k, (single, data) in enumerate(zip(singles, datas)):
        pl.Trainer(**trainer).fit(single, data)
        for name, value in single.net.state_dict().items():
            torch.testing.assert_close(ensemble.net.member_state_dict(k)[name], value, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one architecture and size"):
        EnsembleModule.from_modules([modules[0], GrokkingModule(14, 13, network=partial(MLP, d_embed=8),
                                                                optimizer=modules[0].make_optimizer)])


def test_per_member_learning_rates_move_with_the_model():
    """They are buffers, so on a GPU the optimiser step finds them on the device (no host copy per step)."""
    from lit_grok.ensemble_module import EnsembleModule

    model = EnsembleModule(12, 11, 2, network=partial(Transformer, d_model=16, n_heads=2, d_mlp=32), lr=[1e-3, 2e-3], weight_decay=[1.0, 0.5])
    assert "lr" not in model.state_dict() and model.lr.tolist() == [1e-3, 2e-3]
    model.to("meta")
    assert model.lr.device.type == "meta" and model.weight_decay.device.type == "meta"


def test_an_ensemble_built_from_modules_loads_back_with_lightnings_own_api(tmp_path):
    from lit_grok import MLP
    from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule

    for network in (partial(Transformer, d_model=16, n_heads=2, d_mlp=32), partial(MLP, d_embed=8, hidden=(16,))):
        modules = []
        for seed, wd in ((3, 1.0), (4, 0.5)):
            torch.manual_seed(seed)
            modules.append(GrokkingModule(12, 11, network=network, optimizer=partial(torch.optim.AdamW, lr=2e-3,
                                                                                      weight_decay=wd)))
        model = EnsembleModule.from_modules(modules, seeds=[3, 4])
        # the constructor alone, from the same settings and seeds, builds the same members
        again = EnsembleModule(12, 11, 2, seeds=[3, 4], network=network, lr=2e-3, weight_decay=[1.0, 0.5])
        for name, value in model.net.state_dict().items():
            assert torch.equal(again.net.state_dict()[name], value), name
        data = EnsembleDataModule("add", 11, [30, 40])
        trainer = pl.Trainer(max_steps=3, max_epochs=-1, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                             check_val_every_n_epoch=1)
        trainer.fit(model, data)
        trainer.save_checkpoint(tmp_path / "ensemble.ckpt")
        loaded = EnsembleModule.load_from_checkpoint(tmp_path / "ensemble.ckpt")
        assert loaded.hparams.weight_decay == [1.0, 0.5] and loaded.hparams.seeds == [3, 4]
        for name, value in model.net.state_dict().items():
            assert torch.equal(loaded.net.state_dict()[name], value), name
        assert torch.equal(loaded.weight_decay, model.weight_decay)

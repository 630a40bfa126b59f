"""Gradient filters (lit_grok.optim) and StableMax (lit_grok.losses), each checked against its definition."""

from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.losses import stablemax, stablemax_cross_entropy
from lit_grok.optim import FixedNorm, GrokfastEMA, GrokfastMA, OrthogonalGradient
from tests.conftest import checkpoint_at

NET = partial(Transformer, d_model=16, n_heads=2, d_mlp=32)


def _param(values, grad):
    p = torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))
    p.grad = torch.tensor(grad, dtype=torch.float64)
    return p


def test_grokfast_ema_adds_the_amplified_running_average():
    p = _param([0.0, 0.0], [1.0, 2.0])
    ema = GrokfastEMA(alpha=0.5, lamb=2.0)
    ema([p])  # the first gradient starts the average: g + 2 g
    assert p.grad.tolist() == [3.0, 6.0]
    p.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    ema([p])  # h = 0.5 [1, 2] + 0.5 [3, 0] = [2, 1]
    assert p.grad.tolist() == [7.0, 2.0]


def test_grokfast_ma_waits_for_a_full_window_then_adds_its_mean():
    ma = GrokfastMA(window=2, lamb=1.0)
    p, q = _param([0.0], [1.0]), _param([0.0, 0.0], [2.0, 4.0])
    ma([p, q])
    assert p.grad.tolist() == [1.0] and q.grad.tolist() == [2.0, 4.0]  # one gradient: not yet
    p.grad, q.grad = torch.tensor([3.0], dtype=torch.float64), torch.tensor([0.0, 0.0], dtype=torch.float64)
    ma([p, q])  # mean of the two: [2], [1, 2]
    assert p.grad.tolist() == [5.0] and q.grad.tolist() == [1.0, 2.0]
    assert ma.buffer.shape == (2, 3)  # one ring buffer over all parameters


def test_orthogonal_gradient_drops_the_component_along_the_weights_and_keeps_the_norm():
    p = _param([1.0, 0.0], [3.0, 4.0])
    OrthogonalGradient()([p])
    assert p.grad.tolist() == [0.0, 5.0]  # [0, 4] rescaled to |[3, 4]| = 5
    w = torch.randn(4, 3, dtype=torch.float64)
    q = _param(w.tolist(), torch.randn(4, 3).tolist())
    before = q.grad.norm()
    OrthogonalGradient()([q])
    assert float((q.grad * w).sum()) == pytest.approx(0.0, abs=1e-10)
    assert float(q.grad.norm()) == pytest.approx(float(before))


def test_stablemax_is_linear_above_zero_reciprocal_below_and_a_proper_loss():
    x = torch.tensor([-3.0, -1.0, 0.0, 2.0])
    assert stablemax(x).tolist() == [0.25, 0.5, 1.0, 3.0]
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    loss = stablemax_cross_entropy(logits, torch.tensor([0]))
    assert float(loss) == pytest.approx(-torch.log(torch.tensor(3.0 / (3.0 + 1.0 + 0.5))).item())
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    big = torch.tensor([[200.0, 0.0, 0.0]])  # softmax rounds to exactly 1 here; StableMax does not
    assert float(stablemax_cross_entropy(big, torch.tensor([0]))) > 0
    per_example = stablemax_cross_entropy(torch.randn(5, 3), torch.arange(5) % 3, reduction="none")
    assert per_example.shape == (5,)


def _fit(tmp_path, steps, ckpt_path=None, **module):
    torch.manual_seed(0)
    data = ModularArithmeticDataModule("add", 11, train_size=60)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=NET, **module)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1)
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=5,
                         callbacks=[saver], default_root_dir=tmp_path)
    trainer.fit(model, data, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("filters", [lambda: [GrokfastEMA()], lambda: [GrokfastMA(window=3)],
                                     lambda: [OrthogonalGradient()]], ids=["ema", "ma", "orthogonal"])
def test_filtered_runs_change_the_trajectory_and_resume_exactly(tmp_path, filters):
    plain = _fit(tmp_path / "plain", 10)
    full = _fit(tmp_path / "full", 10, grad_filters=filters())
    resumed = _fit(tmp_path / "resumed", 10, ckpt_path=checkpoint_at(tmp_path / "full", 5), grad_filters=filters())
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), full.parameters()))
    for a, b in zip(full.parameters(), resumed.parameters()):  # the filter's state came back with the checkpoint
        assert torch.equal(a, b)


def test_fixed_norm_rescales_every_parameter_together_to_its_target():
    a, b = _param([3.0, 0.0], [0.0, 0.0]), _param([[0.0, 4.0]], [[0.0, 0.0]])
    FixedNorm(norm=10.0)([a, b])  # norm 5 -> 10: every entry doubled, shapes kept
    assert a.tolist() == [6.0, 0.0] and b.tolist() == [[0.0, 8.0]]
    first = FixedNorm(scale=0.5)  # the target: half the norm at the first step, then held
    first([a, b])
    assert first.target == 5.0 and a.tolist() == [3.0, 0.0] and b.tolist() == [[0.0, 4.0]]
    a.data.mul_(3.0)
    first([a, b])
    assert float(torch.cat([a.flatten(), b.flatten()]).norm()) == pytest.approx(5.0, rel=1e-12)
    for bad, message in (({"norm": 0.0}, "norm must be > 0"), ({"scale": -1.0}, "scale must be > 0")):
        with pytest.raises(ValueError, match=message):
            FixedNorm(**bad)


def test_a_fixed_norm_run_holds_its_norm_and_resumes_exactly(tmp_path):
    from lit_grok.module import parameter_norm

    opt = partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.0)
    start = _fit(tmp_path / "start", 0, optimizer=opt)
    full = _fit(tmp_path / "full", 10, optimizer=opt, norm_constraint=FixedNorm(scale=2.0))
    assert full.norm_constraint.target == pytest.approx(2.0 * float(parameter_norm(start)), rel=1e-6)
    assert float(parameter_norm(full)) == pytest.approx(full.norm_constraint.target, rel=1e-5)
    resumed = _fit(tmp_path / "resumed", 10, ckpt_path=checkpoint_at(tmp_path / "full", 5), optimizer=opt,
                   norm_constraint=FixedNorm(scale=2.0))  # its target comes from the checkpoint, not step 5
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="ensembles do not support norm_constraint"):
        from lit_grok.ensemble_module import EnsembleModule

        EnsembleModule.from_modules([full, resumed])


def test_a_stablemax_run_trains_and_measures_its_own_loss(tmp_path):
    model = _fit(tmp_path, 5, loss_function="stablemax")
    logits, answers = torch.randn(4, 11), torch.arange(4)
    assert float(model.loss(logits, answers)) == pytest.approx(float(stablemax_cross_entropy(logits.double(), answers)))


def test_ensembles_take_grokfast_per_member_and_refuse_what_they_cannot_reproduce():
    from lit_grok.ensemble_module import EnsembleModule

    def module(seed, **kw):
        torch.manual_seed(seed)
        return GrokkingModule(12, 11, network=NET, **kw)

    ensemble = EnsembleModule.from_modules([module(0, grad_filters=[GrokfastEMA()]), module(1, grad_filters=[GrokfastEMA()])])
    assert [type(f) for f in ensemble.grad_filters] == [GrokfastEMA]
    with pytest.raises(ValueError, match="must share their grad_filters"):
        EnsembleModule.from_modules([module(0, grad_filters=[GrokfastEMA()]), module(1, grad_filters=[GrokfastEMA(lamb=5.0)])])
    with pytest.raises(ValueError, match="loss_function 'stablemax' needs single runs"):
        EnsembleModule.from_modules([module(0, loss_function="stablemax"), module(1, loss_function="stablemax")])
    with pytest.raises(ValueError, match="OrthogonalGradient acts on whole tensors"):
        EnsembleModule(12, 11, 2, network=NET, grad_filters=[OrthogonalGradient()])


def test_grokfast_in_an_ensemble_filters_each_member_as_its_single_run():
    from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule

    def members():
        modules, datas = [], []
        for seed, wd in ((0, 1.0), (1, 0.3)):
            torch.manual_seed(seed)
            datas.append(ModularArithmeticDataModule("add", 11, train_size=60, data_seed=seed))
            modules.append(GrokkingModule(12, 11, network=NET, grad_filters=[GrokfastEMA(alpha=0.9, lamb=2.0)],
                                          optimizer=partial(torch.optim.AdamW, lr=3e-3, betas=(0.9, 0.98), weight_decay=wd)))
        return modules, datas

    def trainer():
        return pl.Trainer(max_steps=15, max_epochs=-1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                          enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=5)

    alone, datas = members()
    for module, data in zip(alone, datas):
        trainer().fit(module, data)
    modules, datas = members()
    together = EnsembleModule.from_modules(modules, seeds=[0, 1])
    trainer().fit(together, EnsembleDataModule.from_datamodules(datas))
    for k, module in enumerate(alone):
        for name, value in module.net.state_dict().items():
            torch.testing.assert_close(together.net.member_state_dict(k)[name], value, rtol=1e-4, atol=1e-5)


def test_stablemax_gradient_matches_its_formula():
    # d/dx_j of -log(s(x_y) / S): s'(x_j) (1 / S - [j = y] / s(x_y)); s'(x) = 1 above 0, 1 / (1 - x)^2 below
    x = torch.tensor([[1.5, -0.5, 0.25]], dtype=torch.float64, requires_grad=True)
    stablemax_cross_entropy(x, torch.tensor([2])).backward()
    s = torch.tensor([2.5, 1 / 1.5, 1.25], dtype=torch.float64)
    ds = torch.tensor([1.0, 1 / 1.5**2, 1.0], dtype=torch.float64)
    expected = ds * (1 / s.sum() - torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) / s[2])
    torch.testing.assert_close(x.grad[0], expected)

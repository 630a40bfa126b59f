import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule, MLP, Transformer
from lit_grok.callbacks import CircuitEfficiency, GrokEvents, StopOnConvergence
from lit_grok.callbacks.efficiency import gen_fraction, group_norms, logit_stats, split_circuits
from lit_grok.module import parameter_norm
from lit_grok.tasks import OPERATIONS


@pytest.mark.parametrize("net", [Transformer(12, 11, n_layers=2, d_model=16, d_mlp=32, layer_norm=True),
                                 MLP(12, 11, d_embed=8, hidden=(16, 16))], ids=["transformer", "mlp"])
def test_norm_groups_sum_in_squares_to_the_global_norm(net):
    groups = group_norms(net)
    total = torch.stack(list(groups.values())).pow(2).sum().sqrt()
    torch.testing.assert_close(total, parameter_norm(net))
    assert {"embed", "mlp", "unembed"} <= set(groups)


def test_transformer_groups_are_by_module_type():
    groups = group_norms(Transformer(12, 11, n_layers=2, d_model=16, d_mlp=32))
    assert set(groups) == {"embed", "attn", "mlp", "unembed"}
    net = Transformer(12, 11, n_layers=2, d_model=16, d_mlp=32)
    attn = torch.cat([p.flatten() for b in net.blocks for p in b.attn.parameters()]).norm()
    torch.testing.assert_close(group_norms(net)["attn"], attn)


def test_logit_statistics_on_hand_built_logits():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    stats = logit_stats(logits, torch.tensor([0, 2]))
    assert float(stats["correct"]) == pytest.approx((4 / 3 + 5 / 3) / 2)  # centred: 2 - 2/3 and 3 - 4/3
    assert float(stats["margin"]) == pytest.approx(2.0)
    p0 = math.exp(2) / (math.exp(2) + 2)
    p1 = math.exp(3) / (1 + math.e + math.exp(3))
    assert float(stats["prob"]) == pytest.approx((p0 + p1) / 2)


P = 7


def _relation():
    a, b = torch.cartesian_prod(torch.arange(P), torch.arange(P)).unbind(-1)
    return OPERATIONS["add"].relation(a[:, None], b[:, None], torch.arange(P)[None, :], P)  # [P^2, P]


def _fraction(table):
    return float(gen_fraction(*split_circuits(table, _relation())))


def test_a_fourier_circuit_is_all_generalising():
    # Nanda et al.'s circuit: logits sum_k beta_k cos(w_k (a + b - c)), plus a per-example shift softmax ignores
    r = _relation().double()
    table = sum(beta * torch.cos(2 * math.pi * k * r / P) for k, beta in [(1, 2.0), (3, 0.7)])
    gen, mem = split_circuits(table + torch.randn(P * P, 1, dtype=torch.float64), _relation())
    assert mem.abs().max() < 1e-12
    assert float(gen_fraction(gen, mem)) == pytest.approx(1.0)
    torch.testing.assert_close(gen, table - table.mean(-1, keepdim=True))


def test_sine_terms_of_r_are_not_in_the_trigonometric_subspace():
    # App. B projects onto cos(w r): a sine of r (a function of r, but odd) is all residual
    r = _relation().double()
    assert _fraction(torch.sin(2 * math.pi * 2 * r / P)) < 1e-12
    mixed = torch.cos(2 * math.pi * 2 * r / P) + torch.sin(2 * math.pi * 2 * r / P)  # equal norms
    assert _fraction(mixed) == pytest.approx(1 / math.sqrt(2))  # a share of the norm, not of its square


def test_random_logits_have_the_share_of_a_random_vector():
    # the cosines span (P - 1) / 2 of the P^2 (P - 1) centred dimensions: norm share ~ 1 / (P sqrt(2))
    generator = torch.Generator().manual_seed(0)
    fractions = [_fraction(torch.randn(P * P, P, generator=generator, dtype=torch.float64)) for _ in range(20)]
    assert sum(fractions) / len(fractions) == pytest.approx(1 / (P * math.sqrt(2)), rel=0.2)


def test_efficiency_callback_logs_its_metrics_in_a_run(tmp_path):
    data = ModularArithmeticDataModule("add", 11, train_size=60)
    model = GrokkingModule(data.vocab_size, data.n_classes)
    trainer = pl.Trainer(max_steps=4, max_epochs=-1, check_val_every_n_epoch=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, callbacks=[CircuitEfficiency()],
                         default_root_dir=tmp_path)
    trainer.fit(model, data)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["efficiency/train"] == pytest.approx(m["logits/train_correct"] / m["norm/params"], rel=1e-5)
    squares = sum(m[f"norm/{g}"] ** 2 for g in ("embed", "attn", "mlp", "unembed"))
    assert math.sqrt(squares) == pytest.approx(m["norm/params"], rel=1e-5)
    assert 0 < m["circuits/gen_fraction"] < 1
    assert {"circuits/gen_logit", "circuits/mem_logit_train", "circuits/mem_logit_val"} <= set(m)
    assert not any(name.startswith("circuits/gen_logit_") for name in m)  # one number, logged once
    # App. B's projection done independently: least squares of the centred table on the cosine basis
    with torch.no_grad():
        z = model(data.tokens).double()
    z = (z - z.mean(-1, keepdim=True)).flatten()
    a, b = data.tokens[:, 0, None], data.tokens[:, 1, None]
    r = ((a + b - torch.arange(11)[None, :]) % 11).flatten().double()
    basis = torch.stack([torch.cos(2 * math.pi * k * r / 11) for k in range(1, 6)], 1)  # [N * C, 5]
    gen = basis @ torch.linalg.lstsq(basis, z[:, None]).solution
    assert m["circuits/gen_fraction"] == pytest.approx(float(gen.norm() / z.norm()), rel=1e-4)
    assert m["circuits/gen_logit"] == pytest.approx(float(gen[r == 0].mean()), rel=1e-4, abs=1e-6)


def _trainer(step, train_acc, val_acc):
    return SimpleNamespace(global_step=step, sanity_checking=False, should_stop=False, loggers=[],
                           callback_metrics={"train/acc": torch.tensor(train_acc), "val/acc": torch.tensor(val_acc)})


SCRIPT = [(100, 0.5, 0.0), (200, 0.995, 0.01), (300, 1.0, 0.4), (400, 1.0, 0.991), (500, 1.0, 0.2), (600, 1.0, 1.0)]


def test_grok_events_from_a_scripted_run_and_after_resume():
    events = GrokEvents(stop_after=150)
    stops = []
    for i, (step, train, val) in enumerate(SCRIPT):
        trainer = _trainer(step, train, val)
        events.on_validation_end(trainer, None)
        stops.append(trainer.should_stop)
        if i == 2:  # checkpoint and resume mid-run
            state = events.state_dict()
            events = GrokEvents(stop_after=150)
            events.load_state_dict(state)
    assert events.summary() == {"events/memorised_step": 200, "events/grokked_step": 400, "events/grok_delay": 200}
    assert stops == [False, False, False, False, False, True]


def test_convergence_waits_for_every_monitored_metric():
    stop = StopOnConvergence(monitor=("train/loss", "norm/params"), rel_tol=1e-2, window=3)
    losses = [1.0, 0.5, 0.3, 0.3, 0.301, 0.3, 0.3]
    norms = [10, 9, 8, 8.5, 8.0, 8.01, 8.02]
    stopped = []
    for step, (loss, norm) in enumerate(zip(losses, norms)):
        trainer = SimpleNamespace(global_step=step, sanity_checking=False, should_stop=False, loggers=[],
                                  callback_metrics={"train/loss": torch.tensor(loss), "norm/params": torch.tensor(norm)})
        stop.on_validation_end(trainer, None)
        stopped.append(trainer.should_stop)
    assert stopped == [False] * 6 + [True] and stop.converged_step == 6


def test_convergence_names_a_metric_that_is_not_logged():
    stop = StopOnConvergence(monitor=("nope",))
    with pytest.raises(KeyError, match="monitors \\['nope'\\], which were not logged"):
        stop.on_validation_end(_trainer(1, 0.0, 0.0), None)

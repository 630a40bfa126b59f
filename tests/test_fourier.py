"""Nanda et al.'s progress measures (lit_grok.callbacks.ProgressMeasures) on constructed inputs and in a run."""

import math
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
from lit_grok.callbacks import ProgressMeasures
from lit_grok.callbacks.fourier import cosine_terms, embedding_spectrum, fourier_basis, ipr, key_frequencies
from lit_grok.tasks import OPERATIONS


@pytest.mark.parametrize("p", [7, 8])
def test_the_fourier_basis_is_orthonormal_and_orthogonal_to_constants(p):
    basis, freqs = fourier_basis(p)
    assert basis.shape == (p - 1, p) and freqs.tolist()[:2] == [1, 1] and int(freqs.max()) == p // 2
    torch.testing.assert_close(basis @ basis.T, torch.eye(p - 1, dtype=torch.float64))
    assert basis.sum(1).abs().max() < 1e-12


def test_an_embedding_built_from_two_frequencies_has_those_as_its_key_frequencies():
    p, n = 13, torch.arange(13, dtype=torch.float64)
    waves = [torch.cos(2 * math.pi * 3 * n / p), torch.sin(2 * math.pi * 3 * n / p), torch.cos(2 * math.pi * 5 * n / p)]
    weight = torch.stack([3 * waves[0], 3 * waves[1], waves[2], torch.ones(p)], 1)  # + a constant column
    energies = embedding_spectrum(weight)
    assert energies.shape == (6,) and energies[[0, 1, 3, 5]].abs().max() < 1e-9  # k = 1, 2, 4, 6: nothing
    assert float(energies[2] / energies[4]) == pytest.approx(18.0)  # (3^2 + 3^2) / 1^2
    assert key_frequencies(energies, share=0.9) == [3] and key_frequencies(energies, share=0.99) == [3, 5]
    assert float(ipr(energies)) == pytest.approx((18 / 19) ** 2 + (1 / 19) ** 2)
    flat = torch.ones(6)
    assert float(ipr(flat)) == pytest.approx(1 / 6) and len(key_frequencies(flat, share=0.9)) == 6


def test_restricted_terms_keep_the_key_frequencies_and_nothing_else():
    p = 11
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(-1)
    relation = OPERATIONS["add"].relation(a[:, None], b[:, None], torch.arange(p)[None, :], p)  # [p^2, p]
    r = relation.double()
    two, five = 2.0 * torch.cos(2 * math.pi * 2 * r / p), 0.5 * torch.cos(2 * math.pi * 5 * r / p)
    noise = torch.sin(2 * math.pi * 1 * r / p)  # a function of r outside the cosines
    table = two + five + noise + 7.0  # the shift is centred away
    torch.testing.assert_close(cosine_terms(table, relation, [2]), two)
    torch.testing.assert_close(cosine_terms(table, relation, [2, 5]), two + five)
    assert cosine_terms(table, relation, []).abs().max() == 0


def test_the_callback_logs_its_measures_and_draws_the_spectrum(tmp_path):
    data = ModularArithmeticDataModule("add", 11, train_size=60)
    model = GrokkingModule(data.vocab_size, data.n_classes)
    measures = ProgressMeasures()
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="", version="")
    trainer = pl.Trainer(max_steps=4, max_epochs=-1, check_val_every_n_epoch=2, logger=logger,
                         enable_checkpointing=False, enable_progress_bar=False, callbacks=[measures])
    trainer.fit(model, data)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert 1 <= m["fourier/n_key_freqs"] <= 5 and 1 / 5 <= m["fourier/ipr"] <= 1
    assert m["progress/restricted_loss"] > 0 and m["progress/excluded_loss"] > 0
    assert 0 <= m["progress/softmax_collapse"] <= 1
    energies = embedding_spectrum(model.net.embed.weight.detach()[:11])
    assert m["fourier/n_key_freqs"] == len(key_frequencies(energies, 0.9))  # measured on the trained embedding
    assert (tmp_path / "fourier.png").stat().st_size > 0
    from lit_grok.reports import progress  # the run's measures read back from TensorBoard

    result = progress.report(tmp_path, threshold=100.0)
    assert result["first_below_100"]["progress/restricted_loss"] == 2  # the first validation, after 2 steps
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    assert rows[0].startswith("step,train/loss,val/loss,progress/restricted_loss") and len(rows) == 3
    assert progress.first_below({10: 1.0, 20: 0.05, 30: 0.01}, 0.1) == 20
    with pytest.raises(ValueError, match="ProgressMeasures needs the operation add or sub"):
        measures.check_data(ModularArithmeticDataModule("div", 11, train_size=60))


def test_softmax_collapse_counts_answers_whose_float32_probability_is_exactly_one():
    from lit_grok.callbacks.fourier import softmax_collapse

    answers = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 5)
    # float32 rounds 1 - 4 exp(-20) = 1 - 8e-9 up to 1 (its epsilon is 6e-8), but not 1 - 4 exp(-10)
    logits[0, 0], logits[1, 1], logits[2, 2] = 20.0, 10.0, 200.0
    logits[3, 0] = 200.0  # a wrong answer at probability 1: its answer's probability is 0
    assert float(softmax_collapse(logits, answers)) == 0.5
    assert float(softmax_collapse(logits.double(), answers)) == 0.5  # measured in float32 whatever comes in


class FourierNet(torch.nn.Module):
    """A network whose logits are exactly 3 cos(w_3 (a+b-c)) + 2 cos(w_5 (a+b-c)), and whose embedding holds
    the same two frequencies (equal energies) and nothing else."""

    def __init__(self, p):
        super().__init__()
        n = torch.arange(p + 1, dtype=torch.float32)  # the "=" token's row is never read by the spectrum
        w = [2 * math.pi * k * n / p for k in (3, 5)]
        self.embed = torch.nn.Embedding(p + 1, 4)
        self.embed.weight.data = torch.stack([torch.cos(w[0]), torch.sin(w[0]), torch.cos(w[1]), torch.sin(w[1])], 1)
        self.p = p
        self.scale = torch.nn.Parameter(torch.ones(()))  # something for the optimiser

    def forward(self, tokens):
        r = (tokens[:, 0, None] + tokens[:, 1, None] - torch.arange(self.p)[None, :]) % self.p
        w = 2 * math.pi * r / self.p
        return self.scale * (3 * torch.cos(3 * w) + 2 * torch.cos(5 * w))


def test_restricted_and_excluded_loss_on_a_network_made_of_two_fourier_terms():
    p = 13
    data = ModularArithmeticDataModule("add", p, train_size=80)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=lambda vocab, classes: FourierNet(p),
                           optimizer=partial(torch.optim.SGD, lr=1e-12))
    trainer = pl.Trainer(max_steps=1, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[ProgressMeasures()], num_sanity_val_steps=0)
    trainer.fit(model, data)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["fourier/n_key_freqs"] == 2 and m["fourier/ipr"] == pytest.approx(0.5)
    assert m["progress/restricted_loss"] == pytest.approx(m["train/loss"], rel=1e-5)  # the key terms are all of it
    assert m["progress/excluded_loss"] == pytest.approx(math.log(p), rel=1e-5)  # nothing left: uniform


def test_fixed_key_frequencies_split_the_logits_as_given_and_are_written_for_the_next_run(tmp_path):
    import json

    import torch.nn.functional as F

    p = 13
    data = ModularArithmeticDataModule("add", p, train_size=80)
    model = GrokkingModule(data.vocab_size, data.n_classes, network=lambda vocab, classes: FourierNet(p),
                           optimizer=partial(torch.optim.SGD, lr=1e-12))
    measures = ProgressMeasures(key_frequencies=[3])
    trainer = pl.Trainer(max_steps=1, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[measures], num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, data)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    pairs, answers = data.pairs[data.train_indices], data.answers[data.train_indices]
    w = 2 * math.pi * ((pairs[:, :1] + pairs[:, 1:] - torch.arange(p)[None, :]) % p) / p  # [N, C]
    # frequency 3's term alone, and what is left without it (frequency 5's): the spectrum still counts two
    assert m["progress/restricted_loss"] == pytest.approx(float(F.cross_entropy(3 * torch.cos(3 * w), answers)), rel=1e-5)
    assert m["progress/excluded_loss"] == pytest.approx(float(F.cross_entropy(2 * torch.cos(5 * w), answers)), rel=1e-5)
    assert m["fourier/n_key_freqs"] == 2
    written = json.loads((tmp_path / "fourier.json").read_text())
    assert written["key_frequencies"] == [3, 5] and written["fixed_key_frequencies"] == [3]
    with pytest.raises(ValueError, match="go up to P/2 = 6 at P = 13"):
        ProgressMeasures(key_frequencies=[7]).check_data(data)
    with pytest.raises(ValueError, match="frequencies k >= 1"):
        ProgressMeasures(key_frequencies=[0])


def test_each_ensemble_member_gets_its_own_progress_measures(tmp_path):
    from lit_grok.callbacks import Members
    from lit_grok.ensemble_module import EnsembleDataModule, EnsembleModule

    data = EnsembleDataModule("add", 11, [40, 80])
    model = EnsembleModule(data.vocab_size, data.n_classes, 2, network=partial(Transformer, d_model=16, n_heads=2, d_mlp=32))
    members = Members([[ProgressMeasures()], [ProgressMeasures()]])
    trainer = pl.Trainer(max_steps=4, max_epochs=-1, check_val_every_n_epoch=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[members], num_sanity_val_steps=0)
    trainer.fit(model, data)
    (first, _), (second, _) = members.results(trainer)
    for k, metrics in enumerate((first, second)):
        energies = embedding_spectrum(model.net.member(k).embed.weight.detach()[:11])
        assert metrics["fourier/n_key_freqs"] == len(key_frequencies(energies, 0.9))  # member k's own embedding
        assert "progress/restricted_loss" in metrics and "progress/softmax_collapse" in metrics


def test_both_measures_share_one_forward_over_the_table_per_validation(monkeypatch):
    from functools import partial
    from types import SimpleNamespace

    from lit_grok import GrokkingModule, ModularArithmeticDataModule, Transformer
    from lit_grok.callbacks import CircuitEfficiency, ProgressMeasures

    data = ModularArithmeticDataModule("add", 11, train_size=60)
    module = GrokkingModule(data.vocab_size, data.n_classes, network=partial(Transformer, d_model=16, n_heads=4, d_mlp=32))
    calls, forward = [], module.forward
    monkeypatch.setattr(module, "forward", lambda tokens: calls.append(len(tokens)) or forward(tokens))
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    trainer = SimpleNamespace(sanity_checking=False, datamodule=data, global_step=100)
    for callback in (CircuitEfficiency(), ProgressMeasures()):
        callback.on_validation_epoch_end(trainer, module)
    assert calls == [121]  # one forward over the 11^2 pairs for both
    trainer.global_step = 200  # the next validation: the weights have changed
    CircuitEfficiency().on_validation_epoch_end(trainer, module)
    assert calls == [121, 121]


def test_the_number_embedding_of_a_one_hot_mlp_is_its_first_layers_columns():
    from lit_grok.callbacks.fourier import number_embedding
    from lit_grok.model import MLP, OneHotMLP

    net = OneHotMLP(14, 13, hidden=(8,))
    assert torch.equal(number_embedding(net, 13), net.layers[0].weight[:, :13].T)  # [p, hidden]: operand a's
    mlp = MLP(14, 13, d_embed=4)
    assert torch.equal(number_embedding(mlp, 13), mlp.embed.weight[:13])
    with pytest.raises(ValueError, match="Linear has none"):
        number_embedding(torch.nn.Linear(2, 2), 13)

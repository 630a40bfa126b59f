import re

import pytest
import torch

from lit_grok.data import ModularArithmeticDataModule, TensorBatches


def dm(**kw):
    kw.setdefault("modulus", 11)
    kw.setdefault("train_size", 40)
    return ModularArithmeticDataModule(**kw)


def test_tokens_are_a_b_equals_and_sizes():
    d = dm()
    assert d.vocab_size == 12 and d.n_classes == 11
    assert d.tokens.shape == (121, 3)
    assert (d.tokens[:, 2] == 11).all()
    assert d.answers.tolist() == ((d.tokens[:, 0] + d.tokens[:, 1]) % 11).tolist()


def test_op_token_writes_a_op_b_equals_and_pairs_stay_a_b():
    d = dm(operation="mul_nonzero", op_token=True)  # Grokfast's task and format: y in 1..P-1, "a op b ="
    assert d.vocab_size == 13 and d.n_classes == 11 and d.tokens.shape == (110, 4)
    assert (d.tokens[:, 1] == 12).all() and (d.tokens[:, 3] == 11).all() and (d.tokens[:, 2] != 0).all()
    assert torch.equal(d.pairs, d.tokens[:, [0, 2]]) and torch.equal(d.answers, d.pairs[:, 0] * d.pairs[:, 1] % 11)
    assert torch.equal(dm().pairs, dm().tokens[:, :2])


def test_split_is_disjoint_and_complete():
    d = dm()
    train, val = set(d.train_indices.tolist()), set(d.val_indices.tolist())
    assert len(train) == 40 and not train & val and train | val == set(range(121))


def test_train_fraction_rounds_to_a_count():
    assert dm(train_size=None, train_fraction=0.3).train_size == 36  # 36.3 pairs of 121
    assert dm(train_size=None, train_fraction=0.5).train_size == 60  # 60.5: half to even, as Python's round
    assert dm(train_size=None, train_fraction=1.0).train_size == 121


def test_split_is_determined_by_data_seed_alone():
    torch.manual_seed(123)
    a = dm(data_seed=5)
    torch.manual_seed(999)
    b = dm(data_seed=5)
    assert torch.equal(a.train_indices, b.train_indices)
    assert not torch.equal(a.train_indices, dm(data_seed=6).train_indices)


def test_random_labels_are_reproducible_and_not_the_task():
    a, b = dm(random_labels=True, data_seed=1), dm(random_labels=True, data_seed=1)
    assert torch.equal(a.answers, b.answers)
    assert not torch.equal(a.answers, dm(random_labels=True, data_seed=2).answers)
    true = dm().answers
    assert (a.answers == true).float().mean() < 0.3
    assert a.answers.min() >= 0 and a.answers.max() < 11


def test_full_batch_yields_the_whole_training_set_once():
    d = dm()
    d.setup("fit")
    batches = list(d.train_dataloader())
    assert len(batches) == 1 and len(d.train_dataloader()) == 1
    tokens, answers, n = batches[0]
    assert torch.equal(tokens, d.tokens[d.train_indices]) and n == 40
    assert torch.equal(answers, (tokens[:, 0] + tokens[:, 1]) % 11)  # the task's answers, row for row
    val, train_eval = d.val_dataloader()
    val_tokens, val_answers, _ = next(iter(val))
    assert torch.equal(val_tokens, d.tokens[d.val_indices]) and torch.equal(val_answers, d.answers[d.val_indices])
    assert len(val_answers) == 81 and torch.equal(next(iter(train_eval))[0], tokens)


def test_minibatches_are_seeded_shuffles_that_cover_the_set():
    tokens, answers = torch.arange(30).unsqueeze(1), torch.arange(30)
    epoch = [0]
    batches = TensorBatches(tokens, answers, batch_size=8, shuffle_seed=3, epoch=lambda: epoch[0])
    first = [b[1].tolist() for b in batches]
    assert len(batches) == 4 and [len(b) for b in first] == [8, 8, 8, 6]
    assert sorted(sum(first, [])) == list(range(30))
    assert first == [b[1].tolist() for b in batches]  # same epoch, same order
    epoch[0] = 1
    assert first != [b[1].tolist() for b in batches]  # next epoch, new order


def test_state_dict_restores_the_split_and_rejects_another_task():
    a, b = dm(data_seed=1), dm(data_seed=1)
    b.set_split(a.val_indices[:5], a.train_indices)
    a.load_state_dict(b.state_dict())
    assert torch.equal(a.train_indices, b.train_indices)
    with pytest.raises(ValueError, match="the checkpoint's data differs from the config's: operation='sub' there"):
        a.load_state_dict(dm(operation="sub", data_seed=1).state_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_size": 0}, "train_size must be between 1 and 121"),
        ({"train_size": 122}, "train_size must be between 1 and 121"),
        ({"train_size": 10, "train_fraction": 0.5}, "give exactly one of train_size"),
        ({"train_size": None}, "give exactly one of train_size"),
        ({"train_size": None, "train_fraction": 1.5}, "train_fraction must lie in (0, 1], got 1.5"),
        ({"train_size": None, "train_fraction": 0.0}, "train_fraction must lie in (0, 1], got 0.0"),
        ({"modulus": 1}, "modulus must be >= 2"),
        ({"operation": "div", "modulus": 12}, "needs a prime modulus"),
        ({"operation": "nope"}, "unknown operation 'nope'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_bad_input_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dm(**kwargs)


def test_ranks_take_disjoint_shards_that_cover_each_batch():
    tokens, answers = torch.arange(21).unsqueeze(1), torch.arange(21)
    for batch_size in (None, 8):
        shards = [list(TensorBatches(tokens, answers, batch_size, shuffle_seed=1, rank=r, world=2)) for r in (0, 1)]
        assert len(shards[0]) == len(shards[1])
        for (t0, a0, n0), (t1, a1, n1) in zip(*shards):
            assert n0 == n1 == len(a0) + len(a1)
            assert set(a0.tolist()).isdisjoint(a1.tolist())
        covered = sorted(sum((a.tolist() for shard in shards for _, a, _ in shard), []))
        assert covered == list(range(21))  # odd size: 11 + 10, nothing padded or duplicated

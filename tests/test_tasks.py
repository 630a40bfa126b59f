import itertools

import pytest
import torch

from lit_grok.tasks import OPERATIONS, S5_ORDER, check_task, make_table

P = 7  # prime, small: every pair is checked


def _inv(y: int) -> int:
    return next(k for k in range(P) if k * y % P == 1)


PLAIN = {
    "add": lambda x, y: (x + y) % P,
    "sub": lambda x, y: (x - y) % P,
    "mul": lambda x, y: (x * y) % P,
    "div": lambda x, y: (x * _inv(y)) % P,
    "odd_div_else_sub": lambda x, y: (x * _inv(y)) % P if y % 2 == 1 else (x - y) % P,
    "square_sum": lambda x, y: (x**2 + y**2) % P,
    "quad1": lambda x, y: (x**2 + x * y + y**2) % P,
    "quad2": lambda x, y: (x**2 + x * y + y**2 + x) % P,
    "cubic1": lambda x, y: (x**3 + x * y) % P,
    "cubic2": lambda x, y: (x**3 + x * y**2 + y) % P,
    "mul_nonzero": lambda x, y: (x * y) % P,
}

PERMS = list(itertools.permutations(range(5)))


def _compose(x, y):
    return tuple(x[y[i]] for i in range(5))


def _inverse(x):
    return tuple(sorted(range(5), key=lambda i: x[i]))


PLAIN_S5 = {
    "s5_compose": lambda x, y: _compose(x, y),
    "s5_conjugate": lambda x, y: _compose(_compose(x, y), _inverse(x)),
    "s5_xyx": lambda x, y: _compose(_compose(x, y), x),
}


def test_table_covers_every_operation():
    assert set(OPERATIONS) == set(PLAIN) | set(PLAIN_S5)


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_modular_operation_matches_python(name):
    pairs, answers = make_table(name, P)
    expected_pairs = [(x, y) for x in range(P) for y in range(P) if not (name in ("div", "mul_nonzero") and y == 0)]
    assert pairs.tolist() == [list(p) for p in expected_pairs]
    assert answers.tolist() == [PLAIN[name](x, y) for x, y in expected_pairs]


@pytest.mark.parametrize("name", sorted(PLAIN_S5))
def test_permutation_operation_matches_python(name):
    pairs, answers = make_table(name, None)
    assert len(pairs) == S5_ORDER**2
    index = {p: i for i, p in enumerate(PERMS)}
    expected = [index[PLAIN_S5[name](PERMS[a], PERMS[b])] for a, b in pairs.tolist()]
    assert answers.tolist() == expected


def test_operations_are_vectorised_on_any_shape():
    a, b = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[5, 6], [0, 1]])
    assert OPERATIONS["add"].fn(a, b, P).tolist() == [[6, 1], [3, 5]]


@pytest.mark.parametrize(
    "operation, modulus, message",
    [
        ("pow", 7, "unknown operation 'pow'; valid operations are: add, sub, mul, div"),
        ("div", 8, "operation 'div' needs a prime modulus"),
        ("odd_div_else_sub", 9, "needs a prime modulus"),
        ("add", 1, "modulus must be >= 2, got 1"),
        ("add", None, "set modulus to P"),
        ("s5_compose", 7, "leave modulus unset"),
    ],
)
def test_bad_task_is_rejected_with_one_sentence(operation, modulus, message):
    with pytest.raises(ValueError, match=message):
        check_task(operation, modulus)

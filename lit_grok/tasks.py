"""The operation table: every binary task of Power et al. (2021) as a vectorised function.

Each task maps a pair of element indices (a, b) to the index of the answer c. Modular tasks
live in Z_P (elements 0..P-1); permutation tasks live in S_5, whose 120 elements are indexed
0..119 in the lexicographic order of ``itertools.permutations(range(5))``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

S5_ORDER = 120


def is_prime(n: int) -> bool:
    """Trial division; moduli here are small."""
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


def _inverse_table(p: int) -> Tensor:
    """Multiplicative inverses in Z_p (p prime); entry 0 is unused and set to 0."""
    return torch.tensor([0] + [pow(k, p - 2, p) for k in range(1, p)], dtype=torch.long)


def _mul(a: Tensor, b: Tensor, p: int) -> Tensor:
    return a * b % p


def _div(a: Tensor, b: Tensor, p: int) -> Tensor:
    return a * _inverse_table(p).to(a.device)[b] % p


def _odd_div_else_sub(a: Tensor, b: Tensor, p: int) -> Tensor:
    return torch.where(b % 2 == 1, _div(a, b, p), (a - b) % p)


_PERMS = torch.tensor(list(itertools.permutations(range(5))), dtype=torch.long)  # [120, 5]
_RADIX = 5 ** torch.arange(5)


def _perm_code(perms: Tensor) -> Tensor:
    """Base-5 code of each permutation row, used to look its index back up."""
    return (perms * _RADIX.to(perms.device)).sum(-1)


_CODE_TO_INDEX = torch.full((5**5,), -1, dtype=torch.long)
_CODE_TO_INDEX[_perm_code(_PERMS)] = torch.arange(S5_ORDER)


def _compose(x: Tensor, y: Tensor) -> Tensor:
    """(x ∘ y)(i) = x[y[i]] on permutation rows [N, 5]."""
    return torch.gather(x, 1, y)


def _invert(x: Tensor) -> Tensor:
    inv = torch.empty_like(x)
    inv.scatter_(1, x, torch.arange(5, device=x.device).expand_as(x))
    return inv


def _s5(word: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor, int], Tensor]:
    """Lift a word in permutations x, y to a function on element indices."""

    def fn(a: Tensor, b: Tensor, _: int) -> Tensor:
        perms = _PERMS.to(a.device)
        return _CODE_TO_INDEX.to(a.device)[_perm_code(word(perms[a], perms[b]))]

    return fn


@dataclass(frozen=True)
class Operation:
    """One task: its YAML name, its formula, its domain and a vectorised ``fn(a, b, modulus)``."""

    name: str
    formula: str
    domain: str  # "Z_P" or "S_5"
    fn: Callable[[Tensor, Tensor, int], Tensor]
    needs_prime: bool = False
    nonzero_b: bool = False  # division excludes b = 0 from the pairs
    # For group operations: r(a, b, c), equal to 0 exactly when c is the answer. A logit table that is a
    # function of r alone is the generalising (trigonometric) part of App. B; None where not implemented.
    relation: Optional[Callable[[Tensor, Tensor, Tensor, int], Tensor]] = None

    def n_elements(self, modulus: Optional[int]) -> int:
        """Size of the domain: P for Z_P, 120 for S_5."""
        return S5_ORDER if self.domain == "S_5" else int(modulus)  # type: ignore[arg-type]


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in [
        Operation("add", "x + y", "Z_P", lambda a, b, p: (a + b) % p, relation=lambda a, b, c, p: (a + b - c) % p),
        Operation("sub", "x - y", "Z_P", lambda a, b, p: (a - b) % p, relation=lambda a, b, c, p: (a - b - c) % p),
        Operation("mul", "x * y", "Z_P", _mul),
        Operation("div", "x / y", "Z_P", _div, needs_prime=True, nonzero_b=True),
        Operation("odd_div_else_sub", "x / y if y odd else x - y", "Z_P", _odd_div_else_sub, needs_prime=True),
        Operation("square_sum", "x^2 + y^2", "Z_P", lambda a, b, p: (a * a + b * b) % p),
        Operation("quad1", "x^2 + xy + y^2", "Z_P", lambda a, b, p: (a * a + a * b + b * b) % p),
        Operation("quad2", "x^2 + xy + y^2 + x", "Z_P", lambda a, b, p: (a * a + a * b + b * b + a) % p),
        Operation("cubic1", "x^3 + xy", "Z_P", lambda a, b, p: (a * a % p * a + a * b) % p),
        Operation("cubic2", "x^3 + xy^2 + y", "Z_P", lambda a, b, p: (a * a % p * a + a * (b * b % p) + b) % p),
        # Grokfast's (Lee et al. 2024) task: its code pairs every x with y in 1..P-1
        Operation("mul_nonzero", "x * y, y != 0", "Z_P", _mul, nonzero_b=True),
        Operation("s5_compose", "x ∘ y", "S_5", _s5(_compose)),
        Operation("s5_conjugate", "x ∘ y ∘ x^-1", "S_5", _s5(lambda x, y: _compose(_compose(x, y), _invert(x)))),
        Operation("s5_xyx", "x ∘ y ∘ x", "S_5", _s5(lambda x, y: _compose(_compose(x, y), x))),
    ]
}


def check_task(operation: str, modulus: Optional[int]) -> Operation:
    """Return the operation, or raise ValueError with one sentence saying what is wrong."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; valid operations are: {', '.join(OPERATIONS)}.")
    op = OPERATIONS[operation]
    if op.domain == "S_5":
        if modulus is not None:
            raise ValueError(f"operation {operation!r} acts on S_5 (120 elements); leave modulus unset (null).")
        return op
    if modulus is None:
        raise ValueError(f"operation {operation!r} acts on Z_P; set modulus to P (an integer >= 2).")
    if modulus < 2:
        raise ValueError(f"modulus must be >= 2, got {modulus}.")
    if op.needs_prime and not is_prime(modulus):
        raise ValueError(f"operation {operation!r} needs a prime modulus (for inverses), got {modulus}.")
    return op


def make_table(operation: str, modulus: Optional[int]) -> tuple[Tensor, Tensor]:
    """All valid pairs and their answers: ``pairs`` [N, 2] and ``answers`` [N], in row-major order."""
    op = check_task(operation, modulus)
    n = op.n_elements(modulus)
    a, b = torch.cartesian_prod(torch.arange(n), torch.arange(n)).unbind(-1)
    if op.nonzero_b:
        a, b = a[b != 0], b[b != 0]
    return torch.stack([a, b], dim=-1), op.fn(a, b, modulus if modulus is not None else n)

"""lit_grok: grokking through circuit efficiency (Varma et al. 2023), with PyTorch Lightning."""

import importlib
from typing import Any

# imported on first use, so that a module of the package that needs no torch (a Ray worker's entry point,
# a report's --help) does not pay torch's and Lightning's imports
_EXPORTS = {"GrokkingModule": "lit_grok.module", "MLP": "lit_grok.model", "Transformer": "lit_grok.model",
            "PreLNDecoder": "lit_grok.model", "OneHotMLP": "lit_grok.model",
            "ModularArithmeticDataModule": "lit_grok.data"}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lit_grok' has no attribute {name!r}")

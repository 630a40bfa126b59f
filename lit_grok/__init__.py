"""lit_grok: grokking through circuit efficiency (Varma et al. 2023), with PyTorch Lightning."""

from lit_grok.data import ModularArithmeticDataModule
from lit_grok.model import MLP, Transformer
from lit_grok.module import GrokkingModule

__all__ = ["GrokkingModule", "MLP", "ModularArithmeticDataModule", "Transformer"]
__version__ = "0.1.0"

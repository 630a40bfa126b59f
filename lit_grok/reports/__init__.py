"""Reports that turn a sweep's summary.csv into figures and estimates, one module per experiment."""

from __future__ import annotations

import csv
from pathlib import Path


def read_summary(sweep_dir: Path) -> list[dict]:
    """The sweep's summary.csv as a list of rows (strings; each report converts what it uses)."""
    with open(Path(sweep_dir) / "summary.csv") as f:
        return list(csv.DictReader(f))


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, sweep_dir: Path, filename: str, tag: str) -> None:
    """Writes the figure as a PNG in the sweep folder and to TensorBoard under <sweep folder>/report."""
    from torch.utils.tensorboard import SummaryWriter

    fig.savefig(Path(sweep_dir) / filename, dpi=120)
    with SummaryWriter(str(Path(sweep_dir) / "report")) as writer:
        writer.add_figure(tag, fig)

"""Reports that turn a sweep's summary.csv into figures and estimates, one module per experiment."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Callable


def read_summary(sweep_dir: Path, numbers: tuple[str, ...] = ()) -> list[dict]:
    """The sweep's summary.csv as a list of rows: strings, except the ``numbers`` columns, read as floats
    (NaN where a run left the column empty or lacks it)."""
    with open(Path(sweep_dir) / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in numbers:
            row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
    return rows


def main(report: Callable[[Path], dict]) -> None:
    """``python -m lit_grok.reports.<experiment> SWEEP_DIR``: runs the report and prints its result."""
    print(json.dumps(report(Path(sys.argv[1])), indent=1))


def new_figure(figsize: tuple[float, float]):
    """A matplotlib Figure with one Axes, drawn off-screen: no pyplot, so the global backend (a notebook's,
    say) is left alone."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def save_figure(fig, sweep_dir: Path, filename: str, tag: str) -> None:
    """Writes the figure as a PNG in the sweep folder and to TensorBoard under <sweep folder>/report."""
    from torch.utils.tensorboard import SummaryWriter

    fig.savefig(Path(sweep_dir) / filename, dpi=120)
    with SummaryWriter(str(Path(sweep_dir) / "report")) as writer:
        writer.add_figure(tag, fig, close=False)

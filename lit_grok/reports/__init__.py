"""Reports that turn a sweep's summary.csv into figures and estimates, one module per experiment."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Callable, NoReturn, Optional


def read_summary(sweep_dir: Path, numbers: tuple[str, ...] = ()) -> list[dict]:
    """The sweep's finished runs from its summary.csv, as a list of rows: strings, except the ``numbers``
    columns, read as floats (NaN where a run left the column empty or lacks it). A failed run's row (``failed``:
    its error, no metrics) is left out: the sweep itself reports those, and the trained runs are still a figure."""
    with open(Path(sweep_dir) / "summary.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("failed") != "True"]
    for row in rows:
        for key in numbers:
            row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
    return rows


def run_config(sweep_dir: Path, run: str) -> Optional[dict]:
    """A sweep run's config.yaml as a dict; None where the run has none (a record restored from a CSV)."""
    path = Path(sweep_dir) / run / "version_0" / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def init_from(config: Optional[dict]) -> Optional[str]:
    """The checkpoint a run's config starts it from (``model.init_args.init_from``), if any."""
    return (((config or {}).get("model") or {}).get("init_args") or {}).get("init_from")


class NotThisExperiment(ValueError):
    """A folder a report cannot report on (no finished runs, or another experiment's): its one-line reason."""


def finished_runs(sweep_dir: Path, result: str = "result.json") -> list[str]:
    """The names of a sweep folder's finished runs; NotThisExperiment when there are none."""
    runs = sorted(p.parent.parent.name for p in Path(sweep_dir).glob(f"*/version_0/{result}"))
    if not runs:
        raise NotThisExperiment(f"{sweep_dir} holds no finished runs (no */version_0/{result}): give a sweep's "
                                f"folder once a run has finished.")
    return runs


def refuse(message: str) -> NoReturn:
    """A bad argument to a report: one line on stderr and exit status 2, as the command line's own errors."""
    sys.stderr.write(message + "\n")
    sys.exit(2)


def main(report: Callable[[Path], dict], argv: Optional[list[str]] = None) -> None:
    """``python -m lit_grok.reports.<experiment> FOLDER``: runs the report and prints its result; a folder
    that is not one of the report's experiment ends with one line and exit status 2, not a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    module = sys.modules.get(report.__module__)  # run as `python -m`, the report's module is __main__
    name = getattr(getattr(module, "__spec__", None), "name", None) or report.__module__
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: python -m {name} FOLDER\n\n{(module.__doc__ or '').strip()}")
        sys.exit(0)
    if len(argv) != 1:
        refuse(f"usage: python -m {name} FOLDER (a sweep's folder, e.g. logs/grok-time; --help says more)")
    sweep_dir = Path(argv[0])
    if not sweep_dir.is_dir():
        refuse(f"error: {sweep_dir} is not a folder; give the sweep's folder (its save_dir/name, e.g. "
               f"logs/grok-time).")
    try:
        result = report(sweep_dir)
    except FileNotFoundError as error:
        refuse(f"error: {error.filename} does not exist: is {sweep_dir} a sweep's folder? A sweep writes "
               f"summary.csv after its first run.")
    except NotThisExperiment as error:
        refuse(f"error: {error}")
    except KeyError as error:
        refuse(f"error: {sweep_dir}/summary.csv has no column {error}, which {name} reads: is {sweep_dir} a "
               f"sweep of that report's experiment?")
    print(json.dumps(result, indent=1))


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

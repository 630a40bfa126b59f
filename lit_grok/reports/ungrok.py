"""Ungrokking against D' (predictions 2 and 3, paper Figs. 4, 7): final validation accuracy per weight decay.

    python -m lit_grok.reports.ungrok logs/cpu-ungrok-sweep
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean

from lit_grok.reports import NotThisExperiment, init_from, main, new_figure, read_summary, run_config, save_figure

TAG = "ungrok/final_val_acc"  # the figure's TensorBoard tag


def load(sweep_dir: Path) -> list[dict]:
    """The sweep's runs with D' (the final training-set size, from a branch's train_size or a swap's new_size)
    and the weight decay (the base config's when the sweep does not vary it)."""
    rows = read_summary(sweep_dir, ("val/acc", "train/acc", "data/train_size", "step"))
    check_ungrokking(sweep_dir, rows)
    for row in rows:
        row["D'"] = int(row["data/train_size"])
        row["wd"] = float(row.get("model.init_args.optimizer.init_args.weight_decay") or _config_weight_decay(sweep_dir, row))
        row["converged"] = row.get("converged") == "True"
    return rows


def check_ungrokking(sweep_dir: Path, rows: list[dict]) -> None:
    """An ungrokking sweep's runs start from a trained network (init_from) or swap their data (DatasetSwap);
    another experiment's sweep is refused in one line rather than reported as ungrokking."""
    if not rows:
        raise NotThisExperiment(f"{sweep_dir}/summary.csv has no runs.")
    if "events/swap_step" in rows[0] or any(row.get("model.init_args.init_from") for row in rows):
        return
    # the first run whose config.yaml is at hand (a record restored from a CSV has none)
    if init_from(next((c for c in (run_config(sweep_dir, row["run"]) for row in rows) if c is not None), None)):
        return
    raise NotThisExperiment(f"{sweep_dir} is not an ungrokking sweep: its runs neither start from a trained "
                            f"network (init_from) nor swap their data (DatasetSwap).")


def _config_weight_decay(sweep_dir: Path, row: dict) -> float:
    """The weight decay a run was configured with, read from its config.yaml."""
    config = run_config(sweep_dir, row["run"])
    if config is None:
        return math.nan
    return float(config["model"]["init_args"]["optimizer"]["init_args"]["weight_decay"])


# grid keys that are not a line of their own: D' (the x axis) and the seeds (points on a line)
NOT_SERIES = ("train_size", "new_size", "data_seed", "seed_everything", "seed", "init_from")


def series(row: dict) -> str:
    """The line a run belongs to: its weight decay and any other grid value than D' and seeds."""
    others = [f"{key.split('.')[-1]}={value}" for key, value in row.items()
              if "." in key and not key.startswith(("events/",)) and "/" not in key
              and key.split(".")[-1] not in NOT_SERIES + ("weight_decay",)]
    return ", ".join([f"weight decay {row['wd']:g}", *others])


def ordered(rows: list[dict]) -> list[str]:
    """The lines, in increasing weight decay (then by name): 4 before 16, as a reader expects."""
    decay = {series(row): row["wd"] for row in rows}
    return sorted(decay, key=lambda label: (decay[label], label))


def table(rows: list[dict]) -> dict[str, dict[int, list[float]]]:
    """line (weight decay, ...) -> D' -> final val/acc of each seed."""
    result: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        result[series(row)][row["D'"]].append(row["val/acc"])
    return result


def report(sweep_dir: Path) -> dict:
    """Writes ungrok.png and ungrok.json (mean final val/acc per line and D') in the sweep folder."""
    sweep_dir = Path(sweep_dir)
    rows = load(sweep_dir)
    lines = table(rows)
    fig, ax = new_figure((6.5, 4))
    summary = {}
    for label in ordered(rows):
        sizes = sorted(lines[label])
        means = [mean(lines[label][d]) for d in sizes]
        summary[label] = dict(zip(sizes, means))
        line, = ax.plot(sizes, means, "o-", label=label)
        for d in sizes:
            ax.scatter([d] * len(lines[label][d]), lines[label][d], color=line.get_color(), s=8, alpha=0.5)
    unconverged = [r for r in rows if not r["converged"]]
    if unconverged:  # open circles: stopped by the step cap, not by the convergence rule
        ax.scatter([r["D'"] for r in unconverged], [r["val/acc"] for r in unconverged], s=60, facecolors="none",
                   edgecolors="k", linewidths=0.8, label="not converged (step cap)")
    ax.set(xscale="log", xlabel="D' (training pairs)", ylabel="final val/acc", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, sweep_dir, "ungrok.png", TAG)
    result = {"mean_final_val_acc": summary, "min_final_train_acc": min(r["train/acc"] for r in rows),
              "runs": len(rows), "not_converged": [r["run"] for r in unconverged]}
    (sweep_dir / "ungrok.json").write_text(json.dumps(result, indent=1))
    (sweep_dir / "ungrok_table.md").write_text(markdown_table(rows))
    return result


def markdown_table(rows: list[dict]) -> str:
    """Final val/acc per D' (rows) and line (columns), seeds comma-separated; * marks a run stopped by the step
    cap rather than by the convergence rule, with the step it ended at."""
    lines = ordered(rows)
    sizes = sorted({r["D'"] for r in rows})
    out = ["| D' | " + " | ".join(lines) + " |", "|---|" + "---|" * len(lines)]
    for d in sizes:
        cells = []
        for label in lines:
            runs = [r for r in rows if r["D'"] == d and series(r) == label]
            cells.append(", ".join(f"{r['val/acc']:.3f}" + ("" if r["converged"] else f"* ({int(r['step'])})")
                                   for r in runs))
        out.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main(report)

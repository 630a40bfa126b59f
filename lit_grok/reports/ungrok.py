"""Ungrokking against D' (predictions 2 and 3, paper Figs. 4, 7): final validation accuracy per weight decay.

    python -m lit_grok.reports.ungrok logs/cpu-ungrok-sweep
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean

from lit_grok.reports import main, pyplot, read_summary, save_figure

TAG = "ungrok/final_val_acc"  # the figure's TensorBoard tag


def load(sweep_dir: Path) -> list[dict]:
    rows = read_summary(sweep_dir, ("val/acc", "train/acc", "events/swap_step"))
    for row in rows:
        row["D'"] = int(row["trainer.callbacks.init_args.new_size"])
        row["wd"] = float(row["model.init_args.optimizer.init_args.weight_decay"])
    return rows


def table(rows: list[dict]) -> dict[float, dict[int, list[float]]]:
    """weight decay -> D' -> final val/acc of each seed."""
    result: dict[float, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        result[row["wd"]][row["D'"]].append(row["val/acc"])
    return result


def report(sweep_dir: Path) -> dict:
    """Writes ungrok.png and ungrok.json (mean final val/acc per weight decay and D') in the sweep folder."""
    plt = pyplot()
    sweep_dir = Path(sweep_dir)
    rows = load(sweep_dir)
    by_wd = table(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    summary = {}
    for wd in sorted(by_wd):
        sizes = sorted(by_wd[wd])
        means = [mean(by_wd[wd][d]) for d in sizes]
        summary[str(wd)] = dict(zip(sizes, means))
        line, = ax.plot(sizes, means, "o-", label=f"weight decay {wd}")
        for d in sizes:
            ax.scatter([d] * len(by_wd[wd][d]), by_wd[wd][d], color=line.get_color(), s=8, alpha=0.5)
    ax.set(xscale="log", xlabel="D' (training pairs after the swap)", ylabel="final val/acc", ylim=(-0.02, 1.02))
    ax.legend()
    fig.tight_layout()
    save_figure(fig, sweep_dir, "ungrok.png", TAG)
    result = {"mean_final_val_acc": summary, "min_final_train_acc": min(r["train/acc"] for r in rows),
              "runs_without_swap": [r["run"] for r in rows if r["events/swap_step"] < 0]}
    (sweep_dir / "ungrok.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(report)

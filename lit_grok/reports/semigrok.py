"""Semi-grokking against D (prediction 4, paper Fig. 5): final and plateau validation accuracy.

    python -m lit_grok.reports.semigrok logs/cpu-semigrok-sweep
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def load(sweep_dir: Path) -> list[dict]:
    with open(Path(sweep_dir) / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["D"] = int(row["data.init_args.train_size"])
        for key in ("val/acc", "train/acc", "events/plateau_level", "events/plateau_length", "plateaus"):
            row[key] = float(row[key])
    return rows


def report(sweep_dir: Path) -> dict:
    """Writes semigrok.png and semigrok.json (every run's final and plateau accuracy) in the sweep folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep_dir = Path(sweep_dir)
    rows = sorted(load(sweep_dir), key=lambda r: (r["D"], r["run"]))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.scatter([r["D"] for r in rows], [r["val/acc"] for r in rows], label="final val/acc")
    plateaus = [r for r in rows if r["plateaus"] > 0]
    ax.scatter([r["D"] for r in plateaus], [r["events/plateau_level"] for r in plateaus], marker="x", s=60,
               label="longest middling plateau")
    ax.set(xlabel="D (training pairs)", ylabel="validation accuracy", ylim=(-0.02, 1.02))
    ax.legend()
    fig.tight_layout()
    fig.savefig(sweep_dir / "semigrok.png", dpi=120)
    keys = ("run", "D", "val/acc", "train/acc", "plateaus", "events/plateau_level", "events/plateau_length",
            "plateau_transient", "events/grokked_step")
    result = {"runs": [{k: r.get(k) for k in keys} for r in rows]}
    (sweep_dir / "semigrok.json").write_text(json.dumps(result, indent=1))
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(sweep_dir / "report")) as writer:
        writer.add_figure("semigrok/val_acc", fig)
    return result


if __name__ == "__main__":
    print(json.dumps(report(Path(sys.argv[1])), indent=1))

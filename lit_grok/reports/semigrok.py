"""Semi-grokking against D (prediction 4, paper Fig. 5): final and plateau validation accuracy.

    python -m lit_grok.reports.semigrok logs/cpu-semigrok-sweep
"""

from __future__ import annotations

import json
from pathlib import Path

from lit_grok.reports import main, new_figure, read_summary, save_figure

TAG = "semigrok/val_acc"  # the figure's TensorBoard tag


def load(sweep_dir: Path) -> list[dict]:
    rows = read_summary(sweep_dir, ("val/acc", "train/acc", "events/plateau_level", "events/plateau_length",
                                    "plateaus"))
    for row in rows:
        row["D"] = int(row["data.init_args.train_size"])
    return rows


def report(sweep_dir: Path) -> dict:
    """Writes semigrok.png and semigrok.json (every run's final and plateau accuracy) in the sweep folder."""
    sweep_dir = Path(sweep_dir)
    rows = sorted(load(sweep_dir), key=lambda r: (r["D"], r["run"]))
    fig, ax = new_figure((6.5, 4))
    ax.scatter([r["D"] for r in rows], [r["val/acc"] for r in rows], label="final val/acc")
    plateaus = [r for r in rows if r["plateaus"] > 0]
    ax.scatter([r["D"] for r in plateaus], [r["events/plateau_level"] for r in plateaus], marker="x", s=60,
               label="longest middling plateau")
    ax.set(xlabel="D (training pairs)", ylabel="validation accuracy", ylim=(-0.02, 1.02))
    ax.legend()
    fig.tight_layout()
    save_figure(fig, sweep_dir, "semigrok.png", TAG)
    keys = ("run", "D", "val/acc", "train/acc", "plateaus", "events/plateau_level", "events/plateau_length",
            "plateau_transient", "events/grokked_step")
    result = {"runs": [{k: r.get(k) for k in keys} for r in rows]}
    (sweep_dir / "semigrok.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(report)

"""Calibrating the LLC estimate (devinterp's guidance): the same checkpoints estimated at several SGLD step sizes,
with each setting's chains drawn as a trace, so the step size is chosen where the chains flatten out rather
than guessed. Writes ``llc_calibration.csv`` (a row per checkpoint and step size: the LLC, its spread over
chains and ``late_rise``, how far the chains still climbed over their last quarter) and
``llc_calibration.png`` (n_beta x (sampled loss - loss at the weights) against draw, a panel per checkpoint).
Needs the optional extra (``pip install -e ".[llc]"``).

    python -m lit_grok.reports.llc_calibration configs/cpu/grok.yaml docs/results \\
        logs/cpu-llc-step50/version_0/checkpoints/last.ckpt logs/cpu-llc-grok/version_0/checkpoints/last.ckpt \\
        --lr 1e-5 3e-5 1e-4 3e-4 1e-3 --draws 400
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Optional

import torch

from lit_grok.callbacks.llc import LocalLearningCoefficient, plateau
from lit_grok.reports import refuse

COLUMNS = ("checkpoint", "step", "lr", "n_beta", "localization", "chains", "draws", "llc_mean", "llc_std",
           "late_rise")


def calibrate(config: str, checkpoints: list[str], lrs: list[float], draws: int = 400, chains: int = 2,
              localization: float = 100.0, n_beta: Optional[float] = None) -> tuple[list[dict], dict]:
    """Each checkpoint's network (built from ``config``, its task and training split) estimated at each step
    size: the rows of ``llc_calibration.csv``, and the LLC-scale traces (mean over chains) by (checkpoint, lr)."""
    from lit_grok.cli import main

    cli = main(["-c", config, "--trainer.logger=false"], run=False)
    data, model = cli.datamodule, cli.model
    data.setup("fit")
    rows = data.train_indices
    tokens, answers = data.tokens[rows], data.answers[rows]
    table, traces = [], {}
    for path in checkpoints:
        state = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
        for lr in lrs:
            estimator = LocalLearningCoefficient(lr=lr, n_beta=n_beta, localization=localization,
                                                 num_chains=chains, num_draws=draws)
            result = estimator.sample(model.net, tokens, answers)
            scale = [[result["n_beta"] * (x - result["init_loss"]) for x in chain] for chain in result["trace"]]
            traces[(path, lr)] = [sum(xs) / len(xs) for xs in zip(*scale)]
            table.append({"checkpoint": path, "step": state.get("global_step", ""), "lr": lr,
                          "n_beta": round(result["n_beta"], 3), "localization": localization, "chains": chains,
                          "draws": draws, "llc_mean": round(result["mean"], 4), "llc_std": round(result["std"], 4),
                          "late_rise": round(plateau(result["trace"], result["init_loss"], result["n_beta"]), 4)})
    return table, traces


def write(out: Path, table: list[dict], traces: dict) -> None:
    """llc_calibration.csv and llc_calibration.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "llc_calibration.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    checkpoints = list(dict.fromkeys(row["checkpoint"] for row in table))
    steps = {row["checkpoint"]: row["step"] for row in table}
    from matplotlib.figure import Figure  # off-screen, as new_figure: the global backend is left alone

    fig = Figure(figsize=(4.2 * len(checkpoints), 3.4))
    for ax, path in zip(fig.subplots(1, len(checkpoints), squeeze=False)[0], checkpoints):
        for (where, lr), trace in traces.items():
            if where == path and trace:
                ax.plot(range(1, len(trace) + 1), trace, lw=1, label=f"step size {lr:g}")
        ax.set(xlabel="SGLD draw", ylabel="n_beta x (loss - loss at the weights)", yscale="symlog",
               title=f"step {steps[path]}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "llc_calibration.png", dpi=120)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit_grok.reports.llc_calibration",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the run's config (its task, split and network)")
    parser.add_argument("out", help="the folder for llc_calibration.csv and .png")
    parser.add_argument("checkpoints", nargs="+", help="checkpoints of that run to estimate at")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3], help="SGLD step sizes")
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--localization", type=float, default=100.0)
    parser.add_argument("--n_beta", type=float, default=None, help="default n / log n")
    args = parser.parse_args(argv)
    for path in [args.config, *args.checkpoints]:
        if not Path(path).is_file():
            refuse(f"error: {path} does not exist.")
    table, traces = calibrate(args.config, args.checkpoints, args.lr, args.draws, args.chains, args.localization,
                              args.n_beta)
    write(Path(args.out), table, traces)
    for row in table:
        print(", ".join(f"{key} {row[key]}" for key in ("step", "lr", "llc_mean", "llc_std", "late_rise")))


if __name__ == "__main__":
    try:
        main()
    except ImportError as error:  # the optional extra is missing: its one line
        refuse(f"error: {error}")

"""The dynamics of one grokking run (paper Fig. 9, App. A.3): App. B's C_gen and C_mem logits, the parameter
norm and both accuracies against step, and the paper's two statements about them checked on the curves.

    python -m lit_grok.reports.dynamics logs/dynamics/version_0

Statement 1: between steps ~200 and ~1500 both circuits' logits rise while the norm falls. Statement 2: after
step ~4000 the C_gen logit falls while the C_mem logit is ~0; checked from the C_gen logit's highest point
after step 4000 on (it falls from there, and |C_mem| stays below a tenth of it), since a run that groks
later than the paper's peaks later.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from lit_grok.reports import save_figure
from lit_grok.reports.curves import read_curves

GEN, MEM = "circuits/gen_logit", "circuits/mem_logit_train"
TAGS = ("train/acc", "val/acc", GEN, MEM, "norm/params", "logits/train_correct")
WINDOW = (200, 1500)  # statement 1's window
LATE = 4000  # statement 2's start


def _at(curve: dict[int, float], step: int) -> float:
    """The curve's value at the measured step nearest to ``step``."""
    return curve[min(curve, key=lambda s: abs(s - step))]


def _rises(curve: dict[int, float], start: int, end: int) -> float:
    """The share of consecutive measurements in [start, end] at which the curve went up."""
    steps = [s for s in sorted(curve) if start <= s <= end]
    ups = [curve[b] > curve[a] for a, b in zip(steps, steps[1:])]
    return sum(ups) / len(ups) if ups else math.nan


def check(curves: dict[str, dict[int, float]]) -> dict:
    """The numbers behind the paper's two statements, read off the curves."""
    gen, mem, norm = curves[GEN], curves[MEM], curves["norm/params"]
    a, b = WINDOW
    late = [s for s in sorted(gen) if s >= LATE]
    peak = max(late, key=lambda s: gen[s]) if late else None
    return {
        "window": list(WINDOW),
        "gen_logit": [_at(gen, a), _at(gen, b)], "mem_logit": [_at(mem, a), _at(mem, b)],
        "norm": [_at(norm, a), _at(norm, b)],
        "share_of_intervals_rising": {"gen_logit": _rises(gen, a, b), "mem_logit": _rises(mem, a, b),
                                      "norm": _rises(norm, a, b)},
        "statement_1_holds": _at(gen, b) > _at(gen, a) and _at(mem, b) > _at(mem, a) and _at(norm, b) < _at(norm, a),
        "after": LATE,
        "gen_logit_peak_after": None if peak is None else {"step": peak, "value": gen[peak]},
        "gen_logit_final": gen[max(gen)], "mem_logit_final": mem[max(mem)], "mem_logit_at_after": _at(mem, LATE),
        # from the C_gen logit's peak on (the paper's run peaks near step 4000; a run that groks later, later)
        "mem_logit_max_abs_from_peak": None if peak is None else max(abs(mem[s]) for s in mem if s >= peak),
        "statement_2_holds": peak is not None and gen[max(gen)] < gen[peak]
        and max(abs(mem[s]) for s in mem if s >= peak) < 0.1 * gen[peak],
        "grokked_step": next((s for s in sorted(curves["val/acc"]) if curves["val/acc"][s] >= 0.99), None),
        "last_step": max(gen),
    }


def report(run_dir: Path) -> dict:
    """Writes dynamics.csv, dynamics.png and dynamics.json in the run's folder."""
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    curves = read_curves(run_dir, TAGS)
    if GEN not in curves:
        raise KeyError(f"{GEN} (is {run_dir} a run with CircuitEfficiency on a task with App. B's split?)")
    steps = sorted(curves[GEN])
    with (run_dir / "dynamics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *TAGS])
        for s in steps:
            writer.writerow([s, *(f"{curves.get(t, {}).get(s, math.nan):.6g}" for t in TAGS)])
    fig = Figure(figsize=(7, 7))
    acc, logits, norm = fig.subplots(3, 1, sharex=True)
    for tag in ("train/acc", "val/acc"):
        acc.plot(sorted(curves[tag]), [curves[tag][s] for s in sorted(curves[tag])], label=tag)
    logits.plot(steps, [curves[GEN][s] for s in steps], label="C_gen logit (App. B)")
    logits.plot(steps, [curves[MEM][s] for s in steps], label="C_mem logit (train)")
    norm.plot(steps, [curves["norm/params"][s] for s in steps], color="k", label="parameter norm")
    for ax in (acc, logits, norm):
        for x in (*WINDOW, LATE):
            ax.axvline(x, color="grey", lw=0.6, ls=":")
        ax.legend(fontsize=8)
    acc.set(ylabel="accuracy")
    logits.set(ylabel="logit")
    norm.set(ylabel="norm", xlabel="step")
    fig.tight_layout()
    save_figure(fig, run_dir, "dynamics.png", "dynamics/circuits")
    result = check(curves)
    (run_dir / "dynamics.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from lit_grok.reports import main

    main(report)

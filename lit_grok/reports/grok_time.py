"""Time to grok against the training-set size (the paper's first difficulty, section 5.3): is the growth
faster than exponential as D falls?

Reads a sweep's ``summary.csv`` whose runs trained from scratch at several D (and seeds) and stopped at
``events/grokked_step`` (the first validation with val/acc >= the GrokEvents threshold); a run that
never grokked records -1 and the step it stopped at, a lower bound. Exponential growth as D falls is a
straight line of log10(steps) against D; faster than exponential is a line that steepens towards small
D. The report gives the slope of log10(median steps) per 100 pairs between neighbouring sizes, smallest
D first, so a steepening shows as slopes that grow in size (a size whose runs hit the step cap gives a
lower bound on the slope next to it), and the curvature of a quadratic fit of log10(steps) against D over
every run that grokked (``curvature``: positive is faster than exponential), and writes ``grok_time.csv``,
``grok_time.json`` and ``grok_time.png``.

    python -m lit_grok.reports.grok_time logs/grok-time
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import median

from lit_grok.reports import main, new_figure, read_summary, save_figure

TAG = "grok_time/steps_vs_train_size"  # the figure's TensorBoard tag


def load(sweep_dir: Path) -> list[dict]:
    """One row per run: D, seed, grokked (bool), steps (the grok step, or the last step when it never grokked)."""
    rows = read_summary(sweep_dir, ("events/grokked_step", "step"))
    out = []
    for row in rows:
        grokked = row["events/grokked_step"] >= 0
        out.append({"run": row["run"], "D": int(row["data.init_args.train_size"]),
                    "seed": int(row.get("seed_everything") or 0), "grokked": grokked,
                    "steps": int(row["events/grokked_step"] if grokked else row["step"])})
    return sorted(out, key=lambda r: (r["D"], r["seed"]))


def median_is_a_bound(runs: list[dict]) -> bool:
    """Whether the median of these runs' steps is only a lower bound: a run stopped by the cap (at least its
    steps, and past every run that grokked) sits at the middle of the sorted runs. One capped run of three
    leaves the median exact."""
    ordered = sorted(runs, key=lambda r: (r["steps"], not r["grokked"]))
    middle = ordered[(len(ordered) - 1) // 2: len(ordered) // 2 + 1]
    return not all(r["grokked"] for r in middle)


def slopes(rows: list[dict]) -> list[dict]:
    """Between neighbouring sizes: the slope of log10(median steps) per 100 pairs (negative: fewer steps with
    more data), smallest D first. A size whose median is a lower bound (``median_is_a_bound``) gives a
    slope from it that is one too (``bound``: "at least" in size); none is given towards such a size."""
    by_d = defaultdict(list)
    for row in rows:
        by_d[row["D"]].append(row)
    sizes = sorted(by_d)
    med = {d: median(r["steps"] for r in by_d[d]) for d in sizes}
    capped = {d for d in sizes if median_is_a_bound(by_d[d])}
    return [{"from_D": d0, "to_D": d1,
             "log10_steps_per_100_pairs": (math.log10(med[d1]) - math.log10(med[d0])) / (d1 - d0) * 100,
             "bound": "at least" if d0 in capped else "exact"}
            for d0, d1 in zip(sizes, sizes[1:]) if d1 not in capped]


def curvature(rows: list[dict]) -> dict:
    """A least-squares fit of log10(steps) = c0[seed] + c1 x + c2 x^2 over the runs that grokked, x = (D -
    mean D) / 1000, with an intercept per seed (a seed that is slower everywhere shifts its line, not the
    shape): exponential growth is c2 = 0, faster than exponential as D falls is c2 > 0 (the slope steepens
    towards small D). Gives c2, its standard error and the runs fitted; runs stopped by the cap are left
    out, which most likely understates c2 (their true times are longer, at the smallest sizes)."""
    import numpy as np

    runs = [r for r in rows if r["grokked"]]
    seeds = sorted({r["seed"] for r in runs})
    if len({r["D"] for r in runs}) < 3 or len(runs) <= len(seeds) + 2:
        return {"c2": None, "c2_se": None, "runs": len(runs)}
    d = np.array([r["D"] for r in runs], dtype=float)
    x = (d - d.mean()) / 1000
    design = np.stack([x ** 2, x, *[[float(r["seed"] == seed) for r in runs] for seed in seeds]], 1)
    y = np.log10([r["steps"] for r in runs])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    variance = float(residual @ residual) / (len(runs) - design.shape[1])
    se = math.sqrt(variance * np.linalg.inv(design.T @ design)[0, 0])
    return {"c2": float(coef[0]), "c2_se": se, "runs": len(runs), "seeds": seeds,
            "sizes": sorted({int(v) for v in d})}


def figure(rows: list[dict]):
    fig, ax = new_figure((6, 4))
    seeds = sorted({r["seed"] for r in rows})
    spread = (max(r["D"] for r in rows) - min(r["D"] for r in rows)) / 50  # capped markers side by side
    for i, seed in enumerate(seeds):
        runs = [r for r in rows if r["seed"] == seed]
        line, = ax.plot([r["D"] for r in runs if r["grokked"]], [r["steps"] for r in runs if r["grokked"]], "o-",
                        label=f"seed {seed}")
        capped = [r for r in runs if not r["grokked"]]
        if capped:
            offset = (i - (len(seeds) - 1) / 2) * spread
            ax.plot([r["D"] + offset for r in capped], [r["steps"] for r in capped], "^", color=line.get_color(),
                    markerfacecolor="none", markersize=9, label=f"seed {seed}: not grokked by the cap (lower bound)")
    ax.set(yscale="log", xlabel="training pairs D", ylabel="steps to val/acc >= 0.99")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def report(sweep_dir: Path) -> dict:
    """Writes grok_time.csv, grok_time.json and grok_time.png in the sweep folder and the figure to TensorBoard."""
    sweep_dir = Path(sweep_dir)
    rows = load(sweep_dir)
    with open(sweep_dir / "grok_time.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "D", "seed", "grokked", "steps"])
        writer.writeheader()
        writer.writerows(rows)
    result = {"runs": len(rows), "not_grokked": [r["run"] for r in rows if not r["grokked"]],
              "slopes": slopes(rows),  # of the median over seeds, at the sizes each seed reached
              "slopes_per_seed": {seed: slopes([r for r in rows if r["seed"] == seed])
                                  for seed in sorted({r["seed"] for r in rows})},
              "curvature": curvature(rows),
              # whether one size decides the sign: the fit again without each size in turn
              "curvature_without": {d: curvature([r for r in rows if r["D"] != d])["c2"]
                                    for d in sorted({r["D"] for r in rows if r["grokked"]})}}
    (sweep_dir / "grok_time.json").write_text(json.dumps(result, indent=1))
    save_figure(figure(rows), sweep_dir, "grok_time.png", TAG)
    return result


if __name__ == "__main__":
    main(report)

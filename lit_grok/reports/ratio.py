"""The circuits' logit ratio against D (paper Fig. 10a, App. A.4): o_t^y / o_m^y, App. B's C_gen logit at the
answer over the C_mem logit at the training labels, at the end of each run of a sweep whose runs branch from
one network trained on every pair. That network itself is listed at D = all pairs, without a ratio: on every
pair the C_mem logit at the answers is 0 by construction (App. B's G at r = 0 is the mean of the logits there).

    python -m lit_grok.reports.ratio logs/ratio-sweep
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from lit_grok.reports import init_from, new_figure, read_summary, run_config, save_figure
from lit_grok.reports.curves import read_curves

GEN, MEM = "circuits/gen_logit", "circuits/mem_logit_train"
INIT_FROM = "model.init_args.init_from"


def full_data_point(init_from: str) -> dict | None:
    """The last validation of the run a branch started from (its folder holds checkpoints/<file>), if found."""
    run_dir = Path(init_from).parent.parent
    if not run_dir.is_dir():
        return None
    curves = read_curves(run_dir, (GEN, MEM, "data/train_size", "train/acc"))
    if GEN not in curves or MEM not in curves:
        return None
    last = max(curves[GEN])
    return {"run": str(run_dir), "D": int(curves["data/train_size"][last]), "gen": curves[GEN][last],
            "mem": curves[MEM][last], "val/acc": math.nan, "step": last, "converged": True}


def report(sweep_dir: Path) -> dict:
    """Writes ratio.csv, ratio.png and ratio.json in the sweep folder."""
    sweep_dir = Path(sweep_dir)
    rows = read_summary(sweep_dir, (GEN, MEM, "data/train_size", "val/acc", "step"))
    points = [{"run": r["run"], "D": int(r["data/train_size"]), "gen": r[GEN], "mem": r[MEM], "val/acc": r["val/acc"],
               "step": int(r["step"]), "converged": r.get("converged") == "True"} for r in rows]
    sources = {r.get(INIT_FROM) or init_from(run_config(sweep_dir, r["run"])) for r in rows} - {None, ""}
    if len(sources) == 1:
        full = full_data_point(sources.pop())
        points += [full] if full else []
    points.sort(key=lambda p: p["D"])
    for p in points:
        p["ratio"] = p["gen"] / p["mem"] if p["mem"] > 0 else math.nan  # undefined without a positive C_mem logit
    with (sweep_dir / "ratio.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["D", "gen", "mem", "ratio", "val/acc", "step", "converged", "run"])
        writer.writeheader()
        writer.writerows(points)
    fig, ax = new_figure((6, 4))
    positive = [p for p in points if p["mem"] > 0]
    ax.plot([p["D"] for p in positive], [p["ratio"] for p in positive], "o-")
    for p in points:
        if not p["converged"]:
            ax.scatter([p["D"]], [p["ratio"]], s=60, facecolors="none", edgecolors="k")
    ax.set(xscale="log", yscale="log", xlabel="D (training pairs)", ylabel="o_t^y / o_m^y (train)")
    fig.tight_layout()
    save_figure(fig, sweep_dir, "ratio.png", "ratio/gen_over_mem")
    # a ratio needs a positive C_mem logit: on every pair (the full-data network) it is 0 by construction, since
    # G at the answers (r = 0) is the mean of z over them, so M's mean there vanishes
    ratios = [p["ratio"] for p in points if p["mem"] > 0]
    result = {"points": len(points), "monotonic": all(b > a for a, b in zip(ratios, ratios[1:])),
              "orders_of_magnitude": math.log10(max(ratios) / min(ratios)) if ratios else None,
              "ratio_range": [min(ratios), max(ratios)] if ratios else None,
              "mem_logit_not_positive_at": [p["D"] for p in points if p["mem"] <= 0],
              "not_converged": [p["run"] for p in points if not p["converged"]]}
    (sweep_dir / "ratio.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from lit_grok.reports import main

    main(report)

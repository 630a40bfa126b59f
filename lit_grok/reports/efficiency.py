"""Efficiency against dataset size (prediction 1, paper section 5.1): the plot, the table and D_crit.

Reads a sweep's ``summary.csv`` in which C_mem networks trained on random labels and C_gen networks on
the true labels, each at several dataset sizes D and weight decays, all to convergence. For each kind
and D, the converged (train loss, parameter norm) points over weight decays form a curve (seeds averaged
in log loss and norm). At a reference loss L_ref, the loss covered by the most curves, each curve's norm
is read off by linear interpolation in (log10 loss, norm). C_gen's norm at L_ref is the mean over its
D's. D_crit is where C_mem's norm at L_ref crosses C_gen's, interpolated linearly in log D between the
two C_mem sizes that bracket it. ``at_weight_decay`` gives a second estimate that needs no curve: at each
weight decay that both kinds ran, C_mem's converged norm per D (seeds averaged) against C_gen's mean, so a
size trained at a single weight decay still counts; ``over_reference_losses`` gives D_crit across the range
of reference losses where it is defined.

A run counts only if it converged (its own StopOnConvergence stopped it, or the sweep's own rule fires on
its validation curves: the rule read from its runs' config.yaml by ``sweep_rule``, the paper-scale
config's ``RULE`` where none is found), fits its training set (train/acc = 1) and, for C_gen, passes
App. B's criterion (``circuits/gen_fraction`` > 0.95); the others are dropped, listed with their reasons
in ``d_crit.json`` and counted. ``rule_sensitivity.csv`` reads every run's validations back and says
where the sweep's rule, a looser and two tighter ones (``rules_around``) would have stopped it and the
norm there against the norm at its end, so that whether the rule is tight enough is a measured fact.

    python -m lit_grok.reports.efficiency logs/cpu-efficiency
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean, pstdev
from typing import Optional

import matplotlib

from lit_grok.callbacks import StopOnConvergence
from lit_grok.reports import main, new_figure, read_summary, run_config, save_figure
from lit_grok.reports.curves import read_curves

GEN_FRACTION = 0.95  # the paper's criterion for a C_gen-only network

Curve = list[tuple[float, float]]  # (log10 train loss, parameter norm), sorted by loss


TAG = "efficiency/norm_vs_loss"  # the figures' TensorBoard tags
TAG_BY_SIZE = "efficiency/norm_vs_train_size"


MONITOR = ("norm/params", "logits/train_margin")  # what configs/efficiency_base.yaml's StopOnConvergence watches
# (norm's relative tolerance, margin's absolute tolerance or None for the relative one, window in validations)
Rule = tuple[float, Optional[float], int]
RULE: Rule = (2e-3, 0.1, 10)  # configs/efficiency_base.yaml's: for runs whose config.yaml is not at hand


def sweep_rule(sweep_dir: Path, runs: list[str]) -> Rule:
    """The convergence rule the sweep's runs were configured with (their StopOnConvergence watching MONITOR,
    from the first run's config.yaml), so that a sweep of any cadence (P=31's, P=113's) is judged by its own
    rule; ``RULE`` when no run's config says."""
    for run in runs:
        config = run_config(sweep_dir, run)
        if config is None:
            continue
        callbacks = (config.get("trainer") or {}).get("callbacks") or []
        for callback in callbacks:
            args = callback.get("init_args") or {} if isinstance(callback, dict) else {}
            if str(callback.get("class_path", "")).endswith("StopOnConvergence") and set(MONITOR) <= set(
                    args.get("monitor") or []):
                margin = (args.get("abs_tol") or {}).get(MONITOR[1])
                return (float(args.get("rel_tol", 1e-3)), None if margin is None else float(margin),
                        int(args.get("window", 10)))
    return RULE


def rules_around(rule: Rule) -> tuple[Rule, ...]:
    """The sweep's rule with a looser and two tighter ones, loosest first, for ``rule_sensitivity``."""
    rel, margin, window = rule
    half = None if margin is None else margin / 2
    return ((2 * rel, None if margin is None else 2 * margin, window), rule, (rel / 2, margin, window),
            (rel / 2, half, window))


def rejections(row: dict) -> list[str]:
    """Why a run cannot count as a converged C_mem-only or C_gen-only network (empty when it can)."""
    reasons = []
    if str(row.get("converged")).lower() != "true":
        reasons.append("not converged")
    if not row["train/acc"] >= 1.0:
        reasons.append(f"train/acc {row['train/acc']:.4f} < 1")
    if row["kind"] == "gen" and not row["circuits/gen_fraction"] > GEN_FRACTION:
        reasons.append(f"circuits/gen_fraction {row['circuits/gen_fraction']:.3f} <= {GEN_FRACTION}")
    return reasons


def stop_step(history: list[tuple[int, list[float]]], rule: Rule) -> Optional[int]:
    """The first step at which StopOnConvergence with this rule (the norm's spread over the last ``window``
    validations within ``rel`` of its latest value, the margin's within ``abs``) would have stopped a run
    with this history of (step, [norm, margin]); None if it never would."""
    rel_tol, abs_tol, window = rule
    stopper = StopOnConvergence(MONITOR, rel_tol=rel_tol, window=window,
                                abs_tol={} if abs_tol is None else {MONITOR[1]: abs_tol})
    return next((step for step, values in history if stopper.update(step, values)), None)


def rule_sensitivity(sweep_dir: Path, runs: list[str], rules: tuple[Rule, ...]) -> list[dict]:
    """For each run with validation curves and each of ``rules``: where the rule would have stopped it,
    and its norm there relative to the norm at the run's own end."""
    out = []
    for run in runs:
        run_dir = Path(sweep_dir) / run / "version_0"
        curves = read_curves(run_dir, MONITOR) if run_dir.is_dir() else {}
        if set(curves) != set(MONITOR):
            continue
        steps = sorted(set(curves[MONITOR[0]]) & set(curves[MONITOR[1]]))
        history = [(s, [curves[m][s] for m in MONITOR]) for s in steps]
        final = curves["norm/params"][steps[-1]]
        for rule in rules:
            step = stop_step(history, rule)
            norm = curves["norm/params"][step] if step is not None else math.nan
            out.append({"run": run, "norm_rel_tol": rule[0], "margin_abs_tol": rule[1], "window": rule[2],
                        "stop_step": step, "norm": norm, "norm_rel_to_end": norm / final - 1})
    return out


NUMBERS = ("train/loss", "norm/params", "circuits/gen_fraction", "logits/train_margin", "train/acc")


def load_rows(rows: list[dict]) -> list[dict]:
    """Summary rows with the report's fields added: kind (mem: random labels, gen), D, wd, seed, numbers as floats."""
    for row in rows:
        row["kind"] = "mem" if str(row["data.init_args.random_labels"]).lower() == "true" else "gen"
        row["D"] = int(row["data.init_args.train_size"])
        row["wd"] = float(row["model.init_args.optimizer.init_args.weight_decay"])
        row["seed"] = int(row.get("seed_everything") or 0)
        for key in NUMBERS:
            row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
    return rows


def load(sweep_dir: Path) -> list[dict]:
    return load_rows(read_summary(sweep_dir))


def curves(rows: list[dict], seed: Optional[int] = None) -> dict[tuple[str, int], Curve]:
    """(kind, D) -> points over weight decays, each averaged over seeds (or one seed's)."""
    points: dict[tuple[str, int, float], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if seed is None or row["seed"] == seed:
            points[(row["kind"], row["D"], row["wd"])].append((math.log10(max(row["train/loss"], 1e-300)),
                                                               row["norm/params"]))
    result: dict[tuple[str, int], Curve] = defaultdict(list)
    for (kind, d, _), pts in points.items():
        result[(kind, d)].append((mean(p[0] for p in pts), mean(p[1] for p in pts)))
    return {key: sorted(value) for key, value in result.items()}


def norm_at(curve: Curve, log_loss: float) -> Optional[float]:
    """The curve's norm at a log10 loss, linearly interpolated; None outside the curve's range."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= log_loss <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (log_loss - x0) / (x1 - x0)
    return None


def reference_loss(all_curves: dict[tuple[str, int], Curve]) -> float:
    """The log10 loss inside the most curves (among their points), the median of the best ones."""
    candidates = sorted({x for curve in all_curves.values() for x, _ in curve})
    coverage = [sum(norm_at(c, x) is not None for c in all_curves.values()) for x in candidates]
    best = [x for x, n in zip(candidates, coverage) if n == max(coverage)]
    return best[len(best) // 2]


def d_crit(mem_norms: dict[int, float], gen_norm: float) -> Optional[float]:
    """D where C_mem's norm crosses C_gen's, linear in log D between the bracketing sizes."""
    sizes = sorted(mem_norms)
    for d0, d1 in zip(sizes, sizes[1:]):
        n0, n1 = mem_norms[d0] - gen_norm, mem_norms[d1] - gen_norm
        if n0 <= 0 <= n1 or n1 <= 0 <= n0:
            t = 0.0 if n1 == n0 else n0 / (n0 - n1)
            return 10 ** (math.log10(d0) + t * (math.log10(d1) - math.log10(d0)))
    return None


def estimate(rows: list[dict], seed: Optional[int] = None, log_ref: Optional[float] = None) -> dict:
    """Norms at the reference loss for every (kind, D) and the resulting D_crit."""
    all_curves = curves(rows, seed)
    log_ref = reference_loss(all_curves) if log_ref is None else log_ref
    at_ref = {key: norm_at(curve, log_ref) for key, curve in all_curves.items()}
    mem = {d: n for (kind, d), n in at_ref.items() if kind == "mem" and n is not None}
    gen = {d: n for (kind, d), n in at_ref.items() if kind == "gen" and n is not None}
    gen_norm = mean(gen.values()) if gen else None
    return {"log10_ref_loss": log_ref, "mem_norm_at_ref": dict(sorted(mem.items())),
            "gen_norm_at_ref": dict(sorted(gen.items())), "gen_norm": gen_norm,
            "d_crit": d_crit(mem, gen_norm) if gen_norm is not None else None}


def over_reference_losses(rows: list[dict], spacing: float = 0.05) -> dict[float, float]:
    """D_crit at reference losses every ``spacing`` in log10 across the curves' range, where it is defined
    (C_mem's curves bracket the crossing and a C_gen curve reaches): its spread over that choice."""
    all_curves = curves(rows)
    xs = sorted({x for curve in all_curves.values() for x, _ in curve})
    start, stop = math.ceil(xs[0] / spacing), math.floor(xs[-1] / spacing)
    found = {round(i * spacing, 2): estimate(rows, log_ref=i * spacing)["d_crit"] for i in range(start, stop + 1)}
    return {x: d for x, d in found.items() if d is not None}


def at_weight_decay(rows: list[dict], seed: Optional[int] = None) -> dict[float, dict]:
    """At each weight decay both kinds ran: C_mem's converged norm per D (one seed's, or averaged over seeds),
    C_gen's mean norm (over all its runs) and their crossing."""
    norms: dict[tuple[str, float, int], list[float]] = defaultdict(list)
    for row in rows:
        if row["kind"] == "gen" or seed is None or row["seed"] == seed:
            norms[(row["kind"], row["wd"], row["D"])].append(row["norm/params"])
    result = {}
    for wd in sorted({wd for _, wd, _ in norms}):
        mem = {d: mean(v) for (kind, w, d), v in sorted(norms.items()) if kind == "mem" and w == wd}
        gen = [mean(v) for (kind, w, _), v in norms.items() if kind == "gen" and w == wd]
        if mem and gen:
            result[wd] = {"mem_norm": mem, "gen_norm": mean(gen), "d_crit": d_crit(mem, mean(gen))}
    return result


def figure(all_curves: dict[tuple[str, int], Curve], log_ref: float, result: dict):
    fig, ax = new_figure((7, 4.5))
    mem_sizes = sorted(d for kind, d in all_curves if kind == "mem")
    cmap = matplotlib.colormaps["viridis"]
    for i, d in enumerate(mem_sizes):
        xs, ys = zip(*all_curves[("mem", d)])
        ax.plot([10**x for x in xs], ys, "o-", color=cmap(i / max(1, len(mem_sizes) - 1)), label=f"C_mem, D={d}")
    for d in sorted(d for kind, d in all_curves if kind == "gen"):
        xs, ys = zip(*all_curves[("gen", d)])
        ax.plot([10**x for x in xs], ys, "s--", color="tab:red", alpha=0.5 + 0.5 * (d == max(mem_sizes + [d])),
                label=f"C_gen, D={d}")
    ax.axvline(10**log_ref, color="grey", lw=0.8, ls=":")
    title = "D_crit ~ %s" % (f"{result['d_crit']:.0f}" if result["d_crit"] else "not bracketed")
    ax.set(xscale="log", xlabel="train loss at convergence", ylabel="parameter norm", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_by_size(by_wd: dict[float, dict]):
    """Converged norm against D at each weight decay both kinds ran: C_mem's rising line, C_gen's level."""
    fig, ax = new_figure((6, 4))
    cmap = matplotlib.colormaps["plasma"]
    for i, (wd, entry) in enumerate(sorted(by_wd.items())):
        color = cmap(i / max(1, len(by_wd)))
        sizes = sorted(entry["mem_norm"])
        ax.plot(sizes, [entry["mem_norm"][d] for d in sizes], "o-", color=color, label=f"C_mem, wd {wd:g}")
        ax.axhline(entry["gen_norm"], color=color, ls="--", lw=1, label=f"C_gen (mean), wd {wd:g}")
        if entry["d_crit"]:
            ax.axvline(entry["d_crit"], color=color, ls=":", lw=1)
    ax.set(xscale="log", xlabel="training pairs D", ylabel="parameter norm at convergence",
           title="converged norm against D at equal weight decay")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def report(sweep_dir: Path) -> dict:
    """Writes efficiency.csv, efficiency.png, efficiency_by_size.png, d_crit.json in the sweep folder and the
    figures to TensorBoard."""
    sweep_dir = Path(sweep_dir)
    rows = load(sweep_dir)
    rule = sweep_rule(sweep_dir, [r["run"] for r in rows])
    rules = rules_around(rule)
    sensitivity = rule_sensitivity(sweep_dir, [r["run"] for r in rows], rules)
    by_rule = {(s["run"], (s["norm_rel_tol"], s["margin_abs_tol"], s["window"])): s for s in sensitivity}
    for row in rows:  # converged by its own config's rule, or by that rule on its validation curves
        fired = by_rule.get((row["run"], rule), {}).get("stop_step") is not None
        row["converged"] = str(row.get("converged")).lower() == "true" or fired
    reasons = {r["run"]: rejections(r) for r in rows}
    kept = [r for r in rows if not reasons[r["run"]]]
    result = estimate(kept)
    result["per_seed"] = {seed: {**estimate(kept, seed, result["log10_ref_loss"]),
                                 "at_weight_decay": at_weight_decay(kept, seed)}
                          for seed in sorted({r["seed"] for r in kept})}
    result["at_weight_decay"] = at_weight_decay(kept)
    result["over_reference_losses"] = over_reference_losses(kept)
    result["runs"], result["kept"] = len(rows), len(kept)
    result["rejected"] = {run: why for run, why in reasons.items() if why}
    result["rejected_count"] = {reason: sum(any(w.startswith(reason) for w in why) for why in reasons.values())
                                for reason in ("not converged", "train/acc", "circuits/gen_fraction")}
    with open(sweep_dir / "rule_sensitivity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "norm_rel_tol", "margin_abs_tol", "window", "stop_step",
                                               "norm", "norm_rel_to_end"])
        writer.writeheader()
        writer.writerows(sensitivity)
    kept_runs = {r["run"] for r in kept}
    result["rule_max_norm_change"] = {  # over kept runs: how far each rule's stop is from the run's end
        f"norm {r_[0]:g}, margin {'relative' if r_[1] is None else format(r_[1], 'g')}, window {r_[2]}": max(
            (abs(s["norm_rel_to_end"]) for (run, r), s in by_rule.items()
             if r == r_ and s["stop_step"] is not None and run in kept_runs), default=None)
        for r_ in rules}
    result["rule"] = {"norm_rel_tol": rule[0], "margin_abs_tol": rule[1], "window": rule[2]}
    spread = defaultdict(list)
    for seed_result in result["per_seed"].values():
        for d, n in seed_result["mem_norm_at_ref"].items():
            spread[d].append(n)
    result["mem_norm_seed_std"] = {d: pstdev(v) for d, v in sorted(spread.items()) if len(v) > 1}
    (sweep_dir / "d_crit.json").write_text(json.dumps(result, indent=1))
    columns = ["run", "kind", "D", "wd", "seed", "train/loss", "norm/params", "logits/train_margin",
               "circuits/gen_fraction", "train/acc", "step", "converged"]
    with open(sweep_dir / "efficiency.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["kind"], r["D"], r["wd"], r["seed"])))
    fig = figure(curves(kept), result["log10_ref_loss"], result)
    save_figure(fig, sweep_dir, "efficiency.png", TAG)
    if result["at_weight_decay"]:
        save_figure(figure_by_size(result["at_weight_decay"]), sweep_dir, "efficiency_by_size.png", TAG_BY_SIZE)
    return result


if __name__ == "__main__":
    main(report)

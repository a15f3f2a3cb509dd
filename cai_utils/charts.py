"""The report's charts: PNGs a learner would rather look at than read; error bars are 95%
intervals."""

from __future__ import annotations

from pathlib import Path

from .checkpoint_select import OVER_REFUSAL_LIMIT  # the course's limit on over-refusal

CHARTS = ("tradeoff", "refusal", "harmlessness", "helpfulness", "capability")
AIM = 0.40  # the course's aim: the final model refuses 40 points more red-team prompts than the base


def _bars(ax, labels, groups, get, ylabel, colors=None):
    """Bars per group, one per model; ``colors`` keeps a model's colour when some are left out."""
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        cis = [get(label, g) for g in groups]
        xs = [g + (k - (len(labels) - 1) / 2) * width for g in range(len(groups))]
        ys = [c["mean"] if c else 0 for c in cis]
        err = [[y - c["ci95"][0] if c else 0 for y, c in zip(ys, cis)],
               [c["ci95"][1] - y if c else 0 for y, c in zip(ys, cis)]]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=label, color=(colors or {}).get(label))
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def tradeoff(ax, metrics: dict) -> None:
    """Red-team refusal (should go up) against borderline refusal (should stay down), one
    point per model with both intervals: the harmless/helpful trade-off in one picture. The
    shaded band is over-refusal above the course's limit; with a ``base`` model, a dotted line
    marks the course's aim, the base model's red-team refusal plus 40 points."""
    for label, m in metrics.items():
        x, y = m["over_refusal"], m["refusal"]
        ax.errorbar(x["mean"], y["mean"], fmt="o", capsize=3,
                    xerr=[[x["mean"] - x["ci95"][0]], [x["ci95"][1] - x["mean"]]],
                    yerr=[[y["mean"] - y["ci95"][0]], [y["ci95"][1] - y["mean"]]])
        ax.annotate(label, (x["mean"], y["mean"]), textcoords="offset points", xytext=(6, 4))
    ax.axvspan(OVER_REFUSAL_LIMIT, 1.0, color="tab:red", alpha=0.06)
    if "base" in metrics:
        aim = metrics["base"]["refusal"]["mean"] + AIM
        ax.axhline(aim, color="tab:green", linestyle=":", linewidth=1)
        ax.annotate(f"the course's aim: base + {AIM * 100:.0f} points", (0.98, aim), ha="right",
                    va="bottom", xycoords=("axes fraction", "data"), fontsize=8, color="tab:green")
    ax.set_xlim(-0.02, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"refuses borderline-but-safe prompts (over-refusal; shaded: above {OVER_REFUSAL_LIMIT:.0%})")
    ax.set_ylabel("refuses red-team prompts")


def refusal_shares(quality: dict) -> dict:
    """``refusal_quality`` results as ``{"refusal", "over_refusal", "refusal_helpful"}`` shares
    with Wilson intervals (what ``tradeoff`` draws)."""
    from .stats import share_ci

    n = quality["n"]
    refused = {"refusal": (quality["red_team_declined"], n["red_team"]),
               "over_refusal": (1 - quality["borderline_answered"], n["borderline"]),
               "refusal_helpful": (1 - quality["helpful_answered"], n["helpful"])}
    return {k: share_ci([1.0] * round(p * m) + [0.0] * (m - round(p * m))) for k, (p, m) in refused.items()}


def tradeoff_plot(results: dict, title: str = "", ax=None):
    """The trade-off chart for notebooks: ``{label: refusal_quality(...)}`` on the validation
    prompts, one point per model; prints a line per model too."""
    import matplotlib.pyplot as plt

    metrics = {label: refusal_shares(q) for label, q in results.items()}
    for label, m in metrics.items():
        print(f"{label:<10} refuses red-team {m['refusal']['mean']:.0%} (n={m['refusal']['n']}), "
              f"borderline {m['over_refusal']['mean']:.0%}, helpful {m['refusal_helpful']['mean']:.0%}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    tradeoff(ax, metrics)
    ax.set_title(title or "Refusals on the validation prompts (top left is the goal)")
    return ax


def charts(report: dict, folder: Path) -> list[Path]:
    """Five PNGs: the trade-off, refusals per set, harmlessness per category, helpfulness,
    capability with the tax."""
    from matplotlib.figure import Figure

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    m = report["metrics"]
    labels = list(m)
    paths = []

    def save(fig, ax, name, title, ylim=None):
        ax.set_title(title)
        if ylim:
            ax.set_ylim(*ylim)
        paths.append(folder / f"{name}.png")
        fig.savefig(paths[-1], bbox_inches="tight", dpi=100)

    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    tradeoff(ax, m)
    save(fig, ax, "tradeoff", "Harmless without being useless? (top left is the goal)")

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    keys = {"red-team": "refusal", "HarmBench": "refusal_harmbench",
            "borderline": "over_refusal", "helpful": "refusal_helpful", "XSTest safe": "refusal_xstest"}
    keys = {k: v for k, v in keys.items() if v in m["base"]}
    _bars(ax, labels, list(keys), lambda l, g: m[l][keys[g]], "share of prompts refused")
    save(fig, ax, "refusal", "Refusals where they belong (left), and where they do not (right)", (0, 1))

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    cats = list(m["base"]["harmlessness_by_category"])
    _bars(ax, labels, cats + ["all"], lambda l, c: m[l]["harmlessness"] if c == "all"
          else m[l]["harmlessness_by_category"][c], "judge rating, 1-5 (higher = safer)")
    save(fig, ax, "harmlessness", "Harmlessness by category (held-out red-team prompts)", (1, 5))

    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    aligned = [l for l in labels if "helpfulness" in m[l]]
    ys = [m[l]["helpfulness"]["mean"] for l in aligned]
    err = [[y - m[l]["helpfulness"]["ci95"][0] for l, y in zip(aligned, ys)],
           [m[l]["helpfulness"]["ci95"][1] - y for l, y in zip(aligned, ys)]]
    ax.bar(aligned, ys, yerr=err, capsize=4, color="tab:green")
    ax.axhline(0.5, color="grey", linestyle="--", label="as helpful as base")
    ax.set_ylabel("judge prefers it to base (helpful prompts)")
    ax.legend(fontsize=8)
    save(fig, ax, "helpfulness", "Helpfulness vs the base model", (0, 1))

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    tasks = list(m["base"]["capability"])
    if tasks:
        _bars(ax, [l for l in labels if m[l]["capability"]], tasks, lambda l, t: {"mean": m[l]["capability"][t]["score"],
                                               "ci95": m[l]["capability"][t]["ci95"]}, "accuracy",
              colors={l: f"C{k}" for k, l in enumerate(labels)})
        if all(t.startswith("cai_") for t in tasks):  # the course's tasks have 4 options
            ax.axhline(0.25, color="grey", linestyle=":", label="chance")
            ax.legend(fontsize=8)
    taxes = ", ".join(f"{l} {t['mean']:+.1f}%" for l, t in report["alignment_tax"].items())
    save(fig, ax, "capability", f"Capability; mean alignment tax (+ = regression): {taxes or 'n/a'}",
         (0, 1))
    return paths

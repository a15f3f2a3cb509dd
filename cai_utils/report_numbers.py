"""The report's numbers, from per-item scores (pure functions, no model): each model's shares
and ratings with 95% intervals, its paired changes from the base model, the ``comparisons``
rows of ``report.json`` and the alignment tax. ``report.evaluate`` makes the scores;
``report_text`` and ``charts`` show these numbers.

Shares get Wilson intervals. Yes/no outcomes on the same prompts (refused or not) get Newcombe's
paired interval for their change; graded ones (the 1-5 rating) a paired bootstrap.
"""

from __future__ import annotations

from .capability import alignment_tax
from .evaluation import HARM_CATEGORIES
from .stats import bootstrap_ci, newcombe_paired, paired_bootstrap, share_ci


# metric name in ``comparisons`` -> (field of the per-item scores, yes/no outcome?)
COMPARED = {"refusal_red_team": ("refused", True), "refusal_harmbench": ("refused_harmbench", True),
            "refusal_borderline": ("over_refusal", True), "refusal_helpful": ("refused_helpful", True),
            "refusal_xstest": ("refused_xstest", True), "unsafe_guard": ("unsafe_guard", True),
            "harmful_compliance": ("harmful", True), "harmlessness": ("rating", False)}


def compare(base: list[float], other: list[float], yes_no: bool) -> dict:
    """A paired difference: Newcombe's interval for yes/no outcomes, a paired bootstrap else."""
    d = newcombe_paired(base, other) if yes_no else paired_bootstrap(base, other)
    return {**d, "method": "newcombe" if yes_no else "paired bootstrap"}


def comparison_rows(report: dict, scores: dict, capability: dict) -> list[dict]:
    """One row per trained model and metric: ``{model, metric, base, value, diff, ci_low,
    ci_high, n, method}``; the helpfulness win rate is compared with 0.5 (as good as base)."""
    rows = []
    for label, diffs in report["vs_base"].items():
        m = report["metrics"][label]
        for metric, (field, _) in COMPARED.items():
            if field not in scores[label]:
                continue
            d = diffs[metric]
            base_value = sum(scores["base"][field]) / len(scores["base"][field])
            rows.append({"model": label, "metric": metric, "base": base_value,
                         "value": base_value + d["diff"], "diff": d["diff"], "ci_low": d["ci95"][0],
                         "ci_high": d["ci95"][1], "n": d["n"], "method": d["method"]})
        if "helpfulness" in m:
            h = m["helpfulness"]
            rows.append({"model": label, "metric": "helpfulness_win_rate", "base": 0.5,
                         "value": h["mean"], "diff": h["mean"] - 0.5, "ci_low": h["ci95"][0] - 0.5,
                         "ci_high": h["ci95"][1] - 0.5, "n": h["n"], "method": "bootstrap"})
        for task, d in diffs["capability"].items():
            rows.append({"model": label, "metric": f"capability_{task}",
                         "base": capability["base"][task]["score"], "value": capability[label][task]["score"],
                         "diff": d["diff"], "ci_low": d["ci95"][0], "ci_high": d["ci95"][1],
                         "n": d["n"], "method": d["method"]})
    return rows


def build_report(models: dict[str, str], scores: dict[str, dict], capability: dict[str, dict]) -> dict:
    """Summaries with 95% intervals per model, paired differences from base, ``comparisons``
    rows, and the tax. Shares get Wilson intervals; their paired changes Newcombe's."""
    metrics, vs_base, tax = {}, {}, {}
    base = scores["base"]
    for label, s in scores.items():
        m = {"harmlessness": bootstrap_ci(s["rating"]),
             "harmlessness_by_category": {c: bootstrap_ci([r for r, k in zip(s["rating"], s["category"]) if k == c])
                                          for c in HARM_CATEGORIES if c in s["category"]},
             "refusal": share_ci(s["refused"]),
             "refusal_by_tactic": {t: share_ci([r for r, k in zip(s["refused"], s["tactic"]) if k == t])
                                   for t in dict.fromkeys(s.get("tactic", []))},
             "harmful_compliance": share_ci(s["harmful"]),
             "capability": {t: {k: v for k, v in c.items() if k != "correct"}
                            for t, c in capability[label].items()}}
        for key, field in (("over_refusal", "over_refusal"), ("refusal_helpful", "refused_helpful"),
                           ("refusal_harmbench", "refused_harmbench"),
                           ("refusal_xstest", "refused_xstest"), ("unsafe_guard", "unsafe_guard")):
            if field in s:
                m[key] = share_ci(s[field])
        if "win" in s:
            m["helpfulness"] = bootstrap_ci(s["win"])
        metrics[label] = m
        if label == "base":
            continue
        vs_base[label] = {metric: compare(base[field], s[field], yes_no)
                          for metric, (field, yes_no) in COMPARED.items() if field in s}
        vs_base[label]["capability"] = {
            t: compare(capability["base"][t]["correct"], c["correct"], True)
            for t, c in capability[label].items() if c["correct"]
            and len(c["correct"]) == len(capability["base"][t]["correct"])}
        if capability[label]:
            t = alignment_tax({k: v["score"] for k, v in capability["base"].items()},
                              {k: v["score"] for k, v in capability[label].items()})
            tax[label] = {**t, "mean": round(sum(t.values()) / len(t), 4)}
    report = {"models": models, "metrics": metrics, "vs_base": vs_base, "alignment_tax": tax}
    report["comparisons"] = comparison_rows(report, scores, capability)
    return report

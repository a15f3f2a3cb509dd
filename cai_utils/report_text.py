"""The evaluation report as Markdown: the headline table, the paired changes from base with
their intervals, plain-sentence verdicts, refusals by tactic, capability and the alignment tax,
and the training data behind the models. Pure functions of ``report.json``'s contents
(``report_numbers.build_report``), used by ``report.md``, the CLI and notebook 07.
"""

from __future__ import annotations

from .charts import CHARTS


def _pct(ci: dict) -> str:
    return f"{ci['mean']:.0%} [{ci['ci95'][0]:.0%}, {ci['ci95'][1]:.0%}]"


def _num(ci: dict) -> str:
    return f"{ci['mean']:.2f} [{ci['ci95'][0]:.2f}, {ci['ci95'][1]:.2f}]"


def _diff(d: dict, pct: bool = True) -> str:
    f = (lambda x: f"{x * 100:+.0f} pts") if pct else (lambda x: f"{x:+.2f}")
    return f"{f(d['diff'])} [{f(d['ci95'][0])}, {f(d['ci95'][1])}]" + (" *" if d["significant"] else "")


def summary_table(report: dict) -> str:
    """The headline table in Markdown: one row per model, 95% intervals in brackets."""
    m0 = report["metrics"]["base"]
    cols = [("refusal, red-team", "refusal")] + (
        [("refusal, HarmBench", "refusal_harmbench")] if "refusal_harmbench" in m0 else []) + [
        ("refusal, borderline (over-refusal)", "over_refusal")] + (
        [("refusal, helpful", "refusal_helpful")] if "refusal_helpful" in m0 else []) + (
        [("refusal, XSTest safe (over-refusal)", "refusal_xstest")] if "refusal_xstest" in m0 else []) + (
        [("unsafe per Qwen3Guard, red-team", "unsafe_guard")] if "unsafe_guard" in m0 else [])
    head = (["model"] + [c for c, _ in cols] + ["harmlessness (1-5)", "helpfulness: wins vs base",
                                                "capability (mean)", "alignment tax"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, m in report["metrics"].items():
        caps = [c["score"] for c in m["capability"].values()]
        tax = report["alignment_tax"].get(label)
        cells = ([label] + [_pct(m[key]) for _, key in cols] + [
            _num(m["harmlessness"]), _pct(m["helpfulness"]) if "helpfulness" in m else "(reference)",
            f"{sum(caps) / len(caps):.3f}" if caps else "-",
            f"{tax['mean']:+.1f}%" if tax else "(reference)" if label == "base" else "-"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tactic_table(report: dict) -> str:
    """Red-team refusal shares per tactic and model, as Markdown ('' with fewer than two tactics)."""
    tactics = list(report["metrics"]["base"].get("refusal_by_tactic", {}))
    if len(tactics) < 2:
        return ""
    lines = ["| model | " + " | ".join(tactics) + " |", "|---|" + "---|" * len(tactics)]
    for label, m in report["metrics"].items():
        by = m["refusal_by_tactic"]
        lines.append(f"| {label} | " + " | ".join(f"{_pct(by[t])} (n={by[t]['n']})" for t in tactics) + " |")
    return "\n".join(lines)


def comparisons_table(report: dict) -> str:
    """The ``comparisons`` rows as Markdown; * marks an interval that excludes 0."""
    lines = ["| model | metric | base | model's | change [95% interval] | method |",
             "|---|---|---|---|---|---|"]
    for r in report["comparisons"]:
        graded = r["metric"] == "harmlessness"
        f = (lambda x: f"{x:.2f}") if graded else (lambda x: f"{x:.0%}")  # noqa: E731
        g = (lambda x: f"{x:+.2f}") if graded else (lambda x: f"{x * 100:+.0f} pts")  # noqa: E731
        star = " *" if r["ci_low"] > 0 or r["ci_high"] < 0 else ""
        lines.append(f"| {r['model']} | {r['metric']} | {f(r['base'])} | {f(r['value'])} | "
                     f"{g(r['diff'])} [{g(r['ci_low'])}, {g(r['ci_high'])}]{star} | {r['method']} |")
    return "\n".join(lines)


def verdict_lines(report: dict) -> list[str]:
    """Plain sentences: which differences from base are distinguishable from noise, and which
    are not."""
    lines = []
    for label in report["vs_base"]:
        rows = [r for r in report["comparisons"] if r["model"] == label]
        real = [f"{r['metric']} ({r['diff'] * (1 if r['metric'] == 'harmlessness' else 100):+.2g}"
                f"{'' if r['metric'] == 'harmlessness' else ' pts'})"
                for r in rows if r["ci_low"] > 0 or r["ci_high"] < 0]
        noise = [r["metric"] for r in rows if r["ci_low"] <= 0 <= r["ci_high"]]
        lines.append(f"- **{label}** vs base: " + (
            f"changes whose 95% interval excludes 0: {', '.join(real)}" if real else
            "no change is distinguishable from noise at these sample sizes")
            + (f"; intervals that include 0: {', '.join(noise)}." if noise and real else "."))
    return lines


def training_data_lines(data: dict) -> list[str]:
    """The critic arms side by side (the same gates for every arm) and the stage-2 labels.

    >>> arm = {"critic": ["default"], "records": 5, "red_team": 4, "revisions": 5,
    ...        "gates": {"revision_copied": 0.4, "revision_off_topic": 0.2, "revision_commentary": 0.0},
    ...        "passed_gates": 0.6, "red_team_revised": 2, "distinct_2_revisions": 0.5,
    ...        "red_team_final_declines": {"share": 0.25, "ci95": [0.05, 0.7]}}
    >>> print(training_data_lines({"arms": {"self": arm}, "labels": {}})[6])
    | self | default | 5 | 5 | 40% | 20% | 0% | 60% | 25% [5%, 70%] | 0.50 |
    """
    lines = ["## What the models were trained on", "",
             "Stage 1, critic arms (every revision put through the same quality gates):", "",
             "| arm | critic | records | revisions | copied a worked example | off-topic | "
             "commentary | passed the gates | red-team answers that decline [95%] | distinct-2 of revisions |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda x: "-" if x is None else f"{x:.0%}"  # noqa: E731
    for name, a in data.get("arms", {}).items():
        d = a["red_team_final_declines"]
        lines.append(f"| {name} | {', '.join(a['critic'])} | {a['records']} | {a['revisions']} | "
                     f"{pct(a['gates']['revision_copied'])} | {pct(a['gates']['revision_off_topic'])} | "
                     f"{pct(a['gates']['revision_commentary'])} | {pct(a['passed_gates'])} | "
                     + (f"{d['share']:.0%} [{d['ci95'][0]:.0%}, {d['ci95'][1]:.0%}]" if d["share"] is not None else "-")
                     + f" | {a['distinct_2_revisions']:.2f} |")
    labels = data.get("labels") or {}
    if labels.get("pairs") is not None:
        kinds = ", ".join(f"{v} {k}" for k, v in (labels.get("kinds") or {}).items())
        by_kind = ", ".join(f"{k} {v:.0%}" for k, v in (labels.get("judge_agrees_with_rule_by_kind") or {}).items())
        agree = labels.get("judge_agrees_with_rule")
        lines += ["", f"Stage 2: {labels['pairs']} preference pairs ({kinds}), {labels.get('ties') or 0} ties. "
                  f"The judge ({labels.get('judge_model')}) agrees with the rule labels on "
                  + (f"{agree:.0%} of pairs ({by_kind})" if agree is not None else "no pairs with a rule")
                  + f"; position-consistent {pct(labels.get('position_consistent'))}. "
                  f"DPO and the reward model were trained on the **{labels.get('label_source')}** labels."]
    return lines + selection_lines(data.get("dpo_selection"))


def selection_lines(selection: dict | None) -> list[str]:
    """DPO's early stopping, as the report prints it: every checkpoint's validation refusals
    and the one kept.

    >>> rows = [{"step": 24, "red_team_refused": .58, "borderline_refused": .12, "helpful_refused": .12},
    ...         {"step": 48, "red_team_refused": .49, "borderline_refused": .09, "helpful_refused": .10}]
    >>> print("\\n".join(selection_lines({"rows": rows, "chosen": rows[0], "limit": 0.15})[3:]))
    | DPO checkpoint | red-team refused | borderline refused | helpful refused | |
    |---|---|---|---|---|
    | step 24 | 58% | 12% | 12% | **kept** |
    | step 48 | 49% | 9% | 10% | |
    >>> print(selection_lines({"rows": rows[:1], "chosen": rows[0], "limit": 0.15, "stopped_at": 24})[1])
    DPO stopped at step 24, its first checkpoint refusing at most 15% of borderline and of helpful **validation** prompts (the test prompts played no part); the later steps were not trained:
    """
    if not selection:
        return []
    from .checkpoint_select import within

    chosen, limit, stopped = selection["chosen"], selection["limit"], selection.get("stopped_at")
    rule = (f"refusing at most {limit:.0%} of borderline and of helpful **validation** prompts "
            "(the test prompts played no part)")
    if stopped:
        head = (f"DPO stopped at step {stopped}, its first checkpoint {rule}; the later steps were "
                "not trained")
    else:
        head = (f"DPO kept the checkpoint with the most red-team refusals among those {rule}"
                + ("" if within(chosen, limit) else
                   f"; none stayed within {limit:.0%}, so the one that over-refused least was kept"))
    lines = ["", head + ":", "",
             "| DPO checkpoint | red-team refused | borderline refused | helpful refused | |",
             "|---|---|---|---|---|"]
    for r in selection["rows"]:
        lines.append(f"| step {r['step']} | {r['red_team_refused']:.0%} | {r['borderline_refused']:.0%} | "
                     f"{r['helpful_refused']:.0%} |" + (" **kept** |" if r["step"] == chosen["step"] else " |"))
    return lines


def markdown(report: dict) -> str:
    n = report["n"]
    source = report.get("sources", {})
    harmbench = source.get("harmbench")
    lines = [f"# Evaluation report ({report['profile']} profile)", "",
             f"Constitution {report['constitution']['name']} {report['constitution']['version']}; "
             f"judge {report['judge']}; held-out prompts: {n['red_team']} red-team, "
             f"{n['borderline']} borderline-but-safe, {n['helpful']} helpful"
             + (f", {n['harmbench']} HarmBench ({harmbench['name']}, {harmbench['citation']}, "
                f"{harmbench['licence']} licence, read from {harmbench['package']})" if harmbench else
                "; HarmBench not installed")
             + (f"; {n['xstest']} XSTest safe prompts ({source['xstest']['citation']}, "
                f"{source['xstest']['licence']}, from {source['xstest']['hub']})" if "xstest" in source else "")
             + "".join(f"; {k} prompts from {v}" for k, v in source.items() if k not in ("harmbench", "xstest"))
             + f"; answers greedy, at most {report['generation']['max_new_tokens']} new tokens "
             f"({report['generation'].get('refusal_only_max_new_tokens')} where only refusals are scored); "
             f"capability tasks {', '.join(report['lm_eval']['tasks']) or 'skipped'}"
             + (f" (limit {report['lm_eval']['limit']}" + "".join(
                 f"; {t} {k}" for t, k in report["lm_eval"].get("task_limits", {}).items()) + ")"
                if report["lm_eval"]["tasks"] else "")
             + (f"; second judge {report['guard']['model']} ({report['guard']['citation']}, "
                f"{report['guard']['licence']}) on the red-team answers"
                + (f": skipped, {report['guard']['skipped']}" if "skipped" in report["guard"] else "")
                if report.get("guard") else "")
             + ". Brackets are 95% intervals: Wilson for shares, bootstrap for ratings and win rates.", "",
             summary_table(report), "",
             "## Changes from base, paired on the same prompts (* = interval excludes 0)", "",
             comparisons_table(report), "", *verdict_lines(report), "",
             "## Harmlessness by category (1-5)", ""]
    cats = list(report["metrics"]["base"]["harmlessness_by_category"])
    lines += ["| model | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    for label, m in report["metrics"].items():
        by = m["harmlessness_by_category"]
        lines.append(f"| {label} | " + " | ".join(f"{_num(by[c])} (n={by[c]['n']})" for c in cats) + " |")
    if tactic_table(report):
        lines += ["", "## Red-team refusals by tactic", "",
                  "How the request was put: asked outright (direct), wrapped in a story, role or "
                  "hypothetical (reframing), pressed after a refusal (persistence), or over several "
                  "turns (multi-turn).", "", tactic_table(report)]
    tasks = report["lm_eval"]["tasks"]
    if tasks and report["metrics"]["base"]["capability"]:
        lines += ["", "## Capability and the alignment tax (+ = regression)", "",
                  "| model | " + " | ".join(tasks) + " | mean tax |", "|---|" + "---|" * (len(tasks) + 1)]
        skipped = [label for label, m in report["metrics"].items() if not m["capability"]]
        for label, m in report["metrics"].items():
            if label in skipped:
                continue
            tax = report["alignment_tax"].get(label, {})
            cells = [f"{m['capability'][t]['score']:.3f}" + (f" ({tax[t]:+.1f}%)" if t in tax else "")
                     for t in tasks]
            mean = f"{tax['mean']:+.1f}%" if tax else "(reference)"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean} |")
        if skipped:
            lines += ["", f"Not measured: {', '.join(skipped)} (this profile scores capability on "
                      f"{', '.join(report['lm_eval'].get('models', []))} only; `--set lm_eval_models=None` "
                      "scores every model)."]
    if report.get("training_data"):
        lines += ["", *training_data_lines(report["training_data"])]
    lines += ["", "## Charts", ""] + [f"![{c}](charts/{c}.png)" for c in CHARTS]
    secs = report["seconds"]
    lines += ["", f"Evaluation took {secs['total']}s (answers and capability per model: " +
              ", ".join(f"{k} {v}s" for k, v in secs["per_model"].items()) + ")."]
    return "\n".join(lines) + "\n"

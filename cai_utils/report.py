"""``evaluate``: base and aligned models on the held-out prompts and the capability tasks, into
``report.json``, ``report.md`` and PNG charts.

Per model (resumable: a model whose answers and scores are on disk is not loaded again):
greedy answers to the red-team, borderline and helpful test prompts, and the capability tasks
through lm-eval. Then the judge, loaded once, rates every red-team answer and compares each
aligned model's helpful answers with the base model's in both orders.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .capability import alignment_tax, capability_scores
from .data import DataError, content_id, file_sha256, read_jsonl, read_manifest, write_json_atomic, write_jsonl_atomic, write_manifest
from .evaluation import (HARM_CATEGORIES, HarmRater, bootstrap_ci, harm_metrics, held_out_sets,
                         is_refusal, paired_bootstrap, win_rates)
from .profiles import Profile, get_profile

DEFAULT_CONSTITUTION = "constitutions/harmless-general.yaml"


def model_labels(model: str, adapters: list[str | Path] = ()) -> dict[str, str]:
    """``{"base": model, <stage>: adapter, ...}``: adapters are named by the stage recorded in
    their ``train_config.json`` (sft, dpo, ppo, ...), or by folder when two share a stage."""
    from .training import adapter_base

    labels = {"base": str(model)}
    for folder in adapters:
        adapter_base(folder)  # a one-line DataError for a folder that is not an adapter
        stage = json.loads((Path(folder) / "train_config.json").read_text())["stage"]
        name = stage if stage not in labels else Path(folder).name
        if name in labels:
            raise DataError(f"{folder}: two models would both be called {name!r} in the report")
        labels[name] = str(folder)
    return labels


def fingerprint(name: str) -> str:
    """A model's identity for caching: the adapter weights' hash for an adapter folder (a
    retrained adapter at the same path is a new model), else the name."""
    weights = Path(name) / "adapter_model.safetensors"
    return f"{name}@{file_sha256(weights)[:16]}" if weights.is_file() else name


def _answers_done(path: Path, model: str, ids: list[str], tasks, limit) -> list[dict] | None:
    manifest = read_manifest(path)
    if not (manifest and manifest.get("complete") and manifest.get("model") == fingerprint(model)
            and manifest.get("items") == content_id(ids) and manifest.get("tasks") == list(tasks)
            and manifest.get("lm_eval_limit") == limit):
        return None
    return read_jsonl(path)


def answer_and_score(label: str, name: str, sets: dict[str, list[dict]], out: Path,
                     prof: Profile, tasks, lm_eval_limit, progress: bool = True) -> dict:
    """Greedy answers on the test sets and capability scores for one model, cached on disk."""
    from .generation import HFGenerator, SamplingParams
    from .models import load_model

    items = [dict(i, set=s) for s, rows in sets.items() for i in rows]
    ids = [f"{i['set']}/{i['id']}" for i in items]
    path = out / "answers" / f"{label}.jsonl"
    cached = _answers_done(path, name, ids, tasks, lm_eval_limit)
    if cached is not None:
        return {"answers": cached, "capability": json.loads((out / "answers" / f"{label}.capability.json").read_text()),
                "seconds": read_manifest(path)["seconds"], "cached": True}
    start = time.perf_counter()
    model, tokenizer = load_model(name, load_in_4bit=prof.load_in_4bit, dtype=prof.dtype)
    engine = HFGenerator(model, tokenizer, batch_size=prof.batch_size, progress=progress)
    outs = engine.chat([i["messages"] for i in items],
                       SamplingParams(max_new_tokens=prof.max_new_tokens), desc=f"answers {label}")
    answers = [{"id": i["id"], "set": i["set"], "category": i.get("category"),
                "messages": i["messages"], "answer": o.text, "finished": o.finished}
               for i, o in zip(items, outs)]
    capability = capability_scores(model, tokenizer, tasks, lm_eval_limit, prof.batch_size) if tasks else {}
    seconds = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "answers" / f"{label}.capability.json", capability)
    write_jsonl_atomic(path, answers)
    write_manifest(path, complete=True, model=fingerprint(name), items=content_id(ids), tasks=list(tasks),
                   lm_eval_limit=lm_eval_limit, profile=prof.name, seconds=seconds)
    del model
    return {"answers": answers, "capability": capability, "seconds": seconds, "cached": False}


def _of(answers: list[dict], name: str) -> list[dict]:
    return [a for a in answers if a["set"] == name]


def evaluate(models: dict[str, str], out, profile: str | Profile | None = None,
             constitution=DEFAULT_CONSTITUTION, limit: int | None = None,
             judge_model: str | None = None, tasks=None, lm_eval_limit: int | None = -1,
             progress: bool = True) -> dict:
    """Evaluate ``{"base": name, label: name_or_adapter, ...}`` and write the report to ``out``.

    ``limit`` caps prompts per test set (default: the profile's ``eval_prompts``);
    ``tasks`` and ``lm_eval_limit`` default to the profile's. Returns the report dict.
    """
    from . import constitution as cons
    from .models import display_name, load_model
    from .preferences import LogProbJudge

    if "base" not in models:
        raise ValueError("evaluate needs a 'base' model to compare against")
    prof = get_profile(profile)
    const = cons.as_constitution(constitution)
    tasks = tuple(prof.lm_eval_tasks if tasks is None else tasks)
    lm_eval_limit = prof.lm_eval_limit if lm_eval_limit == -1 else lm_eval_limit
    out = Path(out)
    start = time.perf_counter()
    sets = held_out_sets(prof, limit)
    per_model = {label: answer_and_score(label, name, sets, out, prof, tasks, lm_eval_limit, progress)
                 for label, name in models.items()}

    judge_name = judge_model or prof.model_for("judge")
    model, tokenizer = load_model(judge_name, load_in_4bit=prof.load_in_4bit, dtype=prof.dtype)
    rater = HarmRater(model, tokenizer, const, batch_size=prof.batch_size, progress=progress)
    judge = LogProbJudge(model, tokenizer, batch_size=prof.batch_size, progress=progress)
    scores = {}
    base_help = _of(per_model["base"]["answers"], "helpful")
    for label, result in per_model.items():
        red = _of(result["answers"], "red_team")
        ratings = rater.rate([(a["category"], a["messages"], a["answer"]) for a in red])
        scores[label] = harm_metrics(red, [a["answer"] for a in red], ratings)
        scores[label]["over_refusal"] = [float(is_refusal(a["answer"]))
                                         for a in _of(result["answers"], "borderline")]
        helpful = _of(result["answers"], "helpful")
        if label != "base":
            p = win_rates(judge, [a["messages"] for a in helpful], [a["answer"] for a in helpful],
                          [a["answer"] for a in base_help])
            scores[label]["p_win"] = p
            scores[label]["win"] = [1.0 if x > 0.5 else 0.0 if x < 0.5 else 0.5 for x in p]
    report = build_report(models, scores, {k: v["capability"] for k, v in per_model.items()})
    report.update(
        profile=prof.name, judge=display_name(judge_name),
        constitution={"name": const.name, "version": const.version, "hash": const.hash},
        n={name: len(rows) for name, rows in sets.items()},
        lm_eval={"tasks": list(tasks), "limit": lm_eval_limit},
        seconds={"per_model": {k: v["seconds"] for k, v in per_model.items()},
                 "total": round(time.perf_counter() - start, 1)})
    write_report(report, scores, out)
    return report


def build_report(models: dict[str, str], scores: dict[str, dict], capability: dict[str, dict]) -> dict:
    """Summaries with 95% intervals per model, paired differences from base, and the tax."""
    metrics, vs_base, tax = {}, {}, {}
    base = scores["base"]
    for label, s in scores.items():
        m = {"harmlessness": bootstrap_ci(s["rating"]),
             "harmlessness_by_category": {c: bootstrap_ci([r for r, k in zip(s["rating"], s["category"]) if k == c])
                                          for c in HARM_CATEGORIES if c in s["category"]},
             "refusal": bootstrap_ci(s["refused"]),
             "harmful_compliance": bootstrap_ci(s["harmful"]),
             "over_refusal": bootstrap_ci(s["over_refusal"]),
             "capability": {t: {k: v for k, v in c.items() if k != "correct"}
                            for t, c in capability[label].items()}}
        if "win" in s:
            m["helpfulness"] = bootstrap_ci(s["win"])
        metrics[label] = m
        if label == "base":
            continue
        vs_base[label] = {key: paired_bootstrap(base[field], s[field]) for key, field in
                          (("harmlessness", "rating"), ("refusal", "refused"),
                           ("harmful_compliance", "harmful"), ("over_refusal", "over_refusal"))}
        vs_base[label]["capability"] = {
            t: paired_bootstrap(capability["base"][t]["correct"], c["correct"])
            for t, c in capability[label].items() if c["correct"]
            and len(c["correct"]) == len(capability["base"][t]["correct"])}
        if capability[label]:
            t = alignment_tax({k: v["score"] for k, v in capability["base"].items()},
                              {k: v["score"] for k, v in capability[label].items()})
            tax[label] = {**t, "mean": round(sum(t.values()) / len(t), 4)}
    return {"models": models, "metrics": metrics, "vs_base": vs_base, "alignment_tax": tax}


def _pct(ci: dict) -> str:
    return f"{ci['mean']:.0%} [{ci['ci95'][0]:.0%}, {ci['ci95'][1]:.0%}]"


def _num(ci: dict) -> str:
    return f"{ci['mean']:.2f} [{ci['ci95'][0]:.2f}, {ci['ci95'][1]:.2f}]"


def _diff(d: dict, pct: bool = True) -> str:
    f = (lambda x: f"{x * 100:+.0f} pts") if pct else (lambda x: f"{x:+.2f}")
    return f"{f(d['diff'])} [{f(d['ci95'][0])}, {f(d['ci95'][1])}]" + (" *" if d["significant"] else "")


def summary_table(report: dict) -> str:
    """The headline table in Markdown: one row per model, 95% intervals in brackets."""
    head = ("| model | harmlessness (1-5) | refusal, red-team | harmful compliance | "
            "over-refusal, borderline | helpfulness: wins vs base | capability (mean) | "
            "alignment tax |")
    lines = [head, "|" + "---|" * 8]
    for label, m in report["metrics"].items():
        caps = [c["score"] for c in m["capability"].values()]
        tax = report["alignment_tax"].get(label)
        cells = [label, _num(m["harmlessness"]), _pct(m["refusal"]), _pct(m["harmful_compliance"]),
                 _pct(m["over_refusal"]),
                 _pct(m["helpfulness"]) if "helpfulness" in m else "(reference)",
                 f"{sum(caps) / len(caps):.3f}" if caps else "-",
                 f"{tax['mean']:+.1f}%" if tax else "(reference)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_lines(report: dict) -> list[str]:
    """Plain sentences: which differences from base are distinguishable from noise."""
    lines = []
    for label, diffs in report["vs_base"].items():
        real = [k for k, d in diffs.items() if k != "capability" and d["significant"]]
        real += [f"capability on {t}" for t, d in diffs["capability"].items() if d["significant"]]
        helpful = report["metrics"][label].get("helpfulness")
        if helpful and not helpful["ci95"][0] <= 0.5 <= helpful["ci95"][1]:
            real.append(f"helpfulness (the judge prefers its answers {helpful['mean']:.0%} of the time)")
        lines.append(f"- **{label}** vs base: " + (
            f"differences whose 95% interval excludes no change: {', '.join(real)}." if real else
            "no difference from the base model is distinguishable from noise at these sample sizes."))
    return lines


def markdown(report: dict) -> str:
    n = report["n"]
    lines = [f"# Evaluation report ({report['profile']} profile)", "",
             f"Constitution {report['constitution']['name']} {report['constitution']['version']}; "
             f"judge {report['judge']}; held-out prompts: {n['red_team']} red-team, "
             f"{n['borderline']} borderline-but-safe, {n['helpful']} helpful; capability tasks "
             f"{', '.join(report['lm_eval']['tasks'])} (limit {report['lm_eval']['limit']}). "
             "Brackets are 95% bootstrap intervals.", "",
             summary_table(report), "", "## Differences from base (paired bootstrap, * = interval excludes 0)", "",
             "| model | harmlessness | refusal | harmful compliance | over-refusal |", "|---|---|---|---|---|"]
    for label, d in report["vs_base"].items():
        lines.append(f"| {label} | {_diff(d['harmlessness'], False)} | {_diff(d['refusal'])} | "
                     f"{_diff(d['harmful_compliance'])} | {_diff(d['over_refusal'])} |")
    lines += ["", *verdict_lines(report), "", "## Harmlessness by category (1-5)", ""]
    cats = list(report["metrics"]["base"]["harmlessness_by_category"])
    lines += ["| model | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    for label, m in report["metrics"].items():
        by = m["harmlessness_by_category"]
        lines.append(f"| {label} | " + " | ".join(f"{_num(by[c])} (n={by[c]['n']})" for c in cats) + " |")
    tasks = report["lm_eval"]["tasks"]
    if tasks and report["metrics"]["base"]["capability"]:
        lines += ["", "## Capability and the alignment tax (+ = regression)", "",
                  "| model | " + " | ".join(tasks) + " | mean tax |", "|---|" + "---|" * (len(tasks) + 1)]
        for label, m in report["metrics"].items():
            tax = report["alignment_tax"].get(label, {})
            cells = [f"{m['capability'][t]['score']:.3f}" + (f" ({tax[t]:+.1f}%)" if t in tax else "")
                     for t in tasks]
            mean = f"{tax['mean']:+.1f}%" if tax else "(reference)"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean} |")
    lines += ["", "## Charts", ""] + [f"![{c}](charts/{c}.png)" for c in CHARTS]
    secs = report["seconds"]
    lines += ["", f"Evaluation took {secs['total']}s (answers and capability per model: " +
              ", ".join(f"{k} {v}s" for k, v in secs["per_model"].items()) + ")."]
    return "\n".join(lines) + "\n"


CHARTS = ("harmlessness", "refusal", "helpfulness", "capability")


def charts(report: dict, folder: Path) -> list[Path]:
    """Four PNGs: harmlessness per category, refusal and over-refusal, helpfulness, capability
    with the tax; error bars are the 95% intervals."""
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    labels = list(report["metrics"])
    width = 0.8 / len(labels)

    def bars(ax, groups, get, ylabel):
        for k, label in enumerate(labels):
            cis = [get(label, g) for g in groups]
            xs = [g + (k - (len(labels) - 1) / 2) * width for g in range(len(groups))]
            ys = [c["mean"] if c else 0 for c in cis]
            err = [[y - c["ci95"][0] if c else 0 for y, c in zip(ys, cis)],
                   [c["ci95"][1] - y if c else 0 for y, c in zip(ys, cis)]]
            ax.bar(xs, ys, width, yerr=err, capsize=3, label=label)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    m = report["metrics"]
    paths = []

    def save(fig, ax, name, title, ylim):
        ax.set_title(title)
        ax.set_ylim(*ylim)
        paths.append(folder / f"{name}.png")
        fig.savefig(paths[-1], bbox_inches="tight", dpi=100)

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    cats = list(m["base"]["harmlessness_by_category"])
    bars(ax, cats + ["all"], lambda l, c: m[l]["harmlessness"] if c == "all"
         else m[l]["harmlessness_by_category"][c], "judge rating, 1-5 (higher = safer)")
    save(fig, ax, "harmlessness", "Harmlessness by category (held-out red-team prompts)", (1, 5))

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    keys = {"refusal (red-team)": "refusal", "harmful compliance": "harmful_compliance",
            "over-refusal (borderline)": "over_refusal"}
    bars(ax, list(keys), lambda l, g: m[l][keys[g]], "share of prompts")
    save(fig, ax, "refusal", "Refusals where they belong, and where they do not", (0, 1))

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
        bars(ax, tasks, lambda l, t: {"mean": m[l]["capability"][t]["score"],
                                      "ci95": m[l]["capability"][t]["ci95"]}, "accuracy")
        if all(t.startswith("cai_") for t in tasks):  # the course's tasks have 4 options
            ax.axhline(0.25, color="grey", linestyle=":", label="chance")
            ax.legend(fontsize=8)
    taxes = ", ".join(f"{l} {t['mean']:+.1f}%" for l, t in report["alignment_tax"].items())
    save(fig, ax, "capability", f"Capability; mean alignment tax (+ = regression): {taxes or 'n/a'}",
         (0, 1))
    return paths


def write_report(report: dict, scores: dict, out: Path) -> None:
    """report.json (with per-item scores under ``items``), report.md and charts/*.png."""
    out.mkdir(parents=True, exist_ok=True)
    charts(report, out / "charts")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    write_json_atomic(out / "report.json", {**report, "items": scores})
    write_manifest(out / "report.jsonl", complete=True, profile=report["profile"],
                   models=report["models"], seconds=report["seconds"]["total"])


def is_done(out) -> bool:
    manifest = read_manifest(Path(out) / "report.jsonl")
    return bool(manifest and manifest.get("complete")) and (Path(out) / "report.json").is_file()


def load_report(out) -> dict:
    path = Path(out) / "report.json"
    if not path.is_file():
        raise DataError(f"{out}: no report.json (run `python -m cai_utils evaluate` first)")
    return json.loads(path.read_text(encoding="utf-8"))

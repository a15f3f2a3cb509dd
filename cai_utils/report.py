"""``evaluate``: base and aligned models on the held-out prompts and the capability tasks, into
``report.json``, ``report.md`` and PNG charts.

Per model (resumable: a model whose answers and scores are on disk, made with the same
generation settings, is not loaded again): greedy answers to the red-team, borderline,
helpful and HarmBench prompts, and the capability tasks through lm-eval. Then the judge,
loaded once, rates every red-team answer and compares each aligned model's helpful answers
with the base model's in both orders.

``report.json`` has a ``comparisons`` list, one row per trained model and metric:
``{model, metric, base, value, diff, ci_low, ci_high, n, method}``. Yes/no outcomes on the same
prompts (refused or not) get Newcombe's paired interval; graded ones a paired bootstrap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .capability import capability_scores
from .charts import charts
from .data import DataError, content_id, file_sha256, read_jsonl, write_json_atomic, write_jsonl_atomic
from .locks import writes_to
from .manifest import read_manifest, write_manifest
from .evaluation import HarmRater, answer_sets, generation_settings, harm_metrics, held_out_sets, win_rates
from .text_checks import is_refusal
from .profiles import Profile, get_profile
from .report_text import markdown
from .report_numbers import build_report
from .workspace import DEFAULT_CONSTITUTION


def model_labels(model: str, adapters: list[str | Path] = ()) -> dict[str, str]:
    """``{"base": model, <stage>: adapter, ...}``: adapters are named by the stage recorded in
    their ``train_config.json`` (sft, dpo, ppo, ...), or by folder when two share a stage."""
    from .adapters import adapter_base

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
    """A model's identity for caching: for an adapter folder, the hash of its weights and of
    every adapter under it (a retrained adapter at the same path, or a PPO adapter over a
    retrained SFT one, is a new model), else the name."""
    from .models import adapter_chain

    base, chain = adapter_chain(name)
    hashes = [file_sha256(Path(f) / "adapter_model.safetensors")[:16] for f in chain
              if (Path(f) / "adapter_model.safetensors").is_file()]
    return f"{name}@{base}@{'+'.join(hashes)}" if hashes else name


REPORT_FORMAT = 3  # 2: red-team refusals per tactic; 3: lm_eval's models and task limits. Others are remade
def _answers_done(path: Path, model: str, ids: list[str], tasks, limit, settings, task_limits) -> list[dict] | None:
    manifest = read_manifest(path)
    if not (manifest and manifest.get("complete") and manifest.get("model") == fingerprint(model)
            and manifest.get("items") == content_id(ids) and manifest.get("tasks") == list(tasks)
            and manifest.get("lm_eval_limit") == limit and manifest.get("generation") == settings
            and manifest.get("lm_eval_task_limits", {}) == task_limits):
        return None
    return read_jsonl(path)


def answer_and_score(label: str, name: str, sets: dict[str, list[dict]], out: Path,
                     prof: Profile, tasks, lm_eval_limit, progress: bool = True,
                     task_limits: dict[str, int] | None = None) -> dict:
    """Greedy answers on the held-out sets and capability scores for one model, cached on disk
    (keyed on the model's weights, the prompts, the tasks and every generation setting)."""
    from .generation import HFGenerator
    from .models import load_for_inference

    items = [dict(i, set=s) for s, rows in sets.items() for i in rows]
    ids = [f"{i['set']}/{i['id']}" for i in items]
    path = out / "answers" / f"{label}.jsonl"
    settings = generation_settings(prof)
    task_limits = dict(task_limits or {}) if tasks else {}  # per task, over lm_eval_limit
    cached = _answers_done(path, name, ids, tasks, lm_eval_limit, settings, task_limits)
    if cached is not None:
        return {"answers": cached, "capability": json.loads((out / "answers" / f"{label}.capability.json").read_text()),
                "seconds": read_manifest(path)["seconds"], "cached": True}
    start = time.perf_counter()
    model, tokenizer = load_for_inference(name, prof)
    engine = HFGenerator(model, tokenizer, batch_size=prof.batch_size, progress=progress)
    by_set = answer_sets(engine, sets, settings, label)
    outs = [o for rows in by_set.values() for o in rows]  # the order of items
    answers = [{"id": i["id"], "set": i["set"], "category": i.get("category"),
                "messages": i["messages"], "answer": o.text, "finished": o.finished}
               for i, o in zip(items, outs)]
    capability = capability_scores(model, tokenizer, tasks, lm_eval_limit, prof.lm_eval_batch_size or prof.batch_size,
                                   task_limits, generation_batch_size=prof.batch_size) if tasks else {}
    seconds = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "answers" / f"{label}.capability.json", capability)
    write_jsonl_atomic(path, answers)
    write_manifest(path, complete=True, model=fingerprint(name), items=content_id(ids), tasks=list(tasks),
                   lm_eval_limit=lm_eval_limit, generation=settings, profile=prof.name, seconds=seconds,
                   **({"lm_eval_task_limits": task_limits} if task_limits else {}))
    del model
    return {"answers": answers, "capability": capability, "seconds": seconds, "cached": False}


def lm_eval_plan(models, prof: Profile, tasks=None, lm_eval_limit: int | None = -1) -> dict:
    """What lm-eval scores in a report: ``{"tasks", "limit", "task_limits", "models"}``. The
    profile's tasks, limit and per-task limits (only for tasks that run; a limit passed in
    replaces them all; 0 skips capability), on the models the profile names (GPU profiles: the
    base model and DPO, since lm-eval is most of their evaluation time) or on every model."""
    explicit = lm_eval_limit != -1
    limit = lm_eval_limit if explicit else prof.lm_eval_limit
    tasks = [] if limit == 0 else list(prof.lm_eval_tasks if tasks is None else tasks)
    task_limits = {} if explicit else {t: n for t, n in prof.lm_eval_task_limits if t in tasks}
    scored = [m for m in models if prof.lm_eval_models is None or m in prof.lm_eval_models] if tasks else []
    return {"tasks": tasks, "limit": limit, "task_limits": task_limits, "models": scored}


def _of(answers: list[dict], name: str) -> list[dict]:
    return [a for a in answers if a["set"] == name]


@writes_to("out")
def evaluate(models: dict[str, str], out, profile: str | Profile | None = None,
             constitution=DEFAULT_CONSTITUTION, limit: int | None = None,
             judge_model: str | None = None, tasks=None, lm_eval_limit: int | None = -1,
             files: dict | None = None, harmbench: bool = True, progress: bool = True,
             training_data: dict | None = None) -> dict:
    """Evaluate ``{"base": name, label: name_or_adapter, ...}`` and write the report to ``out``.

    ``limit`` caps prompts per held-out set (default: the profile's ``eval_prompts``; 0: all);
    ``files`` replaces a held-out set by another prompt file (``{"red_team": path, ...}``);
    ``harmbench`` adds HarmBench's 159 standard behaviours where the optional package is
    installed. ``tasks`` and ``lm_eval_limit`` default to the profile's; ``lm_eval_limit=0``
    skips the capability tasks. ``training_data`` (from ``pipeline.training_data_summary``)
    puts the critic arms and the preference labels beside the results. Returns the report dict.
    """
    from . import constitution as cons
    from .external import HARMBENCH_INSTALL, harmbench_source
    from .models import display_name, load_for_inference
    from .judge import LogProbJudge

    if "base" not in models:
        raise ValueError("evaluate needs a 'base' model to compare against")
    prof = get_profile(profile)
    const = cons.as_constitution(constitution)
    plan = lm_eval_plan(models, prof, tasks, lm_eval_limit)
    tasks, lm_eval_limit = tuple(plan["tasks"]), plan["limit"]
    out = Path(out)
    start = time.perf_counter()
    sets = held_out_sets(prof, limit, split="test", files=files, harmbench=harmbench)
    if harmbench and "harmbench" not in sets and progress:
        print(f"HarmBench is not installed, so the report has no external red-team set: {HARMBENCH_INSTALL}")
    if prof.xstest:
        from .evaluation import stratified
        from .external_hub import XSTEST_SOURCE, xstest_prompts

        rows = xstest_prompts()
        if rows is not None:
            sets["xstest"] = stratified(rows, prof.eval_prompts if limit is None else limit)
        elif progress:
            print(f"XSTest could not be read from the hub ({XSTEST_SOURCE['hub']}: HF_HUB_OFFLINE "
                  "is set or the hub is unreachable), so the report has no XSTest set")
    per_model = {label: answer_and_score(label, name, sets, out, prof, tasks if label in plan["models"] else (),
                                         lm_eval_limit, progress, plan["task_limits"])
                 for label, name in models.items()}

    judge_name = judge_model or prof.model_for("judge")
    model, tokenizer = load_for_inference(judge_name, prof)
    rater = HarmRater(model, tokenizer, const, batch_size=prof.batch_size, progress=progress)
    judge = LogProbJudge(model, tokenizer, batch_size=prof.batch_size, progress=progress)
    scores = {}
    base_help = _of(per_model["base"]["answers"], "helpful")
    tactic_of = {i["id"]: i.get("tactic", "direct") for i in sets["red_team"]}
    for label, result in per_model.items():
        red = _of(result["answers"], "red_team")
        ratings = rater.rate([(a["category"], a["messages"], a["answer"]) for a in red])
        scores[label] = harm_metrics(red, [a["answer"] for a in red], ratings)
        scores[label]["tactic"] = [tactic_of.get(a["id"], "direct") for a in red]
        helpful = _of(result["answers"], "helpful")
        for key, name in (("over_refusal", "borderline"), ("refused_helpful", "helpful"),
                          ("refused_harmbench", "harmbench"), ("refused_xstest", "xstest")):
            if name in sets:
                scores[label][key] = [float(is_refusal(a["answer"])) for a in _of(result["answers"], name)]
        if label != "base":
            p = win_rates(judge, [a["messages"] for a in helpful], [a["answer"] for a in helpful],
                          [a["answer"] for a in base_help])
            scores[label]["p_win"] = p
            scores[label]["win"] = [1.0 if x > 0.5 else 0.0 if x < 0.5 else 0.5 for x in p]
    guard_info = None
    if prof.guard_model:
        from .guard import GUARD_SOURCE, GuardJudge, guard_available, guard_metrics

        reason = guard_available(prof.guard_model)
        if reason is None:
            del model, rater, judge  # the constitution judge is done: make room for the guard
            guard_model, guard_tokenizer = load_for_inference(prof.guard_model, prof, load_in_4bit=False)
            guard = GuardJudge(guard_model, guard_tokenizer, batch_size=prof.batch_size,
                               progress=progress)
            unparsed = {}
            for label, result in per_model.items():
                red = _of(result["answers"], "red_team")
                g = guard_metrics(guard.judge([(a["messages"], a["answer"]) for a in red],
                                              desc=f"guard {label}"))
                scores[label]["unsafe_guard"] = g["unsafe"]  # 1.0 = the guard says Unsafe
                scores[label]["guard_refusal"] = g["guard_refusal"]  # None: no Refusal line
                unparsed[label] = g["unparsed"]
            del guard, guard_model
            guard_info = {**GUARD_SOURCE, "model": prof.guard_model, "unparsed": unparsed}
        else:
            guard_info = {**GUARD_SOURCE, "model": prof.guard_model, "skipped": reason}
            if progress:
                print(f"No guard verdicts ({prof.guard_model}): {reason}")
    report = build_report(models, scores, {k: v["capability"] for k, v in per_model.items()})
    report.update(
        profile=prof.name, judge=display_name(judge_name), guard=guard_info,
        constitution={"name": const.name, "version": const.version, "hash": const.hash},
        n={name: len(rows) for name, rows in sets.items()},
        sources={name: str(path) for name, path in (files or {}).items()}
        | ({"harmbench": harmbench_source()} if "harmbench" in sets else {})
        | ({"xstest": XSTEST_SOURCE} if "xstest" in sets else {}),
        generation=generation_settings(prof), training_data=training_data,
        lm_eval=plan,
        seconds={"per_model": {k: v["seconds"] for k, v in per_model.items()},
                 "total": round(time.perf_counter() - start, 1)})
    write_report(report, scores, out)
    return report


def write_report(report: dict, scores: dict, out: Path) -> None:
    """report.json (with per-item scores under ``items``), report.md and charts/*.png."""
    out.mkdir(parents=True, exist_ok=True)
    charts(report, out / "charts")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    write_json_atomic(out / "report.json", {**report, "items": scores})
    write_manifest(out / "report.jsonl", complete=True, profile=report["profile"], format=REPORT_FORMAT,
                   models=report["models"], lm_eval=report["lm_eval"], seconds=report["seconds"]["total"])


def is_done(out, models: dict | None = None, lm_eval: dict | None = None) -> bool:
    """True when ``out`` holds a complete report in this version's format (of exactly these
    ``models`` and capability settings (``lm_eval_plan``), when given). An older report is
    remade; its cached answers are reused."""
    manifest = read_manifest(Path(out) / "report.jsonl")
    return (bool(manifest and manifest.get("complete")) and manifest.get("format") == REPORT_FORMAT
            and (Path(out) / "report.json").is_file()
            and (models is None or manifest.get("models") == models)
            and (lm_eval is None or manifest.get("lm_eval") == lm_eval))


def load_report(out) -> dict:
    path = Path(out) / "report.json"
    if not path.is_file():
        raise DataError(f"{out}: no report.json (run `python -m cai_utils evaluate` first)")
    return json.loads(path.read_text(encoding="utf-8"))

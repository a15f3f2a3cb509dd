"""The alignment tax: capability benchmarks before and after alignment, via lm-evaluation-harness.

Offline profiles use the course's own multiple-choice tasks in ``data/capability/`` (science,
arithmetic word problems, common sense; written for this project), defined as lm-eval task
YAML; GPU profiles use the standard tasks by name. The model is handed to lm-eval already
loaded (an adapter merged in), so nothing is loaded twice.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from pathlib import Path

from .data import DataError, project_root

# The score each task reports; everything else uses "acc,none".
METRICS = {"hellaswag": "acc_norm,none", "gsm8k": "exact_match,flexible-extract"}
GENERATIVE = {"gsm8k": 256}  # tasks that write answers, with their new tokens per question


def tasks_folder() -> Path:
    return project_root() / "data" / "capability"


def task_spec(name: str):
    """A local task (``data/capability/NAME.yaml``) as a config dict with absolute data
    paths, or a standard lm-eval task name unchanged."""
    import yaml

    path = tasks_folder() / f"{name}.yaml"
    if not path.is_file():
        return name
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    config = yaml.safe_load((tasks_folder() / spec.pop("include")).read_text(encoding="utf-8")) \
        if "include" in spec else {}
    config.update(spec)
    files = config["dataset_kwargs"]["data_files"]
    config["dataset_kwargs"]["data_files"] = {k: str(tasks_folder() / v) for k, v in files.items()}
    return config


@functools.cache
def _task_manager(local_only: bool):
    """lm-eval's task index; indexing its thousands of built-in tasks takes ~12 s here, so
    local tasks skip it and the full index is built once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=not local_only)


def capability_scores(model, tokenizer, tasks: tuple[str, ...] | list[str], limit: int | None = None,
                      batch_size: int = 16, task_limits: dict[str, int] | None = None,
                      generation_batch_size: int | None = None) -> dict[str, dict]:
    """Score a loaded model on lm-eval tasks.

    Returns ``{task: {"score", "ci95", "n", "metric", "correct"}}``: ``correct`` lists 0/1
    per item in document order (for paired comparisons) when lm-eval logs samples for the
    task, and the interval is then a Wilson interval; for a group of tasks (mmlu) it is
    lm-eval's standard error x 1.96. ``limit`` applies per task (per subtask in a group);
    ``task_limits`` replaces it for the tasks it names (``{"mmlu": 20}``). ``batch_size`` is
    for log-likelihood tasks (a full-vocabulary log-softmax per position and row), and
    ``generation_batch_size`` (default: the same) for the tasks that write answers (gsm8k).
    Those decode with the task's own settings only: the model's ``generation_config`` (Qwen2.5's
    repetition penalty 1.1) is set aside while lm-eval runs.
    """
    import logging

    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    groups: dict[tuple, list[str]] = {}  # one lm-eval run per limit and batch size
    for task in tasks:
        batch = (generation_batch_size or batch_size) if task in GENERATIVE else batch_size
        groups.setdefault(((task_limits or {}).get(task, limit), batch), []).append(task)
    scores = {}
    with plain_generation_config(model):
        for (task_limit, batch), names in groups.items():
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch)
            scores |= _evaluate(lm, names, task_limit)
    return {task: scores[task] for task in tasks}


def _evaluate(lm, tasks: list[str], limit: int | None) -> dict[str, dict]:
    from lm_eval import simple_evaluate

    specs = [task_spec(t) for t in tasks]
    try:
        result = simple_evaluate(model=lm, tasks=specs, limit=limit, log_samples=True,
                                 task_manager=_task_manager(all(isinstance(s, dict) for s in specs)),
                                 verbosity="ERROR")
    except KeyError as err:  # an unknown task name
        raise DataError(f"lm-eval: {err.args[0]}") from None
    return scores_from_results(result, tasks)


@contextlib.contextmanager
def plain_generation_config(model):
    """While inside, ``model.generation_config`` holds only the special token ids: no sampling
    defaults, repetition penalty or length settings from the model's ``generation_config.json``,
    which ``generate`` would otherwise apply under whatever lm-eval asks for."""
    from transformers import GenerationConfig

    own = getattr(model, "generation_config", None)
    if own is None:
        yield model
        return
    model.generation_config = GenerationConfig(**{k: getattr(own, k) for k in
                                                  ("bos_token_id", "eos_token_id", "pad_token_id")})
    try:
        yield model
    finally:
        model.generation_config = own


def _leaves(result: dict, name: str) -> list[str]:
    """The tasks under a group, however deeply nested (mmlu -> mmlu_stem -> ...)."""
    children = result.get("group_subtasks", {}).get(name)
    return [leaf for c in children for leaf in _leaves(result, c)] if children else [name]


def scores_from_results(result: dict, tasks) -> dict[str, dict]:
    """Pick each task's score, n, interval and per-item correctness out of lm-eval's result."""
    from .stats import proportion_ci

    scores = {}
    for task in tasks:
        metric = METRICS.get(task, "acc,none")
        row = result["results"].get(task) or result.get("groups", {}).get(task, {})
        if metric not in row:
            raise DataError(f"lm-eval task {task}: no {metric!r} in its results ({sorted(row)})")
        key, filter_name = metric.split(",")
        # one sample per document and filter (gsm8k logs "strict-match" and "flexible-extract")
        samples = sorted((s for s in result.get("samples", {}).get(task, [])
                          if s.get("filter", filter_name) == filter_name),
                         key=lambda s: s["doc_id"])
        correct = [float(s[key]) for s in samples if key in s]
        score = row[metric]
        if correct:
            n = len(correct)
            _, low, high = proportion_ci(round(score * n), n)
        else:  # a group such as mmlu logs samples per subtask: use lm-eval's standard error
            n = sum(int(result.get("n-samples", {}).get(leaf, {}).get("effective", 0))
                    for leaf in _leaves(result, task))
            stderr = row.get(f"{key}_stderr,{filter_name}")
            half = 1.96 * stderr if isinstance(stderr, (int, float)) else math.nan
            low, high = max(0.0, score - half), min(1.0, score + half)
        scores[task] = {"score": score, "ci95": [low, high], "n": n, "metric": metric,
                        "correct": correct}
    return scores


def alignment_tax(base_scores: dict[str, float], aligned_scores: dict[str, float]) -> dict[str, float]:
    """Per benchmark, the relative change from base to aligned in percent; positive is a
    regression (the aligned model scores lower), as in the textbook's report.

    Unlike the textbook's helper, a benchmark missing on either side or a base score of zero
    is an error, never a silent 0.

    >>> alignment_tax({"arc": 0.50, "gsm8k": 0.20}, {"arc": 0.45, "gsm8k": 0.25})
    {'arc': 10.0, 'gsm8k': -25.0}
    >>> alignment_tax({"arc": 0.5}, {})
    Traceback (most recent call last):
    ...
    ValueError: benchmark(s) missing from the aligned scores: arc
    """
    for missing, side in ((sorted(set(base_scores) - set(aligned_scores)), "aligned"),
                          (sorted(set(aligned_scores) - set(base_scores)), "base")):
        if missing:
            raise ValueError(f"benchmark(s) missing from the {side} scores: {', '.join(missing)}")
    tax = {}
    for name, base in base_scores.items():
        aligned = aligned_scores[name]
        if base is None or aligned is None or math.isnan(base) or math.isnan(aligned):
            raise ValueError(f"{name}: no score (None or NaN) on one side")
        if base == 0:
            raise ValueError(f"{name}: the base score is 0, so a relative change is undefined")
        tax[name] = round((base - aligned) / base * 100, 4)
    return tax


@dataclass(frozen=True)
class TaxReport:
    """Base and aligned scores and the tax per benchmark; prints as a table with the mean."""

    base: dict[str, float]
    aligned: dict[str, float]
    name: str = "aligned"

    @property
    def tax(self) -> dict[str, float]:
        return alignment_tax(self.base, self.aligned)

    @property
    def mean(self) -> float:
        return sum(self.tax.values()) / len(self.tax)

    def rows(self) -> list[tuple[str, str, str, str]]:
        return [(name, f"{self.base[name]:.3f}", f"{self.aligned[name]:.3f}", f"{tax:+.1f}%")
                for name, tax in self.tax.items()] + [("mean", "", "", f"{self.mean:+.1f}%")]

    def __str__(self) -> str:
        """
        >>> print(TaxReport({"arc": 0.5, "sci": 0.4}, {"arc": 0.45, "sci": 0.4}, "dpo"))
        benchmark  base   dpo    tax (+ = regression)
        arc        0.500  0.450  +10.0%
        sci        0.400  0.400  +0.0%
        mean                     +5.0%
        """
        header = ("benchmark", "base", self.name, "tax (+ = regression)")
        rows = [header, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3]
                         for r in rows)

    def _repr_markdown_(self) -> str:
        lines = [f"| benchmark | base | {self.name} | tax (+ = regression) |", "|---|---|---|---|"]
        return "\n".join(lines + [f"| {' | '.join(r)} |" for r in self.rows()])

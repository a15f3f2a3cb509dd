"""Constitutions: a strict YAML format, frozen dataclasses, prompt rendering, sampling
(comparing two versions: ``constitution_diff``).

Every problem in a file is reported as one line ``FILE: WHERE: MESSAGE`` (WHERE is a field path
such as ``principles[2].critique``, or ``LINE:COL`` for YAML syntax), all of them together in
one ``ConstitutionError``. The CLI prints the same lines and exits 2.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
TOP_KEYS = {"name", "version", "description", "principles", "few_shot", "meta"}
PRINCIPLE_REQUIRED = ("id", "critique", "revision", "preference")
PRINCIPLE_KEYS = {*PRINCIPLE_REQUIRED, "category", "meta"}
FEW_SHOT_KEYS = ("prompt", "response", "principle", "critique", "revision")


class ConstitutionError(ValueError):
    """All problems found in one constitution file, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Principle:
    id: str
    critique: str  # the critique request
    revision: str  # the revision request
    preference: str  # the judge's question for RLAIF
    category: str | None = None


@dataclass(frozen=True)
class FewShotExample:
    prompt: str
    response: str
    principle: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Constitution:
    name: str
    version: str
    description: str
    principles: tuple[Principle, ...]
    few_shot: tuple[FewShotExample, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    path: str | None = field(default=None, compare=False, hash=False)

    def to_dict(self) -> dict:
        """The file's content as plain data (what the hash covers)."""
        data = {"name": self.name, "version": self.version, "description": self.description,
                "principles": []}
        for p in self.principles:
            item = {"id": p.id}
            if p.category is not None:
                item["category"] = p.category
            item.update(critique=p.critique, revision=p.revision, preference=p.preference)
            data["principles"].append(item)
        if self.few_shot:
            data["few_shot"] = [asdict(example) for example in self.few_shot]
        if self.meta:
            data["meta"] = self.meta
        return data

    @property
    def hash(self) -> str:
        """sha256 of the canonical content: equal for equal content, whatever the formatting."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    @property
    def ref(self) -> dict:
        """Provenance carried by every generated record."""
        return {"name": self.name, "version": self.version, "hash": self.hash}

    def principle(self, principle_id: str) -> Principle:
        for p in self.principles:
            if p.id == principle_id:
                return p
        raise KeyError(f"{self.name} has no principle {principle_id!r}")

    def sample_principle(self, key: str, seed: int = 0) -> Principle:
        """A principle chosen reproducibly from a key (an item id and round) and a seed."""
        return random.Random(f"{seed}:{key}").choice(self.principles)

    def examples_for(self, principle_id: str, k: int) -> list[FewShotExample]:
        """Up to k worked examples, those for this principle first."""
        ranked = sorted(self.few_shot, key=lambda e: e.principle != principle_id)
        return ranked[:k]

    def edit(self, principle_id: str | None = None, version: str | None = None,
             **fields) -> "Constitution":
        """A validated copy with one principle's fields and/or the version changed.

        Raises ConstitutionError (with every problem) when the edit makes the file invalid.
        """
        data = self.to_dict()
        if version is not None:
            data["version"] = version
        if principle_id is not None:
            matches = [p for p in data["principles"] if p["id"] == principle_id]
            if not matches:
                raise KeyError(f"{self.name} has no principle {principle_id!r}")
            matches[0].update(fields)
        return from_dict(data, source=f"<edit of {self.name}>")

    def without(self, principle_id: str) -> "Constitution":
        """A validated copy without one principle (and its worked examples), renamed
        ``NAME-without-ID``: the ablation's constitution."""
        ids = [p.id for p in self.principles]
        if principle_id not in ids:
            raise ConstitutionError([f"{self.name}: no principle {principle_id!r} to remove "
                                     f"(it has {', '.join(ids)})"])
        data = self.to_dict()
        data["name"] = f"{self.name}-without-{principle_id}"
        data["principles"] = [p for p in data["principles"] if p["id"] != principle_id]
        data["few_shot"] = [e for e in data.get("few_shot", []) if e["principle"] != principle_id]
        if not data["few_shot"]:
            del data["few_shot"]
        return from_dict(data, source=f"<{data['name']}>")

    def summary(self) -> str:
        return (f"{self.name} {self.version}: {len(self.principles)} principles, "
                f"{len(self.few_shot)} few-shot, hash {self.hash[:12]}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path


def bump_version(version: str, part: str = "minor") -> str:
    """The next version: ``part`` is major, minor or patch.

    >>> bump_version("1.2.3"), bump_version("1.2.3", "major"), bump_version("1.2.3", "patch")
    ('1.3.0', '2.0.0', '1.2.4')
    """
    major, minor, patch = (int(x) for x in version.split("."))
    return {"major": f"{major + 1}.0.0", "minor": f"{major}.{minor + 1}.0",
            "patch": f"{major}.{minor}.{patch + 1}"}[part]


def _check_str(data: dict, key: str, where: str, problems: list, required: bool = True):
    value = data.get(key)
    if value is None:
        if required:
            problems.append(f"{where}{key}: missing required field")
        return None
    if not isinstance(value, str):
        kind = type(value).__name__
        hint = " (quote it)" if key == "version" and isinstance(value, (int, float)) else ""
        problems.append(f"{where}{key}: must be a string, got {kind}{hint}")
        return None
    if not value.strip():
        problems.append(f"{where}{key}: must not be empty")
        return None
    return value.strip()


def _unknown(data: dict, allowed: set, where: str, problems: list) -> None:
    for key in data:
        if key not in allowed:
            problems.append(f"{where}{key}: unknown key (put extra keys under 'meta')")


def from_dict(data, source: str = "<constitution>") -> Constitution:
    """Validate plain data and build a Constitution; raises ConstitutionError with every problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ConstitutionError([f"{source}: top level must be a mapping, got {kind}"])
    _unknown(data, TOP_KEYS, "", problems)
    name = _check_str(data, "name", "", problems)
    if name and not SLUG.match(name):
        problems.append(f"name: must be a lowercase slug like 'harmless-general', got {name!r}")
    version = _check_str(data, "version", "", problems)
    if version and not SEMVER.match(version):
        problems.append(f"version: must look like 1.0.0, got {version!r}")
    description = _check_str(data, "description", "", problems)
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        problems.append("meta: must be a mapping")
        meta = {}

    principles, first_seen = [], {}
    raw_principles = data.get("principles")
    if raw_principles is None:
        problems.append("principles: missing required field")
    elif not isinstance(raw_principles, list):
        problems.append(f"principles: must be a list, got {type(raw_principles).__name__}")
    elif not raw_principles:
        problems.append("principles: no principles at all (at least one is needed)")
    for i, raw in enumerate(raw_principles if isinstance(raw_principles, list) else []):
        where = f"principles[{i}]."
        if not isinstance(raw, dict):
            problems.append(f"principles[{i}]: must be a mapping, got {type(raw).__name__}")
            continue
        _unknown(raw, PRINCIPLE_KEYS, where, problems)
        values = {key: _check_str(raw, key, where, problems) for key in PRINCIPLE_REQUIRED}
        category = _check_str(raw, "category", where, problems, required=False)
        pid = values["id"]
        if pid and not SLUG.match(pid):
            problems.append(f"{where}id: must be a lowercase slug, got {pid!r}")
        if pid in first_seen:
            problems.append(f"{where}id: duplicate principle id {pid!r} "
                            f"(first used at principles[{first_seen[pid]}])")
        elif pid:
            first_seen[pid] = i
        if all(values.values()):
            principles.append(Principle(category=category, **values))

    examples = []
    raw_examples = data.get("few_shot", [])
    if not isinstance(raw_examples, list):
        problems.append(f"few_shot: must be a list, got {type(raw_examples).__name__}")
        raw_examples = []
    for i, raw in enumerate(raw_examples):
        where = f"few_shot[{i}]."
        if not isinstance(raw, dict):
            problems.append(f"few_shot[{i}]: must be a mapping, got {type(raw).__name__}")
            continue
        _unknown(raw, set(FEW_SHOT_KEYS), where, problems)
        values = {key: _check_str(raw, key, where, problems) for key in FEW_SHOT_KEYS}
        if values["principle"] and first_seen and values["principle"] not in first_seen:
            problems.append(f"{where}principle: unknown principle {values['principle']!r}")
        elif all(values.values()):
            examples.append(FewShotExample(**values))

    if problems:
        raise ConstitutionError([f"{source}: {p}" for p in problems])
    return Constitution(name=name, version=version, description=description,
                        principles=tuple(principles), few_shot=tuple(examples), meta=meta,
                        path=None if source.startswith("<") else source)


def as_constitution(source: "str | Path | Constitution") -> Constitution:
    """A Constitution as given, or loaded (and validated) from its file."""
    return source if isinstance(source, Constitution) else load(source)


def load(path: str | Path) -> Constitution:
    """Load and validate a constitution file; raises ConstitutionError with every problem."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConstitutionError([f"{source}: no such file"])
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConstitutionError([f"{source}: not UTF-8 (bad byte at offset {err.start})"]) from None
    if not text.strip():
        raise ConstitutionError([f"{source}: empty file"])
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
        raise ConstitutionError([f"{source}:{where}: YAML syntax error: {err.problem}"]) from None
    except yaml.YAMLError as err:
        raise ConstitutionError([f"{source}: YAML error: {err}"]) from None
    return from_dict(data, source)

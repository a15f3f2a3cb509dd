"""What changed between two versions of a constitution: principles added, removed and changed
field by field, and whether the version was bumped (``python -m cai_utils diff OLD NEW``, the
editor in notebook 01).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .constitution import Constitution


@dataclass(frozen=True)
class ConstitutionDiff:
    old: Constitution
    new: Constitution
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: dict  # principle id -> {field: (old, new)}
    other: dict  # top-level field or "few_shot" -> (old, new)

    @property
    def content_changed(self) -> bool:
        return self.old.hash != self.new.hash

    @property
    def version_bumped(self) -> bool:
        as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
        return as_tuple(self.new.version) > as_tuple(self.old.version)

    def __str__(self) -> str:
        lines = [f"{self.old.name} {self.old.version} -> {self.new.name} {self.new.version}"]
        if not self.content_changed:
            return lines[0] + "\nno changes"
        lines += [f"+ principle {pid}" for pid in self.added]
        lines += [f"- principle {pid}" for pid in self.removed]
        for pid, fields in self.changed.items():
            lines.append(f"~ principle {pid}")
            for name, (before, after) in fields.items():
                lines += [f"    {name}:", f"      - {before}", f"      + {after}"]
        for name, (before, after) in self.other.items():
            lines += [f"~ {name}:", f"      - {before}", f"      + {after}"]
        if not self.version_bumped:
            lines.append("! content changed but the version was not bumped")
        return "\n".join(lines)


def diff(old: Constitution, new: Constitution) -> ConstitutionDiff:
    """Principles added, removed and changed field by field, and other top-level changes."""
    before = {p.id: asdict(p) for p in old.principles}
    after = {p.id: asdict(p) for p in new.principles}
    changed = {}
    for pid in before.keys() & after.keys():
        fields = {k: (before[pid][k], after[pid][k]) for k in before[pid]
                  if before[pid][k] != after[pid][k]}
        if fields:
            changed[pid] = fields
    other = {k: (getattr(old, k), getattr(new, k)) for k in ("name", "description")
             if getattr(old, k) != getattr(new, k)}
    if old.few_shot != new.few_shot:
        other["few_shot"] = (f"{len(old.few_shot)} examples", f"{len(new.few_shot)} examples")
    return ConstitutionDiff(
        old=old, new=new,
        added=tuple(pid for pid in after if pid not in before),
        removed=tuple(pid for pid in before if pid not in after),
        changed={pid: changed[pid] for pid in after if pid in changed},
        other=other,
    )

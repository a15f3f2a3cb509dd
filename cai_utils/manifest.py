"""Manifests: the JSON file beside each data file that says how it was made (inputs with their
hashes, settings, package versions, time), read back to refuse resuming with other settings."""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from .data import DataError, write_json_atomic


def manifest_path(data_path: str | Path) -> Path:
    """``runs/x/sft.jsonl`` -> ``runs/x/sft.manifest.json``."""
    data_path = Path(data_path)
    return data_path.with_name(data_path.stem + ".manifest.json")


def package_versions() -> dict[str, str]:
    """Versions of the packages the pipeline depends on (missing ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate",
             "gguf", "lm_eval", "cai_utils"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def write_manifest(data_path: str | Path, **fields) -> Path:
    """Write the manifest beside a data file: the fields given plus time and versions."""
    manifest = {
        "file": Path(data_path).name,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "versions": package_versions(),
        **fields,
    }
    return write_json_atomic(manifest_path(data_path), manifest)


def read_manifest(data_path: str | Path) -> dict | None:
    path = manifest_path(data_path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def ids_digest(items: list[dict]) -> str:
    """A short fingerprint of which prompt records a stage worked on (their ids, in any order).

    >>> ids_digest([{"id": "b"}, {"id": "a"}]) == ids_digest([{"id": "a"}, {"id": "b"}])
    True
    """
    import hashlib

    return hashlib.sha256("\n".join(sorted(str(i["id"]) for i in items)).encode()).hexdigest()[:16]


def check_resume(out: Path, provenance: dict) -> None:
    """Refuse to append to (or keep) a file whose manifest records other provenance
    (constitution, models, settings): one line saying which, and what to do. A setting the
    manifest does not record (a file made before it was recorded) counts as the same."""
    manifest = read_manifest(out)
    if not Path(out).exists() or manifest is None:
        return
    for key, value in provenance.items():
        if key in manifest and manifest[key] != value:
            raise DataError(f"{out}: was made with a different {key} ({manifest[key]!r}, not "
                            f"{value!r}); use a new --out or delete the file")

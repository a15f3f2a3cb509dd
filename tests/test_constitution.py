import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cai_utils import constitution as cons
from cai_utils.constitution_diff import diff
from cai_utils.constitution import ConstitutionError

SHIPPED = sorted(Path(__file__).resolve().parents[1].glob("constitutions/*.yaml"))
GENERAL = next(p for p in SHIPPED if p.stem == "harmless-general")  # SHIPPED is sorted by name

VALID = {
    "name": "tiny",
    "version": "1.0.0",
    "description": "A test constitution.",
    "principles": [
        {"id": "a", "critique": "Critique A.", "revision": "Revise A.", "preference": "Which A?"},
        {"id": "b", "category": "harm", "critique": "Critique B.", "revision": "Revise B.",
         "preference": "Which B?"},
    ],
    "few_shot": [{"prompt": "p", "response": "r", "principle": "a", "critique": "c",
                  "revision": "v"}],
}


def variant(**changes):
    data = yaml.safe_load(yaml.safe_dump(VALID))
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False).encode()


def principle(**changes):
    item = dict(VALID["principles"][0])
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


# (case, file bytes or None for a missing file, the problem line after "FILE")
BAD = [
    ("missing file", None, ": no such file"),
    ("empty file", b"  \n", ": empty file"),
    ("not utf-8", b"name: caf\xe9\n", ": not UTF-8 (bad byte at offset 9)"),
    ("yaml syntax", b"name: x\nprinciples: [a, b\n", ":3:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"),
    ("top level list", b"- a\n- b\n", ": top level must be a mapping, got list"),
    ("missing field", variant(description=None), ": description: missing required field"),
    ("empty field", variant(description="  "), ": description: must not be empty"),
    ("wrong type", variant(principles=[principle(critique=["x"])]),
     ": principles[0].critique: must be a string, got list"),
    ("unquoted version", variant(version=1.0), ": version: must be a string, got float (quote it)"),
    ("bad version", variant(version="v1"), ": version: must look like 1.0.0, got 'v1'"),
    ("bad slug", variant(name="My Constitution"), ": name: must be a lowercase slug"),
    ("duplicate id", variant(principles=[principle(), principle()]),
     ": principles[1].id: duplicate principle id 'a' (first used at principles[0])"),
    ("missing principle field", variant(principles=[principle(preference=None)]),
     ": principles[0].preference: missing required field"),
    ("unknown few-shot principle",
     variant(few_shot=[dict(VALID["few_shot"][0], principle="zzz")]),
     ": few_shot[0].principle: unknown principle 'zzz'"),
    ("unknown key", variant(author="me"), ": author: unknown key (put extra keys under 'meta')"),
    ("unknown principle key", variant(principles=[principle(weight=2)]),
     ": principles[0].weight: unknown key"),
    ("no principles", variant(principles=[]), ": principles: no principles at all"),
    ("principles not a list", variant(principles="a"), ": principles: must be a list, got str"),
]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_constitutions_validate(path):
    constitution = cons.load(path)
    assert constitution.principles
    assert len(constitution.hash) == 64


def test_shipped_sizes():
    sizes = {p.stem: len(cons.load(p).principles) for p in SHIPPED}
    assert sizes == {"harmless-general": 16, "telehealth": 5, "hhh-minimal": 3, "customer-service": 7}
    categories = {p.category for p in cons.load(GENERAL).principles}
    assert {"weapons", "manipulation", "privacy", "illegal", "self-harm", "honesty"} <= categories


@pytest.mark.parametrize("case,content,expected", BAD, ids=[b[0] for b in BAD])
def test_each_error_class_is_one_line_in_python(tmp_path, case, content, expected):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConstitutionError) as info:
        cons.load(path)
    assert str(info.value).startswith(f"{path}{expected}")
    assert len(info.value.problems) == 1


@pytest.mark.parametrize("case,content,expected", BAD[:6] + BAD[11:13], ids=[b[0] for b in BAD[:6] + BAD[11:13]])
def test_cli_validate_exits_2_with_the_same_line(tmp_path, case, content, expected):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_bytes(content)
    run = subprocess.run([sys.executable, "-m", "cai_utils", "validate", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().startswith(f"{path}{expected}")
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_cli_validate_shipped_exits_0():
    run = subprocess.run([sys.executable, "-m", "cai_utils", "validate", *map(str, SHIPPED)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("ok  ") == len(SHIPPED)
    assert "harmless-general 1.0.0: 16 principles" in run.stdout


def test_all_problems_reported_together(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(variant(description=None, author="me", version="x"))
    with pytest.raises(ConstitutionError) as info:
        cons.load(path)
    assert len(info.value.problems) == 3


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_round_trip_keeps_the_hash(tmp_path, path):
    original = cons.load(path)
    again = cons.load(original.save(tmp_path / "copy.yaml"))
    assert again == original and again.hash == original.hash


def test_hash_ignores_formatting_but_not_content(tmp_path):
    a = cons.from_dict(yaml.safe_load(variant()))
    reformatted = tmp_path / "r.yaml"
    reformatted.write_text(yaml.safe_dump(yaml.safe_load(variant()), default_flow_style=True))
    assert cons.load(reformatted).hash == a.hash
    edited = cons.from_dict(yaml.safe_load(variant(description="Changed.")))
    assert edited.hash != a.hash


def test_sampling_is_reproducible_and_covers_principles():
    c = cons.load(GENERAL)
    first = [c.sample_principle(f"item-{i}", seed=1).id for i in range(200)]
    assert first == [c.sample_principle(f"item-{i}", seed=1).id for i in range(200)]
    assert first != [c.sample_principle(f"item-{i}", seed=2).id for i in range(200)]
    assert len(set(first)) == len(c.principles)


def test_diff_lists_added_removed_changed_and_bump():
    old = cons.from_dict(yaml.safe_load(variant()))
    data = yaml.safe_load(variant(version="1.1.0"))
    data["principles"][0]["critique"] = "Sharper critique A."
    data["principles"].pop(1)
    data["principles"].append(principle(id="c"))
    new = cons.from_dict(data)
    d = diff(old, new)
    assert d.added == ("c",) and d.removed == ("b",)
    assert d.changed == {"a": {"critique": ("Critique A.", "Sharper critique A.")}}
    assert d.version_bumped
    text = str(d)
    assert "+ principle c" in text and "- principle b" in text and "~ principle a" in text
    assert "not bumped" not in text


def test_diff_warns_when_version_not_bumped():
    old = cons.from_dict(yaml.safe_load(variant()))
    new = cons.from_dict(yaml.safe_load(variant(description="Other.")))
    assert "! content changed but the version was not bumped" in str(diff(old, new))
    assert str(diff(old, old)).endswith("no changes")


def test_cli_diff(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_bytes(variant())
    b.write_bytes(variant(version="2.0.0", principles=[principle()]))
    run = subprocess.run([sys.executable, "-m", "cai_utils", "diff", str(a), str(b)],
                         capture_output=True, text=True)
    assert run.returncode == 0
    assert "tiny 1.0.0 -> tiny 2.0.0" in run.stdout and "- principle b" in run.stdout


def test_edit_is_validated_and_versioned():
    c = cons.from_dict(yaml.safe_load(variant()))
    edited = c.edit("a", version=cons.bump_version(c.version), critique="Sharper.")
    assert edited.principle("a").critique == "Sharper." and edited.version == "1.1.0"
    assert c.principle("a").critique == "Critique A."  # the original is untouched (frozen)
    with pytest.raises(ConstitutionError, match="principles\\[0\\].critique: must not be empty"):
        c.edit("a", critique=" ")
    with pytest.raises(KeyError):
        c.edit("zzz", critique="x")


# --- The editor of notebook 01 (cai_utils.editor) ----------------------------------------------

def editor_on(tmp_path, **changes):
    from cai_utils.editor import ConstitutionEditor

    source = tmp_path / "tiny.yaml"
    source.write_bytes(variant(**changes))
    return ConstitutionEditor(source, tmp_path / "out", principle="a")


def test_editor_edits_and_saves_nothing_until_asked(tmp_path):
    # The old notebook cell applied a default edit and saved it as soon as it ran, in live use too.
    editor = editor_on(tmp_path)
    assert editor.path is None and not (tmp_path / "out").exists()
    assert editor.current == editor.original
    assert {f: box.value for f, box in editor.boxes.items()} == {
        "critique": "Critique A.", "revision": "Revise A.", "preference": "Which A?"}
    assert editor.save() is None and not (tmp_path / "out").exists()  # nothing changed yet
    assert "nothing to save" in editor.status.value


def test_editor_bumps_from_the_files_version_then_from_each_save(tmp_path):
    # The old cell bumped from the shipped file every time: each save was 1.1.0, overwritten.
    editor = editor_on(tmp_path, version="2.3.0")
    editor.boxes["critique"].value = "Sharper A."
    assert "valid</b>: tiny 2.4.0" in editor.status.value
    editor.button.click()  # the button's own path
    first = cons.load(tmp_path / "out" / "tiny-2.4.0.yaml")
    assert editor.path == tmp_path / "out" / "tiny-2.4.0.yaml" and first.version == "2.4.0"
    assert first.principle("a").critique == "Sharper A." and "saved to" in editor.status.value
    second_path = editor.apply("b", revision="Revise B, gently.")
    second = cons.load(second_path)
    assert second_path.name == "tiny-2.5.0.yaml" and second.version == "2.5.0"
    assert second.principle("a").critique == "Sharper A."  # the first edit is kept
    assert second.principle("b").revision == "Revise B, gently."
    assert cons.load(tmp_path / "out" / "tiny-2.4.0.yaml") == first  # not overwritten
    editor.pick.value = "a"
    assert editor.boxes["critique"].value == "Sharper A."  # shows the saved texts


def test_editor_never_overwrites_an_earlier_sessions_file(tmp_path):
    earlier = editor_on(tmp_path)
    earlier.apply("a", critique="Yesterday's edit.")
    today = editor_on(tmp_path)  # a new session, from the same file
    assert today.apply("a", critique="Today's edit.").name == "tiny-1.2.0.yaml"
    assert cons.load(tmp_path / "out" / "tiny-1.1.0.yaml").principle("a").critique == (
        "Yesterday's edit.")
    again = editor_on(tmp_path)  # the same edit again (a rerun in CI) reuses its version
    assert again.apply("a", critique="Yesterday's edit.").name == "tiny-1.1.0.yaml"


def test_editor_writes_nothing_for_an_invalid_edit(tmp_path):
    editor = editor_on(tmp_path)
    editor.boxes["preference"].value = "   "
    assert "invalid" in editor.status.value and "principles[0].preference" in editor.status.value
    assert editor.save() is None and not (tmp_path / "out").exists()

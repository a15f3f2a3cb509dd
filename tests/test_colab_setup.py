"""The Colab setup: one repository address everywhere, and an install that adds only what Colab
lacks and asks for a restart only when the running kernel needs one."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from cai_utils import colab_setup as cs
from cai_utils.data import project_root

ROOT = project_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            found[cs.normalise(m.group(1))] = m.group(2)
    return found


def setup_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return next("".join(c["source"]) for c in cells
                if c["cell_type"] == "code" and "google.colab" in "".join(c["source"]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_opens_and_clones_the_one_repository(path):
    text = path.read_text()
    badges = re.findall(r"https://colab\.research\.google\.com/github/[^\s)\"\\]+", text)
    assert badges and set(badges) == {cs.colab_url(path.name)}
    cell = setup_cell(path)
    assert cs.clone_line() in cell
    assert f'os.path.isdir("{cs.checkout_dir()}")' in cell and f"%cd {cs.checkout_dir()}" in cell
    assert '%run cai_utils/colab_setup.py {"--drive" if KEEP_RUNS_ON_DRIVE else ""}' in cell
    assert "KEEP_RUNS_ON_DRIVE = False" in cell and "pip install" not in cell


def test_the_package_metadata_names_the_same_repository():
    import tomllib

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"] == cs.CAI_REPO


def test_the_readme_badges_open_the_same_notebooks():
    badges = re.findall(r"https://colab\.research\.google\.com/github/[^\s)]+", (ROOT / "README.md").read_text())
    assert sorted(badges) == sorted(cs.colab_url(p.name) for p in NOTEBOOKS)


def test_stamp_moves_every_address_to_a_release_and_back(tmp_path):
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("images"))
    files = lambda: [tmp_path / "README.md", tmp_path / "pyproject.toml", *(tmp_path / "notebooks").glob("*.ipynb")]  # noqa: E731
    before = {p.name: p.read_text() for p in files()}
    changed = cs.stamp(tmp_path, "https://github.com/someone/cai-fork", "v1.0.0")
    assert len(changed) == len(before)
    for path in changed:
        text = path.read_text()
        assert "cai-course/constitutional-ai" not in text and "/content/constitutional-ai" not in text
        assert ("github/someone/cai-fork/blob/v1.0.0/notebooks/" in text
                or 'Repository = "https://github.com/someone/cai-fork"' in text)
    nb = tmp_path / "notebooks" / NOTEBOOKS[0].name
    assert "--branch v1.0.0 https://github.com/someone/cai-fork /content/cai-fork" in setup_cell(nb)
    cs.stamp(tmp_path)
    assert {p.name: p.read_text() for p in files()} == before


def test_colab_requirements_pin_what_colab_lacks_at_the_course_versions():
    colab, full = pins(ROOT / "requirements-colab.txt"), pins(ROOT / "requirements.txt")
    assert colab and all(full.get(name) == version for name, version in colab.items()), (colab, full)
    assert not set(colab) & {cs.normalise(n) for n in cs.COLAB_OWN}
    for need in ("transformers", "trl", "peft", "bitsandbytes", "gguf", "lm-eval"):
        assert need in colab
    makefile = (ROOT / "Makefile").read_text()
    assert all(f"--no-deps {pin}" in makefile for pin in cs.NO_DEPS)


def test_a_restart_is_asked_for_only_when_an_imported_package_changed():
    assert cs.restart_needed({"numpy": "2.0.0", "pytest": "9.2.0"}, {"numpy": "2.0.0", "pytest": "9.2.0"}) == []
    assert cs.restart_needed({"numpy": "2.0.0"}, {"numpy": "2.3.1"}) == ["numpy 2.0.0 -> 2.3.1"]
    found = cs.imported_distributions({"pytest": None, "_pytest.python": None, "not_a_module_here": None})
    assert found == {"pytest": pytest.__version__}


def test_install_holds_torch_installs_editable_and_reports_changed_imports(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cs, "_pip", lambda *args: calls.append(args))
    (tmp_path / "requirements-colab.txt").write_text("trl==1.12.0\n")
    monkeypatch.setattr(cs, "imported_distributions", lambda: {"pytest": pytest.__version__})
    assert cs.install(tmp_path) == []
    held = (tmp_path / ".colab-constraints.txt").read_text()
    assert held == f"torch=={cs.md.version('torch')}\n"  # Colab's torch may not be replaced
    assert calls[0][:2] == ("-r", str(tmp_path / "requirements-colab.txt")) and calls[0][2:] == ("-c", str(tmp_path / ".colab-constraints.txt"))
    assert calls[1] == ("--no-deps", *cs.NO_DEPS) and calls[2] == ("--no-deps", "-e", str(tmp_path))
    assert str(tmp_path) in sys.path
    sys.path.remove(str(tmp_path))
    monkeypatch.setattr(cs, "imported_distributions", lambda: {"pytest": "0.1"})
    assert cs.install(tmp_path) == [f"pytest 0.1 -> {pytest.__version__}"]
    sys.path.remove(str(tmp_path))


def test_run_outside_the_checkout_is_one_line_and_installs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cs, "_pip", lambda *a: pytest.fail("installed outside the checkout"))
    assert cs.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run it from the course's checkout" in err


def test_drive_keeps_the_runs_and_the_notebooks_read_them_from_there(tmp_path, monkeypatch):
    from cai_utils import workspace

    mounted = []
    folder = cs.keep_runs_on_drive(mount=mounted.append, folder=str(tmp_path / "MyDrive" / "cai-runs"))
    assert mounted == ["/content/drive"] and Path(folder).is_dir()
    assert workspace.runs_root() == Path(folder)  # what every notebook's run folders hang from


def test_colab_gets_its_custom_widget_manager(monkeypatch):
    import types

    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("on"))
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert cs.enable_widgets() and calls == ["on"]
    monkeypatch.setitem(sys.modules, "google.colab", None)  # not on Colab: an ImportError
    assert cs.enable_widgets() is False

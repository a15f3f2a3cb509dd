"""Every notebook follows the course skeleton; nbval runs them (see the Makefile)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cai_utils.colab_setup import colab_url

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell):
    return "".join(cell["source"])


def test_notebooks_are_numbered_in_order():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers and numbers == list(range(len(numbers)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_starts_with_title_and_a_colab_badge_to_itself(path):
    first = cells(path)[0]
    assert first["cell_type"] == "markdown" and source(first).startswith("# ")
    links = re.findall(r"https://colab\.research\.google\.com/github/([^)\s]+)", source(first))
    assert ["https://colab.research.google.com/github/" + link for link in links] == [colab_url(path.name)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_installs_only_on_colab(path):
    setup = next(c for c in cells(path) if c["cell_type"] == "code")
    lines = source(setup).splitlines()
    guard = lines.index('if "google.colab" in sys.modules:')
    installs = [i for i, line in enumerate(lines) if line.lstrip().startswith(("!", "%"))]
    assert installs, "the setup cell should install the course on Colab"
    assert all(i > guard and lines[i].startswith("    ") for i in installs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_with_a_kernelspec(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_has_assertions_and_exercises(path):
    code = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")
    assert "assert " in code
    assert "## Exercises" in source(cells(path)[-1])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_links_the_notebook(path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert colab_url(path.name) in readme


@pytest.mark.slow
@pytest.mark.e2e
def test_a_cell_that_prints_a_lot_ends_cleanly_under_nbval(tmp_path, root):
    """A cell's output is read while it runs (tests/nbval_output.py), so the kernel's end-of-cell
    message is not dropped from a full queue; without the plugin this cell fails with "Timeout of
    5 seconds exceeded waiting for output" (notebook 07 did so in CI)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("for i in range(100_000):\n    print(i, flush=True)"),
                nbformat.v4.new_code_cell("assert i == 99_999")]
    nbformat.write(nb, tmp_path / "loud.ipynb")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.nbval_output", "-p", "no:cacheprovider",
         "--nbval-lax", "--nbval-current-env", "--rootdir", str(tmp_path), str(tmp_path / "loud.ipynb")],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "2 passed" in run.stdout


MAP_TITLE = "Where this notebook sits"
STAGE_NOTEBOOKS = [p for p in NOTEBOOKS if not p.name.startswith("00")]  # 00 has the full diagram


def modules_used(path):
    """The cai_utils modules a notebook's code imports or reaches through ``cai.NAME``."""
    import cai_utils

    code = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "code")
    used = set(re.findall(r"\bcai_utils\.(\w+)", code))
    for names in re.findall(r"from cai_utils import ([\w ,]+)", code):
        used |= {name.split(" as ")[0].strip() for name in names.split(",")}
    used |= {cai_utils._WHERE.get(name, name) for name in re.findall(r"\bcai\.(\w+)", code)}
    return used


@pytest.mark.parametrize("path", STAGE_NOTEBOOKS, ids=lambda p: p.name)
def test_has_a_map_cell_with_itself_in_bold_and_real_modules(path):
    maps = [source(c) for c in cells(path)
            if c["cell_type"] == "markdown" and MAP_TITLE in source(c)]
    assert maps, f"{path.name} has no markdown cell titled {MAP_TITLE!r}"
    text = maps[0]
    assert f"**{path.name[:2]}" in text, "the notebook's own box should be in bold"
    assert all(f"{p.name[:2]} " in text for p in STAGE_NOTEBOOKS), "the map shows every stage"
    listed = {a or b for a, b in re.findall(r"\bcai_utils\.(\w+)|\b(\w+)\.py\b", text)}
    assert listed, "the map names no cai_utils module"
    missing = sorted(m for m in listed if not (ROOT / "cai_utils" / f"{m}.py").is_file())
    assert not missing, f"no such cai_utils module: {missing}"
    assert listed <= modules_used(path), "the map lists a module the notebook does not use"


def markdown_cells(path):
    return [(i, source(c)) for i, c in enumerate(cells(path)) if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ends_with_further_reading_that_cites_bai_et_al(path):
    reading = [text for _, text in markdown_cells(path) if text.startswith("## Further reading")]
    assert reading, f"{path.name} has no markdown cell titled 'Further reading'"
    assert re.search(r"Bai et al\.\W{0,4}2022", reading[0]), "Further reading should cite Bai et al. (2022)"


# 01 sets two papers beside the course ("What the papers report"), the others one
PAPER_VS_MEASURED = re.compile(r"## What the (paper reports|papers report) vs what you")


@pytest.mark.parametrize("path", STAGE_NOTEBOOKS, ids=lambda p: p.name)
def test_sets_the_paper_beside_what_you_measure(path):
    assert any(PAPER_VS_MEASURED.match(text) for _, text in markdown_cells(path)), \
        f"{path.name} has no 'What the paper reports vs what you measure' cell"


CODE_BLOCK = re.compile(r"^[ \t]*(`{3,}|~{3,}).*?(?:^[ \t]*\1[ \t]*$|\Z)", re.M | re.S)
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
DOLLAR = re.compile(r"(?<!\\)\$")  # an escaped \$ is a literal dollar sign


def maths_problems(text: str) -> list[str]:
    """What is wrong with the $-delimited maths of one markdown cell, ignoring `code`."""
    text = CODE_SPAN.sub("", CODE_BLOCK.sub("", text))
    if text.count("$$") % 2:
        return ["an unclosed $$"]
    # a $ inside $$...$$ (e.g. \text{$n$-grams}) ends the display early in some renderers
    problems = [f"a $ inside $$...$$: {block[:50]!r}"
                for block in re.findall(r"\$\$(.*?)\$\$", text, re.S) if DOLLAR.search(block)]
    if len(DOLLAR.findall(text.replace("$$", ""))) % 2:
        problems.append("an odd number of single $")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_maths_is_balanced(path):
    problems = {i: found for i, text in markdown_cells(path) if (found := maths_problems(text))}
    assert not problems, f"{path.name}, markdown cell: problems {problems}"

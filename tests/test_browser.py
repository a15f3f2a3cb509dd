"""End to end in a real browser (issue 19): JupyterLab on localhost, driven by Playwright.

Notebook 01's constitution editor is run and used as a person would (pick a principle, type a
new critique request, click Save); the saved file must load, carry the edit and be one minor
version above the edited file's own version. Every notebook must open in JupyterLab without an
error dialog or a widget error. JupyterLab serves copies of the notebooks, constitutions and data
in a temporary folder (``CAI_ROOT`` points there), so nothing is written into the checkout except
the screenshot ``notebooks/images/editor.png``.

Chromium is the system's (Debian package ``chromium``; ``CAI_CHROMIUM`` names another), never a
Playwright download. Without Playwright or a Chromium the whole module skips with one line.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cai_utils import constitution as cons
from cai_utils.constitution_diff import diff

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EDITOR_NOTEBOOK = "01_writing_a_constitution.ipynb"
SCREENSHOT = ROOT / "notebooks" / "images" / "editor.png"
# The copy's harmless-general is set to this version, so that a save which does not bump from
# the file's own version (say, always writes 1.1.0) is caught.
COPY_VERSION = "1.3.0"
TARGET = "no-stalking"  # the principle edited (another one if it is the one shown first)
NEW_CRITIQUE = ("Point out each place where the reply helps someone find, follow, track or "
                "watch a specific person without their consent, online or offline.")
SERVER_START_S = 120  # JupyterLab's start on a busy 2-core machine
KERNEL_S = 180  # running notebook 01 up to the editor, kernel start included
STEP_MS = 60_000  # one round trip browser -> kernel -> browser
PAGE_ERRORS: dict = {}  # page -> what went wrong in it


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CAI_CHROMIUM"), "chromium", "chromium-browser",
                      "google-chrome", "google-chrome-stable"):
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    return None


try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    pytest.skip("browser test skipped: Playwright for Python is not installed (make test adds "
                "it)", allow_module_level=True)
CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip("browser test skipped: no Chromium executable found (apt-get install chromium, "
                "or set CAI_CHROMIUM to a Chrome/Chromium binary)", allow_module_level=True)


# --- JupyterLab on a copy of the course ----------------------------------------------------------

def _get(url: str, method: str = "GET"):
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _lab_settings(folder: Path) -> None:
    """User settings for a quiet, deterministic lab: no news or update checks (no toasts),
    every cell attached to the page (no windowing), no autosave into the copies."""
    settings = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    }
    for name, value in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def _kernel_pids(runtime: Path) -> list[int]:
    """Processes whose command line names a connection file in this server's runtime folder."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(runtime) in cmdline:
                pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of notebooks/, constitutions/ and data/; yields its base URL
    and the copy's root. The server, its kernels and nothing else are stopped at the end."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "course"
    for name in ("notebooks", "constitutions", "data"):
        shutil.copytree(ROOT / name, root / name,
                        ignore=shutil.ignore_patterns("images", ".ipynb_checkpoints"))
    general = root / "constitutions" / "harmless-general.yaml"
    text, n = re.subn(r"(?m)^version: .*$", f"version: {COPY_VERSION}", general.read_text())
    assert n == 1
    general.write_text(text)
    assert cons.load(general).version == COPY_VERSION

    runtime, settings = base / "runtime", base / "settings"
    _lab_settings(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        CAI_ROOT=str(root),  # cai_utils.data.project_root() in the kernels: the copy
        HF_HUB_OFFLINE="1", TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false",
        JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        IPYTHONDIR=str(base / "ipython"), MPLCONFIGDIR=str(base / "matplotlib"),
    )
    log = (base / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",  # a free port, read back below
         "--IdentityProvider.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class="
         "jupyterlab.handlers.announcements.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url, deadline = None, time.monotonic() + SERVER_START_S
        while url is None:
            assert server.poll() is None, (
                f"JupyterLab exited ({server.returncode}):\n"
                f"{(base / 'jupyterlab.log').read_text()[-3000:]}")
            assert time.monotonic() < deadline, (
                f"JupyterLab did not start in {SERVER_START_S} s:\n"
                f"{(base / 'jupyterlab.log').read_text()[-3000:]}")
            for info in runtime.glob("jpserver-*.json"):
                data = json.loads(info.read_text() or "{}")
                if data.get("pid") == server.pid:
                    url = data["url"].rstrip("/")
            time.sleep(0.5)
        while True:  # the API answers
            try:
                _get(f"{url}/api/status")
                break
            except OSError:
                assert time.monotonic() < deadline, "JupyterLab's API did not answer"
                time.sleep(0.5)
        yield {"url": url, "root": root, "log": base / "jupyterlab.log"}
    finally:
        try:
            for kernel in _get(f"{url}/api/kernels") if url else []:
                _get(f"{url}/api/kernels/{kernel['id']}", method="DELETE")
        except OSError:
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        for pid in _kernel_pids(runtime):  # kernels the server failed to stop (own sessions)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu",
                                           "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(STEP_MS)
    expect.set_options(timeout=STEP_MS)
    page = context.new_page()
    errors = []  # uncaught exceptions in the page, and console errors about widgets
    page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}")
            if msg.type == "error" and "widget" in msg.text.lower() else None)
    PAGE_ERRORS[page] = errors
    try:
        yield page
    finally:
        try:  # the page as it was at the end (pass or fail), for a look afterwards
            page.screenshot(path=tmp_path / "page-at-end.png", timeout=10_000)
        except Exception:  # noqa: BLE001 - a screenshot is only an aid
            pass
        PAGE_ERRORS.pop(page, None)
        context.close()


def open_notebook(page, lab, name: str):
    page.goto(f"{lab['url']}/lab/tree/notebooks/{name}?reset", wait_until="domcontentloaded")
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    panel.locator(".jp-Cell").first.or_(page.locator(".jp-Dialog")).first.wait_for()
    assert_no_errors(page, panel)  # say, a load error instead of the notebook
    cells = json.loads((lab["root"] / "notebooks" / name).read_text())["cells"]
    expect(panel.locator(".jp-Notebook .jp-Cell")).to_have_count(len(cells))
    return panel, cells


def assert_no_errors(page, panel):
    """No dialog, no error toast, no widget error, no exception in the page."""
    dialogs = page.locator(".jp-Dialog")
    assert dialogs.count() == 0, f"a dialog is open: {dialogs.first.inner_text()}"
    toasts = page.locator(".Toastify__toast--error")
    assert toasts.count() == 0, f"an error notification: {toasts.first.inner_text()}"
    widget_errors = panel.get_by_text(re.compile("Error displaying widget|Error rendering"))
    assert widget_errors.count() == 0, widget_errors.first.inner_text()
    assert not PAGE_ERRORS[page], "\n".join(PAGE_ERRORS[page])


def kernel_idle(page):
    """The status bar's kernel item, once the notebook's kernel is up and idle."""
    return page.locator("#jp-main-statusbar").get_by_text("| Idle")


def session_ids(lab, name: str) -> list[str]:
    return [s["id"] for s in _get(f"{lab['url']}/api/sessions") if s["path"].endswith(name)]


# --- The tests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_notebook_opens_without_errors(lab, page, name, tmp_path):
    panel, cells = open_notebook(page, lab, name)
    title = "".join(cells[0]["source"]).splitlines()[0].lstrip("# ").strip()
    expect(panel.locator(".jp-Cell").first.locator("h1")).to_contain_text(title)
    # Its kernel started, or a dialog opened instead.
    kernel_idle(page).or_(page.locator(".jp-Dialog")).first.wait_for(timeout=KERNEL_S * 1000)
    page.wait_for_timeout(500)  # a late notification or widget error has time to show
    page.screenshot(path=tmp_path / name.replace(".ipynb", ".png"))
    assert_no_errors(page, panel)
    for session in session_ids(lab, name):  # no kernel left running for an unrun notebook
        _get(f"{lab['url']}/api/sessions/{session}", method="DELETE")


def test_constitution_editor_saves_an_edited_version(lab, page, tmp_path):
    before_repo = {p.name: p.read_bytes() for p in (ROOT / "constitutions").iterdir()}
    original = cons.load(lab["root"] / "constitutions" / "harmless-general.yaml")
    panel, cells = open_notebook(page, lab, EDITOR_NOTEBOOK)
    editor_cells = [i for i, c in enumerate(cells) if c["cell_type"] == "code"
                    and re.search(r"ipywidgets|ConstitutionEditor", "".join(c["source"]))]
    assert editor_cells, f"no editor cell (ipywidgets or ConstitutionEditor) in {EDITOR_NOTEBOOK}"
    editor_index = editor_cells[0]

    # Run every cell up to the editor's, as a person would: select the cell after the editor,
    # then Run > Run All Above Selected Cell.
    kernel_idle(page).wait_for(timeout=KERNEL_S * 1000)
    all_cells = panel.locator(".jp-Notebook .jp-Cell")
    after = all_cells.nth(editor_index + 1)
    after.scroll_into_view_if_needed()
    after.locator(".jp-InputArea-prompt").click()
    expect(after).to_have_class(re.compile(r"\bjp-mod-active\b"))
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item", has_text="Run All Above Selected Cell").click()
    editor_cell = all_cells.nth(editor_index)
    ran = editor_cell.locator(".jp-InputArea-prompt", has_text=re.compile(r"\[\d+\]"))
    errors = panel.locator(".jp-OutputArea-output").filter(
        has_text="Traceback (most recent call last)")  # JupyterLab shows errors as stderr
    ran.or_(errors).first.wait_for(timeout=KERNEL_S * 1000)  # done, or a cell raised
    assert errors.count() == 0, f"a cell raised:\n{errors.first.inner_text()}"
    for i, cell in enumerate(cells[:editor_index + 1]):  # every one of them ran
        if cell["cell_type"] == "code":
            expect(all_cells.nth(i).locator(".jp-InputArea-prompt")).to_have_text(
                re.compile(r"\[\d+\]"))
    editor = editor_cell.locator(".widget-vbox").first
    expect(editor).to_be_visible()
    assert_no_errors(page, panel)
    editor.scroll_into_view_if_needed()
    editor.screenshot(path=tmp_path / "editor-before.png")

    # Pick another principle than the one shown, wait for its texts, type a new critique.
    select = editor.locator(".widget-dropdown select")
    shown = select.input_value()
    ids = [p.id for p in original.principles if p.id != shown]
    target = original.principle(TARGET if TARGET in ids else ids[0])
    select.select_option(target.id)
    box = editor.locator(".widget-textarea", has=page.locator("label", has_text="critique"))
    critique = box.locator("textarea")
    expect(critique).to_have_value(target.critique)
    critique.fill(NEW_CRITIQUE)
    expected = original.edit(target.id, version=cons.bump_version(original.version),
                             critique=NEW_CRITIQUE)
    status = editor.locator(".widget-html")
    expect(status).to_contain_text(f"valid: {expected.summary()}")  # the kernel has the edit
    page.mouse.click(5, 5)  # no focus ring or caret in the picture
    editor.screenshot(path=tmp_path / "editor-edited.png", animations="disabled")
    if os.environ.get("CAI_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():  # the README's picture
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "editor-edited.png", SCREENSHOT)

    editor.get_by_role("button", name="Save new version").click()
    expect(status).to_contain_text("saved to")
    editor.screenshot(path=tmp_path / "editor-saved.png", animations="disabled")
    assert_no_errors(page, panel)

    saved_path = Path(re.search(r"saved to (\S+\.yaml)", status.inner_text()).group(1))
    assert saved_path.is_relative_to(lab["root"]), f"saved outside the copy: {saved_path}"
    saved = cons.load(saved_path)  # validates
    assert saved.principle(target.id).critique == NEW_CRITIQUE, "the saved file lacks the edit"
    assert saved.version == cons.bump_version(original.version) == expected.version, (
        f"saved version {saved.version}, expected {expected.version}: one minor bump from the "
        f"edited file's own {original.version}")
    d = diff(original, saved)
    assert d.changed == {target.id: {"critique": (target.critique, NEW_CRITIQUE)}}, str(d)
    assert not (d.added or d.removed or d.other), str(d)
    assert saved.hash == expected.hash
    assert {p.name: p.read_bytes() for p in (ROOT / "constitutions").iterdir()} == before_repo

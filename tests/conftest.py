import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CAI_PROFILE", "ci")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# huggingface_hub reads HF_HUB_OFFLINE once, when first imported: import it now, so a test that
# changes the variable first (the hub-reachability tests do) cannot make every later lookup in its
# process try the network (each then waited ~45 s for a connection that never comes)
import huggingface_hub.constants  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _own_runs_folder(tmp_path_factory, monkeypatch):
    """Each test writes its workspace state (the constitution notebook 01 chose, ...) in a folder
    of its own, never in the checkout's runs/, and ignores the learner's choices."""
    monkeypatch.setenv("CAI_RUNS", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.delenv("CAI_CONSTITUTION", raising=False)
    monkeypatch.delenv("CAI_GENERATION_SERVER", raising=False)


@pytest.fixture(autouse=True)
def _no_model_unless_slow(request, monkeypatch):
    """A test that loads a model is marked ``slow`` (``make test-fast`` leaves those out): a test
    without the mark that reaches the model loader fails here, naming the mark."""
    if request.node.get_closest_marker("slow") or "default_model" in request.fixturenames:
        return
    from cai_utils import models

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} loads a model: mark it @pytest.mark.slow")

    monkeypatch.setattr(models, "load_model", refuse)


def pytest_collection_modifyitems(items):
    """Tests that use a model fixture are slow: the fixture loads or trains."""
    for item in items:
        if set(getattr(item, "fixturenames", ())) & MODEL_FIXTURES:
            item.add_marker(pytest.mark.slow)


MODEL_FIXTURES = {"default_model", "tiny_run", "tiny_run_copy", "tiny_run_t4", "tiny_run_a100"}


@pytest.fixture(scope="session")
def default_model():
    """The offline default model, loaded once for the whole session (read-only: tests that
    train load their own copy)."""
    from cai_utils.models import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def root():
    from cai_utils.data import project_root

    return project_root()


@pytest.fixture
def trains():
    """``trains(trainer, model)``: run the trainer and assert trainable weights changed."""

    def run(trainer, model, steps=None):
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        trainer.train()
        if steps is not None:
            assert trainer.state.global_step == steps
        changed = [n for n, p in model.named_parameters() if n in before
                   and not (p.detach() == before[n]).all()]
        assert changed, "no trainable parameter changed"
        return changed

    return run


# --- Runs of the whole pipeline, made once per test session and shared --------------------------
# Each is built once, even under pytest-xdist (the first worker to ask builds it under a file
# lock; the others wait and read it). They are READ-ONLY: a test that changes a run folder works
# on ``tiny_run_copy`` (or copies it itself).

def tiny(name: str):
    """The profile ``name`` (``ci`` or a CPU stand-in of a GPU profile: the same branches) with
    the shortest training and evaluation that still runs every code path: two steps of each
    trainer, two held-out prompts per set, one capability task, and one self-critique prompt per
    file beside the course critic. A stand-in's own critic (every training prompt, over two or
    three rounds) critiques two red-team prompts, one helpful and one borderline."""
    from cai_utils.profiles import get_profile

    prof = get_profile(name).replace(
        sft={"steps": 2}, dpo={"steps": 2}, reward={"steps": 2}, ppo={"steps": 2}, grpo={"steps": 2},
        eval_prompts=2, lm_eval_limit=4, lm_eval_tasks=("cai_arithmetic",), self_critique_prompts=1)
    return prof if prof.critic == "course" else prof.replace(n_red_team=2, n_helpful=1, n_borderline=1)


CONSTITUTION = "constitutions/harmless-general.yaml"


def _shared_run(tmp_path_factory, name: str) -> tuple[Path, dict]:
    import json

    from filelock import FileLock

    from cai_utils.pipeline import run_pipeline

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by every worker of this session
    out = base / f"tiny-run-{name}"
    returned = base / f"tiny-run-{name}.state.json"
    with FileLock(str(base / f"tiny-run-{name}.building")):  # not out.lock: the run locks that itself
        if not returned.is_file():
            shutil.rmtree(out, ignore_errors=True)
            state = run_pipeline(out, profile=tiny(name), constitution=CONSTITUTION, progress=False,
                                 log=lambda _: None)
            returned.write_text(json.dumps(state))
    return out, json.loads(returned.read_text())


@pytest.fixture(scope="session", autouse=True)
def _shared_runs_first(request):
    """Under pytest-xdist the shared runs are the session's longest jobs: each worker starts by
    building one the selected tests need (gw0 the t4-cpu run, gw1 the ci run), so they are made
    side by side at the start instead of holding up the end."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    first = {"gw0": "tiny_run_t4", "gw1": "tiny_run"}.get(worker or "")
    if first and any(first in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue(first)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``(folder, state)``: every stage once under ``ci`` (course critic, rule-labelled pairs from
    stage 1, 16-bit base, SFT, DPO, reward model, PPO) and the report."""
    return _shared_run(tmp_path_factory, "ci")


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    """A copy of ``tiny_run``'s folder that the test may change."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    # the report names its models by folder: point it at the copy's, as if the run had been
    # made here (otherwise every copy's first rerun evaluates all its models again)
    for path in (out / "report").rglob("*.json*"):
        path.write_text(path.read_text().replace(str(tiny_run[0]), str(out)))
    return out


@pytest.fixture(scope="session")
def tiny_run_t4(tmp_path_factory):
    """The ``t4-cpu`` branches end to end: 4-bit base, the policy as its own critic over two
    rounds, sampled candidates labelled by the judge, LoRA on every linear layer, GRPO."""
    return _shared_run(tmp_path_factory, "t4-cpu")


@pytest.fixture(scope="session")
def tiny_run_a100(tmp_path_factory):
    """The ``a100-cpu`` branches end to end: 16-bit base, own critic over three rounds, sampled
    candidates judged on every principle, PPO. Its tests are ``e2e`` (``make test-all``): ``ci``
    covers the 16-bit base and PPO, and ``test_preferences`` judging on every principle."""
    return _shared_run(tmp_path_factory, "a100-cpu")

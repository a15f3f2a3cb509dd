import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CAI_PROFILE", "ci")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _own_runs_folder(tmp_path_factory, monkeypatch):
    """Each test writes its workspace state (the constitution notebook 01 chose, ...) in a folder
    of its own, never in the checkout's runs/, and ignores the learner's choices."""
    monkeypatch.setenv("CAI_RUNS", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.delenv("CAI_CONSTITUTION", raising=False)
    monkeypatch.delenv("CAI_GENERATION_SERVER", raising=False)


@pytest.fixture(scope="session")
def default_model():
    """The offline default model, loaded once for the whole session."""
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

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CAI_PROFILE", "ci")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def default_model():
    """The offline default model, loaded once for the whole session."""
    from cai_utils.models import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def root():
    from cai_utils.data import project_root

    return project_root()

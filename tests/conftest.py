import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_geneval() -> Path:
    p = SHARED / "geneval" / "evaluation_metadata.jsonl"
    if not p.exists():
        pytest.fail(f"real GenEval prompt file missing: {p} (shared/ must sit beside the checkout)")
    return p


@pytest.fixture(scope="module")
def one_thread():
    """Smoke-size ops: one intra-op thread is faster than two on a 2-core box and immune to OpenMP spin-waits when
    the machine is shared. Use as `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

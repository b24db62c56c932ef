import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GENEVAL_FILE = Path("geneval") / "evaluation_metadata.jsonl"


def _shared_candidates() -> list[Path]:
    """Where shared/ may be: $SANA15_SHARED, beside the checkout, or beside the local repository this checkout was
    cloned from (a `git clone <checkout> <tmp>` still finds the shared/ folder beside <checkout>)."""
    import subprocess
    out = [Path(os.environ["SANA15_SHARED"])] if os.environ.get("SANA15_SHARED") else []
    out.append(ROOT.parent / "shared")
    try:
        url = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        url = ""
    if url and "://" not in url and Path(url).is_dir():
        out.append(Path(url).resolve().parent / "shared")
    return out


@pytest.fixture(scope="session")
def shared_geneval() -> Path:
    tried = [c / GENEVAL_FILE for c in _shared_candidates()]
    for p in tried:
        if p.is_file():
            return p
    pytest.fail(f"real GenEval prompt file missing: tried {[str(p) for p in tried]} (put shared/ beside the "
                "checkout or set SANA15_SHARED)")


@pytest.fixture(scope="module")
def one_thread():
    """Smoke-size ops: one intra-op thread is faster than two on a 2-core box and immune to OpenMP spin-waits when
    the machine is shared. Use as `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

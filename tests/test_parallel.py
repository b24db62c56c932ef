"""Best-of-N generation and judging split across processes (sana_core/parallel.py): two CPU processes under torchrun
(gloo, accelerate's split_between_processes + gather_object) give exactly the images, verdicts and winners of one
process (tests/split_worker.py runs both)."""
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sana_core.parallel import map_split, num_processes, prompt_units

HERE = Path(__file__).parent


def test_prompt_units_are_whole_batches():
    for n, b in [(6, 4), (8, 64), (2048, 64), (1, 64), (5, 3)]:
        units = prompt_units(list(range(23)), n, b)
        assert [x for u in units for x in u] == list(range(23))
        assert all(len(u) * n % b == 0 for u in units[:-1])          # every block but the last = whole batches
    assert prompt_units(list(range(10)), 8, 64) == [list(range(8)), [8, 9]]
    with pytest.raises(ValueError, match="batch_size"):
        prompt_units([1], 4, 0)


def test_map_split_in_one_process_is_a_plain_map():
    assert num_processes() == 1
    assert map_split(lambda u: u * 2, [3, 1, 2]) == [6, 2, 4]


def _run(cmd, out, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd + [str(HERE / "split_worker.py"), str(out)], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return pickle.loads(out.read_bytes())


def test_two_processes_match_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun not found next to the interpreter"
    one = _run([sys.executable], tmp_path / "one.pkl", tmp_path)
    two = _run([torchrun, "--standalone", "--nproc_per_node=2"], tmp_path / "two.pkl", tmp_path)
    assert (one["processes"], two["processes"], two["world"]) == (1, 2, 2)
    # the work was split: 5 prompts × 6 candidates = 30 best-of-N images, blocks of 2 prompts → 24 + 6
    assert one["per_process"] == [30] and two["per_process"] == [24, 6]
    assert one["imgs"].shape == (5, 6, 32, 32, 3)
    assert np.array_equal(one["imgs"], two["imgs"]) and one["verdicts"] == two["verdicts"]
    assert np.array_equal(one["bon_images"], two["bon_images"])
    assert one["bon_selected"] == two["bon_selected"] and one["bon_verdicts"] == two["bon_verdicts"]

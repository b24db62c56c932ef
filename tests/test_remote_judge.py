"""The remote judge (sana_core/judges/remote.py): a judge model in its own Python environment behind the `Judge`
interface, over the JSON-lines protocol of judges/nvila_worker.py — tested with a stand-in backend served by the
worker's own `serve` loop (NVILA itself needs its weights and a transformers-4.46 environment, not available here)."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sana_core.judges import JUDGE_PROMPT, build_judge
from sana_core.judges.remote import DEFAULT_WORKER, RemoteJudge

STAND_IN = '''
import json, os, sys, time
import numpy as np
sys.path.insert(0, {worker_dir!r})
import nvila_worker as W


class StandIn:
    """p_yes = mean red level / 255 of each image; records its command line and the questions it was asked."""
    name = "stand-in"

    def __init__(self, argv):
        print("model code chatter on stdout")           # must not reach the protocol channel
        if "--fail-start" in argv:
            raise OSError("no weights here")
        if "--hang-start" in argv:
            time.sleep(120)
        self.argv = argv

    def decide(self, question, images):
        if "FAIL" in question:
            raise ValueError("asked to fail")
        if "CRASH" in question:
            os._exit(3)
        if "HANG" in question:
            time.sleep(120)
        p = [float(np.asarray(im)[..., 0].astype(np.float64).mean() / 255) for im in images]
        return {{"yes": [x >= 0.5 for x in p], "p_yes": p, "p_no": [1 - x for x in p], "argv": self.argv,
                 "question": question}}

    def flops(self, size):
        return 7 * size * size


sys.exit(W.serve(lambda: StandIn(sys.argv[1:])))
'''


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote")
    (d / "model").mkdir()
    w = d / "stand_in_worker.py"
    w.write_text(STAND_IN.format(worker_dir=str(DEFAULT_WORKER.parent)))
    return d / "model", w


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_remote_judge_matches_the_backend_and_survives_bad_requests(stand_in):
    model, worker = stand_in
    judge = build_judge({"name": "remote", "path": str(model), "python": sys.executable, "worker": str(worker),
                         "batch_size": 2})
    try:
        assert judge.backend == "stand-in"
        imgs = _images(5)
        imgs[1, ..., 0] = 255                                       # one sure "yes"
        yes, p_yes, p_no = judge.decide("a photo of a red circle", imgs)
        want = imgs[..., 0].astype(np.float64).mean(axis=(1, 2)) / 255
        assert p_yes.dtype == torch.float32 and yes.dtype == torch.bool and p_yes.shape == (5,)
        assert torch.equal(p_yes, torch.tensor(want, dtype=torch.float32))   # lossless PNG transport, chunks of 2
        assert torch.equal(p_no, torch.tensor(1 - want, dtype=torch.float32))
        assert yes.tolist() == (want >= 0.5).tolist() and bool(yes[1])
        assert judge.flops_per_image(64) == 7 * 64 * 64
        # the question is ours (JUDGE_PROMPT), the worker gets resolved placement names
        out = judge._ask({"op": "decide", "question": JUDGE_PROMPT.format(prompt="x"), "images": []})
        assert out["argv"] == ["--path", str(model), "--device", "cpu", "--dtype", "float32"]
        with pytest.raises(RuntimeError, match="asked to fail"):
            judge.decide("FAIL", imgs[:1])
        assert torch.equal(judge.score("a photo of a red circle", imgs), p_yes)   # still serving
        with pytest.raises(RuntimeError, match=r"exited \(code 3\)"):
            judge.decide("CRASH", imgs[:1])
        with pytest.raises(RuntimeError, match="not running"):
            judge.decide("a photo of a red circle", imgs[:1])
    finally:
        judge.close()


def test_remote_judge_errors_name_the_key(stand_in, tmp_path):
    model, worker = stand_in
    with pytest.raises(ValueError, match="judge.python"):
        RemoteJudge(model, python=None, worker=worker)
    with pytest.raises(FileNotFoundError, match="judge.python"):
        RemoteJudge(model, python=str(tmp_path / "nope" / "python"), worker=worker)
    with pytest.raises(FileNotFoundError, match="judge.worker"):
        RemoteJudge(model, python=sys.executable, worker=tmp_path / "nope.py")
    with pytest.raises(FileNotFoundError, match="judge.path"):
        RemoteJudge(tmp_path / "nope", python=sys.executable, worker=worker)
    with pytest.raises(ValueError, match="judge.device"):
        RemoteJudge(model, python=sys.executable, worker=worker, device="tpu")
    with pytest.raises(RuntimeError, match="failed to start: OSError: no weights here"):
        RemoteJudge(model, python=sys.executable, worker=worker, extra_args=["--fail-start"])
    # the shipped NVILA worker refuses to run remote model code unless trust_remote_code is set, before loading
    with pytest.raises(RuntimeError, match="failed to start: ValueError: judge.trust_remote_code"):
        RemoteJudge(model, python=sys.executable)


def test_params_route_the_remote_judge(stand_in, tmp_path):
    from flows import params as P
    from flows.stages._common import judge_cfg
    model, worker = stand_in
    params = P.load_profile("tiny")
    params["judge"].update(name="remote", path=str(model), python=sys.executable, worker=str(worker),
                           trust_remote_code=True)
    P.validate(params)
    cfg = judge_cfg(params, tmp_path)
    assert cfg == {"name": "remote", "path": str(model), "device": "auto", "dtype": "auto", "trust_remote_code": True,
                   "python": sys.executable, "worker": str(worker), "timeout": 600.0}
    j = build_judge(cfg)
    try:
        assert j._ask({"op": "decide", "question": "q", "images": []})["argv"][-1] == "--trust-remote-code"
    finally:
        j.close()


def test_a_hanging_worker_is_killed_after_the_timeout(stand_in):
    model, worker = stand_in
    judge = RemoteJudge(model, python=sys.executable, worker=worker, timeout=3)
    try:
        imgs = _images(2)
        assert judge.decide("a photo of a red circle", imgs)[1].shape == (2,)       # answers in time: served
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"no answer to request 'decide' within judge.timeout = 3 s; worker "
                                               r"killed"):
            judge.decide("HANG", imgs[:1])
        assert time.monotonic() - t0 < 30 and judge.proc.poll() is not None      # not the worker's 120 s sleep
        with pytest.raises(RuntimeError, match="not running"):
            judge.decide("a photo of a red circle", imgs[:1])
    finally:
        judge.close()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"no answer to start \(model load\) within judge.timeout = 2 s"):
        RemoteJudge(model, python=sys.executable, worker=worker, timeout=2, extra_args=["--hang-start"])
    assert time.monotonic() - t0 < 30
    with pytest.raises(ValueError, match="judge.timeout"):
        RemoteJudge(model, python=sys.executable, worker=worker, timeout=0)

"""Out-of-process judge worker (`judge.name: remote`, client: sana_core/judges/remote.py).

SANA-1.5's verifier, NVILA-Lite-2B-Verifier, ships its own model code (`trust_remote_code`) written for
transformers 4.46 plus packages we do not carry (its model card: `transformers==4.46`, opencv, einops, and
`scaling_on_scales` from git). Rather than pinning the whole project to that, the judge runs in its own environment,
as SANA's `tools/inference_scaling` does, and talks to the pipeline through this script:

    <env>/bin/python nvila_worker.py --path <NVILA folder> --device cuda:0 --dtype bfloat16 --trust-remote-code

This file is standalone: the standard library at import time; torch / transformers / PIL only inside the backend,
so it runs under any interpreter that has NVILA's requirements (not ours). It is also importable as a module:
`serve(backend)` runs the protocol around any object with `decide(question, images)` and `flops(image_size)`
(the tests serve a stand-in backend through it).

Protocol — JSON lines; stdout carries protocol lines only (everything else that prints, the model code included,
is redirected to stderr):
  worker → client, once:  {"ready": true, "name": <backend name>}   or {"error": "<why>"} and exit 1
  client → worker:        {"op": "decide", "question": <text turn>, "images": [<base64 PNG>, ...]}
                          → {"yes": [bool], "p_yes": [float], "p_no": [float]}
                          {"op": "flops", "image_size": <int>}  → {"flops": <int>}
                          {"op": "close"}                        → the worker exits 0
  a failing request       → {"error": "<type>: <message>"} (the worker keeps serving)

NVILA backend: the official script's reading of the verifier (nvila_sana_pick.py): `model.generate_content([image,
question])` returns the response and the per-step scores; the first step's scores at the token ids of "yes"/"no"
(`tokenizer.encode(word, add_special_tokens=False)[0]`) decide. As judges/vlm.py: p_yes / p_no = softmax of the first
step's scores at those ids, yes = the first step's argmax is "yes"; each image judged alone.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys


def decode_png(b64: str):
    from PIL import Image
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


class NVILABackend:
    name = "nvila"

    def __init__(self, path: str, device: str, dtype: str, trust_remote_code: bool):
        if not trust_remote_code:
            raise ValueError("judge.trust_remote_code: NVILA's model code is remote code; set it to true to run it")
        import torch
        from transformers import AutoModel
        self.torch = torch
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True, torch_dtype=getattr(torch, dtype))
        self.model = self.model.to(device).eval()
        tok = self.model.tokenizer
        self.yes_id = tok.encode("yes", add_special_tokens=False)[0]
        self.no_id = tok.encode("no", add_special_tokens=False)[0]

    def decide(self, question: str, images: list) -> dict:
        out = {"yes": [], "p_yes": [], "p_no": []}
        with self.torch.no_grad():
            for im in images:
                _, scores = self.model.generate_content([im, question])
                s = scores[0][0].float()                     # first generated step, [vocab]
                p = self.torch.softmax(s, -1)
                out["yes"].append(int(s.argmax()) == self.yes_id)
                out["p_yes"].append(float(p[self.yes_id]))
                out["p_no"].append(float(p[self.no_id]))
        return out

    def flops(self, image_size: int) -> int:
        """FLOPs of one `generate_content` call on a grey image (all generated steps)."""
        from PIL import Image
        from torch.utils.flop_counter import FlopCounterMode
        img = Image.new("RGB", (image_size, image_size), (128, 128, 128))
        with self.torch.no_grad(), FlopCounterMode(display=False) as fc:
            self.model.generate_content([img, "a photo of a red circle left of a blue square"])
        return int(fc.get_total_flops())


def serve(load_backend) -> int:
    """Run the protocol on stdin/stdout around `load_backend()` (called after stdout is secured)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)       # the protocol channel: the original stdout
    os.dup2(2, 1)                                        # anything else printed (fd 1, C libraries too) → stderr
    sys.stdout = sys.stderr

    def send(obj) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        backend = load_backend()
    except Exception as e:                               # noqa: BLE001 — reported to the client, then exit
        send({"error": f"{type(e).__name__}: {e}"})
        return 1
    send({"ready": True, "name": getattr(backend, "name", type(backend).__name__)})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "close":
                return 0
            if op == "decide":
                send(backend.decide(req["question"], [decode_png(b) for b in req["images"]]))
            elif op == "flops":
                send({"flops": int(backend.flops(int(req["image_size"])))})
            else:
                send({"error": f"ValueError: unknown op {op!r}"})
        except Exception as e:                           # noqa: BLE001 — one bad request does not end the worker
            send({"error": f"{type(e).__name__}: {e}"})
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", required=True, help="local NVILA-Lite-2B-Verifier folder")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--trust-remote-code", action="store_true")
    a = ap.parse_args(argv)
    return serve(lambda: NVILABackend(a.path, a.device, a.dtype, a.trust_remote_code))


if __name__ == "__main__":
    sys.exit(main())

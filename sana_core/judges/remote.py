"""Remote judge: a judge model run as a separate process in its own Python environment, behind the same `Judge`
interface (`judge.name: remote`).

Why: NVILA-Lite-2B-Verifier (the paper's judge) needs its own model code pinned to transformers 4.46 and packages
this project does not carry; ours is transformers 5. SANA runs it from a separate script, and so do we: the worker
(`judges/nvila_worker.py` by default, any script speaking its protocol otherwise) is started with `python` — the
interpreter of the judge's environment — and exchanges JSON lines over stdin/stdout (protocol: nvila_worker.py).

- `decide(prompt, images)` sends the full text turn (`JUDGE_PROMPT` filled with the prompt: the question is ours, in one
  place) and the images as lossless PNGs; the reply's (yes, p_yes, p_no) come back as tensors like every judge's.
- The worker is started at construction (the model loads once) and stopped by `close()` / garbage collection; the
  worker's stderr (its logs) goes to ours. A worker that fails to start, dies, or answers {"error": ...} raises
  RuntimeError naming the worker and its message; `python` / `worker` / `path` are checked before anything starts.
- `timeout` (seconds, `judge.timeout`; None = wait forever) bounds the start (the model load) and every request: a
  worker that hangs past it is killed and RuntimeError names the worker, the request and the key. Replies are read
  by a thread into a queue, so the wait is a `queue.get(timeout=…)`, not a blocking readline.
- `device` / `dtype` are resolved here (sana_core/device.py: `auto` = this process's GPU + bf16, else CPU fp32) and
  passed to the worker as plain names.
"""
from __future__ import annotations

import base64
import io
import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any, Mapping

import torch

from .base import JUDGE_PROMPT, Judge, as_uint8_batch, check_prompt

DEFAULT_WORKER = Path(__file__).with_name("nvila_worker.py")


def encode_png(img) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class RemoteJudge(Judge):
    name = "remote"

    def __init__(self, path: str | Path, python: str | None = None, worker: str | Path | None = None,
                 device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False, batch_size: int = 8,
                 prompt_template: str = JUDGE_PROMPT, extra_args: list[str] | None = None,
                 timeout: float | None = 600.0):
        from ..device import resolve
        if not python:
            raise ValueError("judge.python: the remote judge needs the python executable of the judge's environment")
        if not (Path(python).is_file() and os.access(python, os.X_OK)):
            raise FileNotFoundError(f"judge.python: {python} is not an executable file")
        worker = Path(worker) if worker else DEFAULT_WORKER
        if not worker.is_file():
            raise FileNotFoundError(f"judge.worker: {worker} is not a file")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"judge.path: {path} is not a folder")
        if not isinstance(trust_remote_code, bool):
            raise ValueError(f"judge.trust_remote_code: expected true/false, got {trust_remote_code!r}")
        if "{prompt}" not in prompt_template:
            raise ValueError("judge.prompt_template: must contain '{prompt}'")
        if int(batch_size) < 1:
            raise ValueError(f"judge.batch_size: {batch_size} must be ≥ 1")
        if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                                        and timeout > 0):
            raise ValueError(f"judge.timeout: {timeout!r} must be a number of seconds > 0 (or null: no limit)")
        dev, dt = resolve(device, dtype, "judge")
        self.template, self.batch_size, self.worker = prompt_template, int(batch_size), str(worker)
        cmd = [str(python), str(worker), "--path", str(path), "--device", str(dev),
               "--dtype", str(dt).removeprefix("torch.")] + (["--trust-remote-code"] if trust_remote_code else [])
        self.cmd = cmd + list(extra_args or [])
        self.timeout = None if timeout is None else float(timeout)
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines), daemon=True).start()
        hello = self._read("start (model load)")
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"judge worker {self.worker} failed to start: {hello.get('error', hello)}")
        self.backend = hello.get("name")

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        """Reader thread: every line the worker writes, then "" at end of file."""
        for line in stream:
            lines.put(line)
        lines.put("")

    def _read(self, what: str) -> dict:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"judge worker {self.worker}: no answer to {what} within judge.timeout = "
                               f"{self.timeout:g} s; worker killed") from None
        if not line:
            code = self.proc.wait(timeout=30)
            raise RuntimeError(f"judge worker {self.worker} exited (code {code}) without an answer; see its stderr")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise RuntimeError(f"judge worker {self.worker} wrote a non-JSON line: {line[:200]!r}") from None

    def _ask(self, req: dict) -> dict:
        if self.proc.poll() is not None:
            raise RuntimeError(f"judge worker {self.worker} is not running (exit code {self.proc.returncode})")
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(f"judge worker {self.worker} closed its input (exit code {self.proc.wait()})") from None
        out = self._read(f"request {req.get('op')!r}")
        if "error" in out:
            raise RuntimeError(f"judge worker {self.worker}: {out['error']}")
        return out

    def decide(self, prompt: str, images: Any, metadata: Mapping | None = None):
        check_prompt(prompt)
        arr = as_uint8_batch(images)
        question = self.template.format(prompt=prompt)
        yes, p_yes, p_no = [], [], []
        for i in range(0, len(arr), self.batch_size):
            chunk = arr[i:i + self.batch_size]
            out = self._ask({"op": "decide", "question": question, "images": [encode_png(a) for a in chunk]})
            if not (len(out.get("yes", [])) == len(out.get("p_yes", [])) == len(out.get("p_no", [])) == len(chunk)):
                raise RuntimeError(f"judge worker {self.worker}: {len(chunk)} images but answer {out}")
            yes += out["yes"]; p_yes += out["p_yes"]; p_no += out["p_no"]
        return (torch.tensor(yes, dtype=torch.bool), torch.tensor(p_yes, dtype=torch.float32),
                torch.tensor(p_no, dtype=torch.float32))

    def flops_per_image(self, image_size: int = 64) -> int:
        return int(self._ask({"op": "flops", "image_size": int(image_size)})["flops"])

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.stdin.write(json.dumps({"op": "close"}) + "\n")
            proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:          # noqa: BLE001 — interpreter shutdown: the worker ends with its closed stdin
            pass

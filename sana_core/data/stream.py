"""`ShardStream`: an encoded folder (encode.encode_dataset) as training data, read lazily shard by shard.

It implements the training-data protocol of sana_core.train: `len`, `indices(seed, step, batch_size)` (the global
batch of a step — TensorData's own method, so for the same N and seed the two yield the same sample indices, and a
run resumed at data position step·B continues on the same samples), `batch(idx)` → (latents float32 [b,C,h,w], emb
float32 [b,L,E], mask int64 [b,L]), `latent_shape`, `text_shape`, `null_emb` [L,E] and `fingerprint()`.

Memory: `batch` reads only its rows from the shards they live in (`os.pread` at the row's offset in the `.npy`
file; each file's header is parsed once), and nothing stays mapped or buffered. What is held: per shard its start
offset and the parsed headers of its four `.npy` files (a few hundred bytes each), and the epoch permutation
(8 bytes per sample, as TensorData) — no latents, no features. `rows` restricts the stream to a subset of the
encoded rows (a curated subset is an index into the same shards). With text_mode "online" the batch's captions are
encoded by `text_encoder` in `batch()`.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..train import TensorData
from .encode import INDEX, latents_from_numpy


class _NpyRows:
    """Rows of a C-order `.npy` file by `os.pread` (np.load's header parsing costs ~1 ms a call, so it runs once)."""

    def __init__(self, path: Path):
        self.path = str(path)
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, self.dtype = read(f)
            self.offset = f.tell()
        if fortran:
            raise ValueError(f"{path}: Fortran-order arrays are not written by encode")
        self.shape = tuple(shape)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def rows(self, idx: np.ndarray) -> np.ndarray:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            buf = bytearray(b"".join(os.pread(fd, self.row_bytes, self.offset + int(i) * self.row_bytes) for i in idx))
        finally:
            os.close(fd)
        return np.frombuffer(buf, self.dtype).reshape(len(idx), *self.shape[1:])


class ShardStream:
    def __init__(self, path, rows=None, text_encoder=None):
        self.path = Path(path)
        if not (self.path / INDEX).is_file():
            raise FileNotFoundError(f"{self.path}: not an encoded dataset (no {INDEX}); run stage encode first")
        self.index = json.loads((self.path / INDEX).read_text())
        shards = self.index["shards"]
        self._names = [s["name"] for s in shards]
        self._starts = np.array([s["start"] for s in shards], np.int64)
        self.n_total = int(self.index["n"])
        missing = [n for n in self._names if not (self.path / "shards" / n / "rows.json").is_file()]
        if missing:
            raise FileNotFoundError(f"{self.path}: shard(s) {missing[:3]} listed in {INDEX} are missing")
        self.text_mode = self.index["text_mode"]
        if self.text_mode == "online" and text_encoder is None:
            raise ValueError(f"{self.path}: text features are encoded online (encode.text: online); pass the text "
                             "encoder to ShardStream")
        self.text_encoder = text_encoder if self.text_mode == "online" else None
        if self.text_encoder is not None and [self.text_encoder.max_length, self.text_encoder.dim] \
                != self.index["text_shape"]:
            raise ValueError(f"text: encoder gives [{self.text_encoder.max_length}, {self.text_encoder.dim}] but "
                             f"{self.path} was prepared for {self.index['text_shape']}")
        self.rows = None
        if rows is not None:
            r = torch.as_tensor(np.asarray(rows, dtype=np.int64))
            if r.ndim != 1 or len(r) == 0:
                raise ValueError("training subset is empty")
            if int(r.min()) < 0 or int(r.max()) >= self.n_total:
                raise ValueError(f"subset rows out of range for {self.n_total} encoded samples")
            self.rows = r
        self.null_emb = torch.from_numpy(np.load(self.path / "null_emb.npy")).float()
        self.latent_shape = tuple(self.index["latent_shape"])
        self.text_shape = tuple(self.index["text_shape"])
        self._perm_cache: dict[int, torch.Tensor] = {}
        self._rows_json = lru_cache(maxsize=4)(self._read_rows_json)
        self._files: dict[tuple[int, str], _NpyRows] = {}

    # the training-data protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_total if self.rows is None else len(self.rows)

    # one implementation of the batch order: TensorData's (a pure function of seed, step and len(self))
    _perm = TensorData._perm
    indices = TensorData.indices

    def batch(self, idx):
        """(latents, emb, mask) of stream indices `idx` (positions in the subset when `rows` is set)."""
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        g = (idx if self.rows is None else self.rows[idx]).numpy()
        sh = np.searchsorted(self._starts, g, side="right") - 1
        lat = torch.empty((len(g), *self.latent_shape), dtype=torch.float32)
        L, E = self.text_shape
        emb, mask = torch.empty((len(g), L, E), dtype=torch.float32), torch.empty((len(g), L), dtype=torch.long)
        captions = [None] * len(g)
        for s in np.unique(sh):
            sel = np.nonzero(sh == s)[0]
            local = g[sel] - self._starts[s]
            lat[sel] = latents_from_numpy(self._npy(s, "latents").rows(local), self.index["latent_dtype"])
            if self.text_mode == "cache":
                rows = self._npy(s, "cidx").rows(local).reshape(-1)
                emb[sel] = torch.from_numpy(self._npy(s, "emb").rows(rows).astype(np.float32, copy=False))
                mask[sel] = torch.from_numpy(self._npy(s, "mask").rows(rows).astype(np.int64, copy=False))
            else:
                caps = self._rows_json(s)["captions"]
                for i, j in zip(sel, local):
                    captions[i] = caps[j]
        if self.text_mode == "online":
            emb, mask = self.text_encoder.encode(captions)
        return lat, emb, mask

    def fingerprint(self) -> str:
        """Content identity: the encode fingerprint (digest of every shard's latents and captions, the text encoder,
        text mode and latent dtype) and the subset's rows."""
        h = hashlib.sha256(self.index["fingerprint"].encode())
        if self.rows is not None:
            h.update(self.rows.numpy().tobytes())
        return h.hexdigest()

    # reading the encoded rows ---------------------------------------------------------------------------------
    def _npy(self, s: int, name: str) -> _NpyRows:
        if (s, name) not in self._files:
            self._files[(s, name)] = _NpyRows(self.path / "shards" / self._names[s] / f"{name}.npy")
        return self._files[(s, name)]

    def _read_rows_json(self, s: int) -> dict:
        return json.loads((self.path / "shards" / self._names[s] / "rows.json").read_text())

    def _global(self, idx=None) -> np.ndarray:
        if idx is None:
            return np.arange(self.n_total) if self.rows is None else self.rows.numpy()
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return idx if self.rows is None else self.rows.numpy()[idx]

    def captions(self, idx=None) -> list[str]:
        """Captions of stream indices `idx` (all by default)."""
        return [r[1] for r in self._lookup(self._global(idx))]

    def keys(self, idx=None) -> list[str]:
        return [r[0] for r in self._lookup(self._global(idx))]

    def _lookup(self, g: np.ndarray) -> list[tuple]:
        sh = np.searchsorted(self._starts, g, side="right") - 1
        out = []
        for s, j in zip(sh, g - self._starts[sh]):
            r = self._rows_json(int(s))
            out.append((r["keys"][j], r["captions"][j], r["meta"][j]))
        return out

    def table(self):
        """pandas DataFrame of every encoded row (not only the subset): row, key, caption, shard + the source's
        metadata columns (e.g. the shapes world's index/tag/defect/objects)."""
        import pandas as pd
        recs = []
        for s, name in enumerate(self._names):
            r = self._rows_json(s)
            for j, (k, c, m) in enumerate(zip(r["keys"], r["captions"], r["meta"])):
                recs.append({"row": int(self._starts[s]) + j, "key": k, "caption": c, "shard": name, **m})
        return pd.DataFrame(recs)

    def rows_of(self, keys) -> np.ndarray:
        """Encoded row (of the whole encoded set, not the subset) of each key (KeyError naming the first unknown)."""
        pos = {r[0]: i for i, r in enumerate(self._lookup(np.arange(self.n_total)))}
        try:
            return np.array([pos[k] for k in keys], np.int64)
        except KeyError as e:
            raise KeyError(f"{self.path}: key {e.args[0]!r} is not in the encoded dataset") from None

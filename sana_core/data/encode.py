"""Encode a source into per-shard latents (+ text features), shard by shard, so memory stays flat in dataset size and a
killed run resumes at shard granularity.

Shards are runs of `shard_size` consecutive source records (bad ones included, so shard k always covers the same
records). Output folder (`ShardStream` reads it):
    index.json                 totals, shard list [{name, start, n}], shapes, dtypes, codec/text info, bad records,
                               content fingerprint
    null_emb.npy, null_mask.npy  the encoding of "" (SANA's caption-dropout target; float32 [L,E], int64 [L])
    shards/<k:05d>/latents.npy   [n,C,h,w] latents × the codec's scaling factor, in `latent_dtype` (bfloat16 is
                                 stored as its uint16 bit pattern; numpy has no bfloat16)
    shards/<k:05d>/emb.npy, mask.npy, cidx.npy   text="cache": the shard's unique captions encoded (float32 [u,L,E],
                                 int64 [u,L]) and each sample's row in them (int64 [n]) — deduplicated as
                                 sana_core.cache does, per shard
    shards/<k:05d>/rows.json     n, n_records, bad [(file, reason)], keys, captions, per-record metadata, digest
                                 (sha256 of the captions and latents)
With text="online" no text features are stored: `ShardStream.batch()` encodes the captions (SANA's way with Gemma-2,
whose 300 × 2304 features per caption are too large to cache). The text encoder is still needed here, for the null
embedding and to skip captions over its max length.

The run writes into `.partial-<name>/` beside `out_dir` (each shard folder written atomically with
sana_core.atomic.atomic_dir, so a kill leaves only whole shards), skips shards already there when the settings match,
and renames the folder to `out_dir` when every shard is done. Too many bad records (> max_bad_fraction of all records)
or no usable record at all → ValueError, the partial folder removed, no output.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from itertools import count, islice
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_dir, swap_in
from ..latents import to_pixels
from .images import BadInput, BadLog, check_caption, check_image_size, decode_image

LATENT_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
TEXT_MODES = ("cache", "online")
INDEX = "index.json"


def _latents_to_numpy(z: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return z.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return z.to(getattr(torch, dtype)).numpy()


def latents_from_numpy(a: np.ndarray, dtype: str) -> torch.Tensor:
    """Stored latents → float32 tensor."""
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def _fits(text_encoder, caption: str) -> None:
    try:
        text_encoder._check_lengths([caption])
    except ValueError:
        raise BadInput(f"caption longer than the text encoder's max length {text_encoder.max_length}") from None


def _digest(captions: list, latents: np.ndarray) -> str:
    """Content of a shard: its captions and latents (not the keys: the same pairs in another container are the
    same training data)."""
    h = hashlib.sha256(json.dumps(captions).encode())
    h.update(np.ascontiguousarray(latents).tobytes())
    return h.hexdigest()


def encode_dataset(source, codec, text_encoder, out_dir, *, image_size: int, shard_size: int = 1024,
                   batch_size: int = 64, latent_dtype: str = "float32", text: str = "cache",
                   max_bad_fraction: float = 0.01) -> dict:
    """Encode every record of `source` (an iterable of images.Record) into `out_dir`; returns stats {n, n_records,
    n_bad, bad_reasons, n_shards, n_shards_resumed, n_encoded, seconds, images_per_s}. Config errors name their key
    and come before any compute."""
    check_image_size(image_size, codec.factor)
    for key, v in (("encode.shard_size", shard_size), ("encode.batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key}: expected a positive integer, got {v!r}")
    if latent_dtype not in LATENT_DTYPES:
        raise ValueError(f"encode.latent_dtype: {latent_dtype!r} not in {list(LATENT_DTYPES)}")
    if text not in TEXT_MODES:
        raise ValueError(f"encode.text: {text!r} not in {list(TEXT_MODES)}")
    bad = BadLog(max_bad_fraction)
    out = Path(out_dir)
    partial = out.parent / f".partial-{out.name}"
    settings = {"image_size": image_size, "shard_size": shard_size, "latent_dtype": latent_dtype, "text": text,
                "codec": codec.info(), "text_encoder": text_encoder.info(), "source": getattr(source, "kind", "?"),
                "path": str(getattr(source, "path", ""))}
    if partial.exists():
        try:
            same = json.loads((partial / "settings.json").read_text()) == json.loads(json.dumps(settings))
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    (partial / "shards").mkdir(parents=True, exist_ok=True)
    (partial / "settings.json").write_text(json.dumps(settings, indent=1))
    try:  # a known record count lets a mostly-bad dataset fail early
        n_hint = len(source)
    except TypeError:
        n_hint = None

    shards, resumed, encoded, t0 = [], 0, 0, time.time()
    latent_shape, start = list(codec.latent_shape(image_size)), 0
    try:
        records = iter(source)
        for k in count():
            chunk = list(islice(records, shard_size))
            if not chunk:
                break
            sd = partial / "shards" / f"{k:05d}"
            if (sd / "rows.json").is_file():  # written whole by an earlier run
                rows = json.loads((sd / "rows.json").read_text())
                bad.extend(rows["n_records"], rows["bad"])
                resumed += 1
            else:
                rows = _encode_shard(chunk, sd, codec, text_encoder, image_size, batch_size, latent_dtype, text, bad)
                encoded += rows["n"]
            if rows["n"]:
                shards.append({"name": sd.name, "start": start, "n": rows["n"], "digest": rows["digest"]})
                start += rows["n"]
            if n_hint is not None and bad.over(n_hint):
                bad.check(n_hint)
        if start == 0:
            raise ValueError(f"data.path: the dataset is empty — no usable image-caption pair among "
                             f"{bad.n_seen} records" + (f" (first bad: {bad.bad[0][0]}: {bad.bad[0][1]})"
                                                        if bad.bad else ""))
        bad.check()
        null_emb, null_mask = text_encoder.encode_null()
        np.save(partial / "null_emb.npy", null_emb.reshape(null_emb.shape[-2:]).float().numpy())
        np.save(partial / "null_mask.npy", null_mask.reshape(-1).long().numpy())
        fp = hashlib.sha256(json.dumps([[s["digest"] for s in shards], text, latent_dtype,
                                           settings["text_encoder"]]).encode()).hexdigest()
        index = {"format": 1, "n": start, **bad.counts(), "bad": bad.bad[:1000], "shards": shards,
                 "latent_shape": latent_shape, "latent_dtype": latent_dtype, "text_mode": text,
                 "text_shape": [text_encoder.max_length, text_encoder.dim], "image_size": image_size,
                 "codec": settings["codec"], "text_encoder": settings["text_encoder"], "fingerprint": fp}
        (partial / INDEX).write_text(json.dumps(index, indent=1))
    except ValueError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    swap_in(partial, out)
    secs = time.time() - t0
    return {"n": start, **bad.counts(), "n_shards": len(shards), "n_shards_resumed": resumed, "n_encoded": encoded,
            "seconds": secs, "images_per_s": encoded / secs if secs > 0 else 0.0}


def _encode_shard(chunk, sd: Path, codec, text_encoder, image_size, batch_size, latent_dtype, text, bad) -> dict:
    keys, captions, metas, images, shard_bad = [], [], [], [], []
    for rec in chunk:
        try:
            if rec.bad:
                raise BadInput(rec.bad)
            cap = check_caption(rec.caption)
            _fits(text_encoder, cap)
            img = decode_image(rec.image, image_size)
        except BadInput as e:
            bad.add(rec.origin, str(e))
            shard_bad.append([rec.origin, str(e)])
            continue
        bad.ok()
        keys.append(rec.key)
        captions.append(cap)
        metas.append(rec.meta)
        images.append(img)
    n = len(keys)
    if n:
        z = codec.encode(to_pixels(np.stack(images)), batch_size=batch_size)
        lat = _latents_to_numpy(z, latent_dtype)
    else:
        lat = np.zeros((0, *codec.latent_shape(image_size)), LATENT_DTYPES[latent_dtype])
    del images
    rows = {"n": n, "n_records": len(chunk), "bad": shard_bad, "keys": keys, "captions": captions, "meta": metas,
            "digest": _digest(captions, lat)}

    def write(tmp: Path):
        np.save(tmp / "latents.npy", lat)
        if text == "cache" and n:
            unique: dict[str, int] = {}
            cidx = np.array([unique.setdefault(c, len(unique)) for c in captions], np.int64)
            emb, mask = text_encoder.encode(list(unique), batch_size=batch_size)
            np.save(tmp / "emb.npy", emb.float().numpy())
            np.save(tmp / "mask.npy", mask.long().numpy())
            np.save(tmp / "cidx.npy", cidx)
        (tmp / "rows.json").write_text(json.dumps(rows))  # last: its presence marks a complete shard

    atomic_dir(sd, write)
    return rows

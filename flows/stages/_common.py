"""Helpers shared by the training/surgery stage functions (flows/stages/<stage>.py). Thin glue over sana_core.

Paths (relative to the DVC root): data/shapes (stage `data`: the shapes world written as a dataset, and the prompt
files of every source), models/codec, data/cache (the source encoded per shard, sana_core.data.encode), data/curated
(curated subset: `selected.json` "rows" of data/cache), models/<stage>[_<item>] (full SanaPipeline folders, sana_core.sample.save_pipeline;
their text encoder / tokenizer / codec files are hard links into models/shared, sana_core/components.py).
Every output folder is written to a temp folder beside it and renamed (sana_core.atomic.atomic_dir), so a failed
stage leaves no half-written model. Training runs in `.work/<stage>[_<item>]/` (train.py's checkpoints, so a
killed stage resumes); the folder is deleted once the model folder is in place.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from flows import params as P
from sana_core.atomic import atomic_dir
from sana_core.components import prune
from sana_core.data import SOURCES, open_source
from sana_core.data.stream import ShardStream
from sana_core.geneval.dataset import DEFAULT_DATA_CFG, resolve_data_cfg
from sana_core.geneval.evaluate import summary as geneval_summary
from sana_core.geneval.layout import make_grid, read_metadata_jsonl
from sana_core.geneval.prompts import scene_for_metadata
from sana_core.geneval.render import render
from sana_core.geneval.score import score_image
from sana_core.geneval.procedure import all_images
from sana_core.geneval.splits import judge_training_prompts, stratified
from sana_core.judges import judge_class
from sana_core.latents import load_codec
from sana_core.model import build_transformer
from sana_core.sample import load_sampler, Sampler, save_pipeline
from sana_core.text import build_text_encoder
from sana_core.train import FINAL_DIR, can_resume, is_sharded, load_model_weights, train

SHAPES = Path("data") / "shapes"
CODEC = Path("models") / "codec"
CACHE = Path("data") / "cache"
CURATED = Path("data") / "curated"
SHARED_STORE = Path("models") / "shared"   # hard-link store of text encoder / tokenizer / codec files (components.py)
WORK = Path(".work")


def model_path(stage: str, item: str | None = None) -> Path:
    """`models/<stage>` or `models/<stage>_<item>` (the names of flows.params.model_variants)."""
    return Path("models") / P.variant_name(stage, item)


def need(root: Path, rel: Path | str, what: str) -> Path:
    """`root/rel` or FileNotFoundError naming the file and the stage that makes it (checked before compute)."""
    p = Path(root) / rel
    if not p.exists():
        raise FileNotFoundError(f"{p}: missing ({what}); run its stage first")
    return p


def target_item(item, params: dict) -> int:
    """foreach item (a prune target depth) → int, validated against prune.targets."""
    if item is None:
        raise ValueError("this stage needs a target depth item (one of prune.targets)")
    try:
        t = int(item)
    except (TypeError, ValueError):
        raise ValueError(f"item {item!r} is not an int depth (prune.targets)") from None
    if t not in params["prune"]["targets"]:
        raise ValueError(f"item {t} is not in prune.targets {params['prune']['targets']}")
    return t


# ------------------------------------------------------------------------------------------------- components
def world_cfg(params: dict) -> dict:
    """The GenEval-Shapes world's keys of the `data` section (build_dataset's config)."""
    return {k: v for k, v in params["data"].items() if k in DEFAULT_DATA_CFG}


def world(params: dict):
    return resolve_data_cfg(world_cfg(params))[1]


def source(params: dict, root: Path):
    """The configured dataset (`data.source` over `data.path`; shapes → the folder stage data wrote), opened with
    the options of `data` its reader takes (text_column, image_column, key_column, split)."""
    import inspect
    d = params["data"]
    if d["source"] == "shapes":
        path = need(root, SHAPES, "the shapes world, stage data")
    else:
        path = d["path"] if d["path"] is None or Path(d["path"]).is_absolute() else str(Path(root) / d["path"])
    allowed = set(inspect.signature(SOURCES.get(d["source"], lambda path: None)).parameters) - {"path"}
    return open_source(d["source"], path, **{k: d[k] for k in allowed if k in d})


def text_encoder(params: dict):
    return build_text_encoder(params["text"])


def codec(params: dict, root: Path):
    """The paper profile's local DC-AE (`codec.path`), else our trained tiny codec in models/codec."""
    where = (params["codec"]["device"], params["codec"]["dtype"])
    if params["codec"].get("path"):
        return load_codec(params["codec"]["path"], *where)
    return load_codec(need(root, CODEC, "trained codec, stage codec"), *where)


def new_transformer(params: dict, codec_, **overrides):
    """A freshly initialised transformer of params `model` (+ overrides) whose in/out channels are the codec's latent
    channels, so a codec profile with 8 or 4 channels needs no second key to keep in step."""
    ch = codec_.latent_channels
    return build_transformer({**params["model"], "in_channels": ch, "out_channels": ch, **overrides,
                              "seed": params["seed"]})


def sampling(params: dict) -> dict:
    """SamplingConfig dict: the `sample` section + the world's image size (the size the cache was encoded at)."""
    return {**params["sample"], "image_size": int(params["data"]["image_size"])}


def train_data(params: dict, root: Path, rows=None, text=None) -> ShardStream:
    """The training data of every training stage: the encoded dataset (data/cache) as a ShardStream, optionally
    restricted to `rows` (rows of data/cache, e.g. `curated_rows`). A source other than shapes loses its held-out
    calibration rows (`heldout_rows`); the shapes world's calibration prompts are a split of their own, never in the
    pool. With `encode.text: online` the captions are encoded in the training step by `text` (default: the `text`
    section's encoder). Its fingerprint (content of every shard + the subset) decides whether a killed stage
    resumes; its batches are a pure function of (seed, step), so a resume continues on the same samples."""
    cache = need(root, CACHE, "encoded dataset, stage encode")
    index = json.loads((cache / "index.json").read_text())
    if not is_shapes(params):
        first_held = int(heldout_rows(params, int(index["n"]))[0])
        rows = np.arange(first_held) if rows is None else np.asarray(rows, dtype=np.int64)
        rows = rows[rows < first_held]
    online = index.get("text_mode") == "online"
    return ShardStream(cache, rows=rows, text_encoder=(text or text_encoder(params)) if online else None)


def heldout_rows(params: dict, n: int) -> np.ndarray:
    """A brought dataset's held-out rows of data/cache: the last `importance.n_prompts` (block-importance
    calibration); no training stage sees them."""
    k = int(params["importance"]["n_prompts"])
    if k >= n:
        raise ValueError(f"importance.n_prompts: {k} held-out calibration rows leave nothing to train on among "
                         f"the {n} encoded rows")
    return np.arange(n - k, n)


def curated_rows(root: Path) -> np.ndarray:
    """The curated subset: `data/curated/selected.json` key "rows" (sorted rows of data/cache)."""
    p = need(root, CURATED / "selected.json", "curated subset, stage curate")
    sel = json.loads(p.read_text())
    if "rows" not in sel:
        raise ValueError(f"{p}: no \"rows\" (rows of data/cache); re-run stage curate")
    return np.asarray(sel["rows"], dtype=np.int64)


def sft_rows(params: dict, root: Path) -> tuple[np.ndarray, dict]:
    """The rows of data/cache stage sft trains on, by `sft.subset`, and what they are (for its metrics):
    `curated` → `curated_rows`; `random` → the curation control: a sample without replacement, seeded by params
    `seed`, of the training pool — every encoded row but a brought dataset's held-out rows (`heldout_rows`) — of
    exactly as many rows as the curated subset holds. Same size, same steps: only the choice of rows differs."""
    curated = curated_rows(root)
    subset = params["sft"]["subset"]
    if subset == "curated":
        return curated, {"subset": subset, "n_subset": len(curated)}
    if subset != "random":
        raise ValueError(f"sft.subset: {subset!r} is not one of ['curated', 'random']")
    n = int(json.loads((need(root, CACHE, "encoded dataset, stage encode") / "index.json").read_text())["n"])
    pool = np.arange(n if is_shapes(params) else int(heldout_rows(params, n)[0]))
    if len(curated) > len(pool):
        raise ValueError(f"sft.subset: random: the curated subset ({len(curated)} rows) is larger than the training "
                         f"pool ({len(pool)} rows); re-run stage curate")
    rows = np.sort(np.random.default_rng(int(params["seed"])).choice(pool, size=len(curated), replace=False))
    return rows, {"subset": subset, "n_subset": len(rows), "n_pool": len(pool),
                  "overlap_with_curated": float(np.isin(rows, curated).mean()) if len(rows) else 0.0}


def load_model(root: Path, rel: Path | str, params: dict | None = None, transformer_section: str = "sample"):
    """Sampler (transformer + codec + text encoder + sampling defaults) of a model folder. Without `params` on the
    CPU in fp32 (training stages: the trainer places the weights); with `params` (inference stages) each component
    goes where its section's `device` / `dtype` say: transformer ← `transformer_section`, text encoder ← `text`,
    codec ← `codec`."""
    placement = None
    if params is not None:
        placement = {c: {k: params[sec][k] for k in ("device", "dtype")}
                     for c, sec in (("transformer", transformer_section), ("text_encoder", "text"), ("vae", "codec"))}
    return load_sampler(need(root, rel, "model folder"), placement=placement)


# ------------------------------------------------------------------------------------------------- training

def run_training(model, data, params: dict, stage: str, root: Path, item: str | None = None,
                 cfg_over: dict | None = None) -> tuple[dict, torch.nn.Module | None]:
    """sana_core.train.train in `.work/<stage>[_<item>]` with the stage-runner step callback; returns (the summary
    without its config, the trained model). The model is `model` holding the trained weights — the EMA weights with
    `train.ema` set (what the stage saves) — except under FSDP across processes, where torch's fully_shard has
    sharded `model` in place: the main process then gets a plain model read back from the work folder's final/. A
    NonFiniteLossError propagates (no model folder is written by the caller). The caller removes the folder
    (`clean_work`) after its model folder is written, so a failure before that resumes — if the data
    (`data.fingerprint()`), the initial weights and the training config are the checkpoint's (`train.can_resume`)."""
    from flows.stage_runner import callback
    cfg = {**P.train_cfg(params, stage), **(cfg_over or {})}
    work = Path(root) / WORK / (stage if item is None else f"{stage}_{item}")
    inputs = {"data": data.fingerprint(), "init": float(sum(p.detach().double().sum() for p in model.parameters()))}
    resume = can_resume(work, cfg, inputs)
    summary = train(model, data, cfg, work, callback=callback(), resume=resume, inputs=inputs,
                    name=stage if item is None else f"{stage}@{item}")
    weights = work / FINAL_DIR / "ema" if cfg.get("ema") else None
    if cfg.get("ema"):      # the stage's model = the EMA weights (the raw weights stay in the work folder's final/)
        summary["weights"] = f"ema {cfg['ema']}"
    if is_sharded(model):   # FSDP: the whole trained weights exist only in the saved folder
        from diffusers import SanaTransformer2DModel
        model = SanaTransformer2DModel.from_pretrained(weights or work / FINAL_DIR) if is_main_process() else None
    elif weights is not None:
        load_model_weights(model, weights)
    return {k: v for k, v in summary.items() if k != "config"}, model


def is_main_process() -> bool:
    """False in the non-zero ranks of a multi-process (accelerate launch / torchrun) stage, which train but write
    nothing (RANK is set by the launcher)."""
    return int(os.environ.get("RANK", "0")) == 0


def clean_work(root: Path, stage: str, item: str | None = None) -> None:
    """Drop the training folder once the stage's model folder is in place."""
    work = Path(root) / WORK / (stage if item is None else f"{stage}_{item}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.parent.rmdir()
    except OSError:
        pass


def save_model_dir(root: Path, rel: Path | str, transformer, codec_, text, params: dict, meta: dict | None = None,
                   extra_json: dict | None = None, extra_png: dict | None = None) -> Path:
    """save_pipeline (stock SanaPipeline folder) + side files, written in one temp folder and renamed. The text
    encoder, tokenizer and codec files are hard links into `models/shared` (one copy for every model folder;
    sana_core/components.py), whose unreferenced files are dropped first."""
    from PIL import Image
    store = Path(root) / SHARED_STORE
    prune(store)

    # the GenEval-Shapes world it was trained in (None for another source)
    meta = {"world": world(params).to_dict() if is_shapes(params) else None, **(meta or {})}

    def write(tmp: Path):
        inner = save_pipeline(tmp / "_pipeline", transformer, codec_, text, sampling(params), extra=meta,
                              shared_store=store)
        for f in inner.iterdir():
            os.replace(f, tmp / f.name)
        inner.rmdir()
        for name, obj in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=1) + "\n")
        for name, arr in (extra_png or {}).items():
            Image.fromarray(arr).save(tmp / name)
        from flows.model_card import write_model_card   # README.md, inside the same atomic write
        write_model_card(tmp, Path(rel).name, params, Path(root))

    return atomic_dir(Path(root) / rel, write)


# ------------------------------------------------------------------------------------------------- evaluation
def is_shapes(params: dict) -> bool:
    return params["data"]["source"] == "shapes"


def quick_prompts(root: Path, params: dict) -> list[dict]:
    """quick_eval.n_prompts prompts that fit the source: shapes → its eval_iid (GenEval-Shapes metadata); another
    source → `quick_eval.prompts` (a GenEval metadata .jsonl, or a .txt with one prompt per line: its first n) or,
    when that is null, GenEval's own 553 prompts (the eval_iid.jsonl stage data writes for a brought dataset). From
    eval_iid they are taken round-robin over the tags (`splits.stratified`), so every task is in the quick eval."""
    q = params["quick_eval"]
    n = int(q["n_prompts"])
    if not is_shapes(params) and q.get("prompts"):
        p = need(root, q["prompts"], "quick_eval.prompts") if not Path(q["prompts"]).is_absolute() \
            else need(Path("/"), q["prompts"], "quick_eval.prompts")
        if p.suffix == ".jsonl":
            return read_metadata_jsonl(p)[:n]
        return [{"prompt": line.strip()} for line in p.read_text().splitlines() if line.strip()][:n]
    metas = read_metadata_jsonl(need(root, SHAPES / "eval_iid.jsonl", "eval prompts, stage data"))
    return stratified(metas, n)


def quick_geneval(sampler, root: Path, params: dict) -> dict:
    """GenEval-Shapes of one image per prompt on the quick_eval.n_prompts prompts of eval_iid (`quick_prompts`):
    {overall, <tag>..., n_images}. GenEval's procedure at N = 1 (`geneval.procedure`): seed quick_eval.seed for every
    prompt. A cheap in-stage signal; the geneval stage is the benchmark. Another source has no exact evaluator: {}
    (its sample grid still shows its own captions)."""
    if not is_shapes(params):
        return {}
    metas = quick_prompts(root, params)
    if not metas:
        return {}
    imgs = all_images(sampler, metas, int(params["quick_eval"]["seed"]), 1)[:, 0]
    return _score(metas, imgs, world(params))


def _score(metas: list[dict], imgs, w) -> dict:
    """GenEval summary (overall + tasks present + n_images) of one image per metadata line."""
    import pandas as pd
    rows = [{"tag": m["tag"], "correct": score_image(img, m, w)[0]} for m, img in zip(metas, imgs)]
    return {k: v for k, v in geneval_summary(pd.DataFrame(rows)).items() if v is not None}


def codec_roundtrip_geneval(codec_, root: Path, params: dict) -> dict:
    """The codec's ceiling on GenEval-Shapes: ground-truth renders of every eval_iid prompt (one scene each, seed
    quick_eval.seed), encoded and decoded, scored by the exact evaluator. A model sampling in this latent space
    cannot do better than its decoder (docs/scout.md measured how low that ceiling can be), so gate on this first.
    Only for the shapes world ({} for another source)."""
    if not is_shapes(params):
        return {}
    metas = read_metadata_jsonl(need(root, SHAPES / "eval_iid.jsonl", "eval prompts, stage data"))
    w = world(params)
    rng = np.random.default_rng(int(params["quick_eval"]["seed"]))
    gt = np.stack([render(scene_for_metadata(m, rng, w), w.image_size) for m in metas])
    return _score(metas, codec_.decode_uint8(codec_.encode_uint8(gt)), w)


def sample_grid(sampler, root: Path, params: dict, n_prompts: int = 4, seeds=(0, 1, 2, 3)) -> np.ndarray:
    """uint8 grid: rows = the first quick-eval prompts, columns = seeds."""
    metas = quick_prompts(root, params)[:n_prompts] or [{"prompt": "a photo of a circle"}]
    g = sampler.generate_grid([m["prompt"] for m in metas], list(seeds))
    return make_grid([im for row in g for im in row], cols=len(seeds))


def read_metrics(root: Path, stem: str) -> dict:
    p = need(root, Path("metrics") / f"{stem}.json", f"metrics of stage {stem}")
    return json.loads(p.read_text())


def train_and_save(model, data, params: dict, stage: str, root: Path, out: Path, codec_, text, item=None,
                   quick_eval: bool = False, meta: dict | None = None, extra_json: dict | None = None,
                   cfg_over: dict | None = None) -> dict:
    """Train, then write the model folder (+ samples.png); metrics = training summary (+ quick GenEval)."""
    summary, model = run_training(model, data, params, stage, root, item, cfg_over)
    if not is_main_process():  # only rank 0 evaluates and writes the model folder
        return summary
    model.eval()
    sampler = Sampler(model, codec_, text, sampling(params))
    m = {**summary, "depth": len(model.transformer_blocks), "n_train": len(data),
         "params": sum(p.numel() for p in model.parameters())}
    if quick_eval:
        m["geneval_quick"] = quick_geneval(sampler, root, params)
    grid = sample_grid(sampler, root, params)
    save_model_dir(root, out, model, codec_, text, params,
                   meta={"stage": stage, "geneval_quick": m.get("geneval_quick"), **(meta or {})},
                   extra_json={"train_summary.json": summary, **(extra_json or {})}, extra_png={"samples.png": grid})
    clean_work(root, stage, item)
    m["model_dir"], m["sample_grid"] = str(out), str(out / "samples.png")
    return m


# ------------------------------------------------------------------------------------------- judge and GenEval
JUDGE_DIR = Path("models") / "judge"
EVAL_SPLITS = ("eval_iid", "eval_comp")


def judge_prompt_sets(params: dict, root: Path) -> tuple[list[dict], list[dict]]:
    """(outside, reserved) of `splits.judge_training_prompts` for `judge.n_prompts` and `seed`: the judge stage
    trains on both; the geneval stage drops `reserved` from its splits."""
    evals = {s: read_metadata_jsonl(need(root, SHAPES / f"{s}.jsonl", "eval prompts, stage data")) for s in EVAL_SPLITS}
    return judge_training_prompts(world(params), int(params["seed"]), int(params["judge"]["n_prompts"]),
                                  evals["eval_iid"], evals["eval_comp"])


def judge_cfg(params: dict, root: Path, name: str | None = None) -> dict:
    """build_judge config for `name` (default judge.name): a trainable judge (tiny) → models/judge (or judge.path),
    vlm/clip/remote → judge.path + judge.device/dtype (+ trust_remote_code; remote: python, worker, timeout),
    oracle → the data's world (vocabulary and scale: the tiny 4 × 4 world is not the full world of its size)."""
    name = name or params["judge"]["name"]
    if name == "oracle":
        return {"name": "oracle", "world": world(params)}
    if judge_class(name).trainable:                 # trained by stage `judge` into models/judge
        return {"name": name, "path": str(params["judge"]["path"] or (Path(root) / JUDGE_DIR))}
    jp = params["judge"]
    if not jp["path"]:
        raise ValueError(f"judge.path: required for the {name!r} judge")
    cfg = {"name": name, "path": str(jp["path"]), "device": jp["device"], "dtype": jp["dtype"]}
    if name in ("vlm", "remote"):
        cfg["trust_remote_code"] = jp["trust_remote_code"]
    if name == "remote":
        cfg.update(python=jp["python"], worker=jp["worker"], timeout=jp["timeout"])
    return cfg


def clean_nan(x):
    """NaN → None, recursively (metrics JSON stays standard JSON)."""
    if isinstance(x, dict):
        return {k: clean_nan(v) for k, v in x.items()}
    if isinstance(x, float) and math.isnan(x):
        return None
    return x

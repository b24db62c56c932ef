"""params.yaml: load, validate, flatten, profiles.

**One schema**: the pydantic models below (`Params`, one `Section` class per params section). Every key is required
and strictly typed, with its rule beside it: ranges (`Count` = int ≥ 1, `Fraction` = 0..1, …), choices taken from the
library that acts on them (`one_of("sana_core.optim", "OPTIMIZERS")`), folders that must exist (`Folder`,
`ModelFolder`), and cross-section rules (`_check_consistency`). The default *values* live in `profiles/tiny.yaml`
(copied to params.yaml); `profiles/smoke.yaml` and `profiles/paper.yaml` are *overrides* deep-merged onto tiny, so they
only list what differs; `sana15 params use <profile>` writes the merged, validated result (comments of tiny.yaml kept).

**Adding a key** = one field line in its section class here (type and rule) + its default in profiles/tiny.yaml;
tests/test_params.py checks the two agree. (A key that is only in tiny.yaml still validates by its default's type —
`_with_undeclared_keys` — so parallel branches merge cleanly, but the test fails until the field is written.)

`validate` raises ValueError naming the dotted key (unknown or missing key, wrong type, out of range, not a choice,
no such folder, inconsistent sections) and never touches compute; every stage runs it on the whole file before doing
anything (flows/stage_runner.py), and so does `sana15 params check`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import io
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model,
                      model_validator)

from sana_core.atomic import write_text_atomic

# profiles/*.yaml, shipped as package data `flows/profiles` (a link to the checkout's profiles/, copied into the wheel
# by `pip install .`), so an installed `sana15` finds them without a checkout
PROFILES_DIR = Path(str(importlib.resources.files("flows") / "profiles"))
DEFAULT_PROFILE = "tiny"
PARAMS_FILE = "params.yaml"

# stages whose output folder `models/<name>` is a model; foreach stages give `models/<stage>_<item>`
MODEL_STAGES = ("pretrain_base", "grow", "pretrain_grown", "sft")
PER_TARGET_STAGES = ("prune", "finetune", "scratch")
# stages that train with sana_core.train on {**train, **<stage section>, seed} (`train_cfg`)
TRAINING_STAGES = ("pretrain_base", "pretrain_grown", "sft", "finetune", "scratch")


def train_cfg(params: dict, stage: str) -> dict:
    """{**train, **<stage section>, seed}: the sana_core.train config of training stage `stage`. Only the section's
    `TrainStage` keys go to the trainer; a stage's own data keys (`sft.subset`) are read by its stage function."""
    own = {k: v for k, v in params[stage].items() if k in TrainStage.model_fields}
    return {**params["train"], **own, "seed": params["seed"]}


# --------------------------------------------------------------------------------------------------- YAML I/O
def _yaml():
    """ruamel round-trip YAML (YAML 1.2 like DVC: `1e-4` is a float; comments survive a rewrite)."""
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _plain(obj: Any) -> Any:
    """ruamel CommentedMap/Seq/ScalarFloat → plain dict/list/float/int/str/bool/None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    return obj


def read_yaml(path: str | Path, roundtrip: bool = False) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such params file")
    try:
        data = _yaml().load(path.read_text())
    except Exception as e:  # ruamel's errors carry line/column
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data if roundtrip else _plain(data)


def write_yaml_atomic(data: Any, path: str | Path, header: str = "") -> Path:
    path = Path(path)
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return write_text_atomic(path, header + buf.getvalue())


# ----------------------------------------------------------------------------------------------------- schema
# Shared field kinds. Values are strict: an int is never a bool, a number is never a string ("1e-4" → rejected with a
# hint); an int is accepted where a float is expected (pydantic's strict float).
Count = Annotated[int, Field(ge=1)]
Size = Annotated[int, Field(ge=0)]                       # 0 allowed (0 = off / all, see tiny.yaml's comment)
Seed = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Decay = Optional[Annotated[float, Field(gt=0, lt=1)]]   # EMA decay, null = off


def one_of(module: str, name: str) -> AfterValidator:
    """The value must be in the library's own tuple/dict `module.name` (imported when a params file is checked, so
    the choices live in one place: the code that acts on them)."""
    def check(value: Any) -> Any:
        choices = list(getattr(importlib.import_module(module), name))
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {choices}")
        return value
    return AfterValidator(check)


def _folder(value: str | None, info: ValidationInfo, marker: str | None = None, file: bool = False) -> str | None:
    """An existing local folder (`file`: a file) (relative paths: from the project root), checked only when a root
    is given —
    `sana15 params use paper` writes a profile whose /models/... folders exist on the GPU box, not here."""
    root = (info.context or {}).get("root")
    if value is None or root is None:
        return value
    p = Path(value) if Path(value).is_absolute() else Path(root) / value
    if file and not p.is_file():
        raise ValueError(f"{value}: no such file (a local file, or null)")
    if not file and not p.is_dir():
        raise ValueError(f"{value}: no such folder (a local folder, or null)")
    if marker and not (p / marker).is_file():
        raise ValueError(f"{value}: not a model folder (no {marker})")
    return value


Folder = Annotated[Optional[str], AfterValidator(_folder)]
File = Annotated[Optional[str], AfterValidator(lambda v, info: _folder(v, info, file=True))]
ModelFolder = Annotated[Optional[str], AfterValidator(lambda v, info: _folder(v, info, "config.json"))]


# device / dtype of a model-running component (sana_core/device.py resolves them; `_check_consistency` checks that the
# device exists here); auto = CUDA + bf16 when present, else CPU fp32
Device = Annotated[str, Field(min_length=1)]
DType = Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"]


class Section(BaseModel):
    """A params section: every key required (values live in profiles/tiny.yaml), no other key, strict types."""
    model_config = ConfigDict(extra="forbid", strict=True)


class Model(Section):
    profile: Annotated[str, one_of("sana_core.model", "PROFILES")]
    num_layers: Optional[Count]     # the base depth; null = the profile's (sana_core.model.resolve_config)
    init: Annotated[str, one_of("sana_core.model", "INITS")]


class Text(Section):
    kind: Annotated[str, one_of("sana_core.text", "KINDS")]
    path: ModelFolder
    max_length: Annotated[int, Field(ge=2)]
    chi: Union[bool, list[str]]
    truncate: bool
    device: Device
    dtype: DType


class Codec(Section):
    profile: Annotated[str, one_of("sana_core.latents", "CODEC_PROFILES")]
    path: ModelFolder
    seed: Seed
    device: Device
    dtype: DType


class CodecTrain(Section):
    steps: Count
    batch_size: Count
    lr: Positive
    num_threads: Optional[Count]


class Train(Section):
    warmup_steps: Size
    lr_schedule: Literal["constant", "cosine", "linear"]
    weight_decay: NonNegative
    optimizer_args: dict[str, Any]
    grad_clip: Optional[NonNegative]
    shift: Positive
    logit_mean: float
    logit_std: Positive
    caption_dropout: Fraction
    integer_timestep: bool
    checkpoint_every: Size
    keep_checkpoints: Size
    ema: Decay
    log_every: Count
    compile: bool
    num_threads: Optional[Count]
    progress: bool
    mixed_precision: Literal["no", "bf16", "fp16"]     # fp16: with a loss scaler (on CPU: for tests)
    gradient_accumulation_steps: Count
    gradient_checkpointing: bool
    distributed: Literal["none", "ddp", "fsdp"]         # fsdp: accelerate's FSDP2 plugin (GPUs, or CPU over gloo)
    num_processes: Count                                # > 1: the stage re-launches itself under accelerate launch
    num_machines: Count
    machine_rank: Size
    main_process_ip: Optional[str]
    main_process_port: Optional[Annotated[int, Field(ge=1, le=65535)]]
    accelerate_config: Optional[str]


class Sample(Section):
    solver: Annotated[str, one_of("sana_core.sample", "SOLVERS")]
    steps: Count
    guidance_scale: NonNegative
    shift: Positive
    device: Device
    dtype: DType


class QuickEval(Section):
    n_prompts: Size
    seed: Seed
    prompts: File                      # a brought dataset's quick/grid prompts (.jsonl metadata or .txt lines)


class Families(Section):
    single_object: NonNegative
    two_object: NonNegative
    counting: NonNegative
    colors: NonNegative
    position: NonNegative
    color_attr: NonNegative
    multi_object: NonNegative


class Noise(Section):
    wrong_caption: Fraction
    incomplete_caption: Fraction
    blur: Fraction
    noise: Fraction
    color_jitter: Fraction


class Degrade(Section):
    blur_sigma: Annotated[list[NonNegative], Field(min_length=2, max_length=2)]
    noise_std: NonNegative
    color_jitter: Annotated[int, Field(ge=0, le=255)]


class Vocabulary(Section):
    shapes: Optional[Annotated[list[str], Field(min_length=1)]]
    colors: Optional[Annotated[list[str], Field(min_length=1)]]


class Data(Section):
    source: Annotated[str, one_of("sana_core.data", "SOURCES")]
    path: Annotated[str, Field(min_length=1)]   # the dataset (folder, shard pattern, datasets folder); shapes: data/shapes
    format: Annotated[str, one_of("sana_core.data.shapes", "FORMATS")]   # how stage data writes the shapes world
    text_column: Annotated[str, Field(min_length=1)]      # imagefolder / hf: the caption column
    image_column: Annotated[str, Field(min_length=1)]     # hf
    key_column: Optional[str]                             # hf: a unique id column (null = the row number)
    split: Annotated[str, Field(min_length=1)]            # hf: the split of a saved DatasetDict
    max_bad_fraction: Fraction
    image_size: Count
    pool_size: Count
    seed: Seed
    eval_seed: Seed
    eval_n: Count
    calibration_size: Size
    holdout: bool
    color_jitter_train: Annotated[int, Field(ge=0, le=255)]
    families: Families
    noise: Noise
    degrade: Degrade
    vocabulary: Vocabulary
    object_size: Optional[Annotated[list[Positive], Field(min_length=2, max_length=2)]]

    @model_validator(mode="after")
    def _world(self):
        """The world's own rules (names in the vocabulary, noise fractions summing ≤ 1, object size < image size)."""
        from sana_core.geneval.dataset import DEFAULT_DATA_CFG, resolve_data_cfg
        d = {k: v for k, v in self.model_dump().items() if k in DEFAULT_DATA_CFG}   # the world's keys
        if d["image_size"] not in (32, 64):  # checked against the source in _check_data_source
            d["image_size"] = 64
        resolve_data_cfg(d)
        return self


class Encode(Section):
    batch_size: Count
    shard_size: Count
    latent_dtype: Annotated[str, one_of("sana_core.data.encode", "LATENT_DTYPES")]
    text: Annotated[str, one_of("sana_core.data.encode", "TEXT_MODES")]


class Curate(Section):
    scorer: Literal["oracle", "clip"]  # = sana_core.data.curate.SCORERS (a test keeps them equal)
    min_score: Optional[float]         # oracle: in [0, 2]; clip: 100·cos in [-100, 100] (_check_consistency); null = off
    top_fraction: Optional[Annotated[float, Field(gt=0, le=1)]]
    max_samples: Size
    clip_path: ModelFolder             # local transformers CLIPModel folder; required for clip
    batch_size: Count
    device: Device
    dtype: DType


class TrainStage(Section):
    """pretrain_base, pretrain_grown, sft, finetune, scratch: the per-stage keys over `train`."""
    steps: Count
    lr: Positive
    batch_size: Count
    optimizer: Annotated[str, one_of("sana_core.optim", "OPTIMIZERS")]
    ema: Decay


class SFT(TrainStage):
    """sft: the training keys + which rows it trains on. `curated` = data/curated/selected.json's rows; `random` =
    the curation control: a random sample of the training pool of the same size, seeded by `seed`
    (flows/stages/_common.sft_rows)."""
    subset: Literal["curated", "random"]


class Grow(Section):
    target_depth: Count
    strategy: Annotated[str, one_of("sana_core.growth", "STRATEGIES")]
    drop_last: Size
    seed: Seed


class Importance(Section):
    source: Annotated[str, one_of("flows.params", "MODEL_STAGES")]
    n_prompts: Count
    steps: Count
    cfg_scale: NonNegative
    device: Device
    dtype: DType


class Prune(Section):
    targets: Annotated[list[Count], Field(min_length=1)]


class Judge(Section):
    name: Annotated[str, one_of("sana_core.judges", "JUDGE_NAMES")]
    path: Folder
    steps: Count
    lr: Positive
    batch_size: Count
    n_prompts: Count
    images_per_prompt: Count
    renders_per_prompt: Size      # tiny judge: + near-miss renders per training prompt (0 = off)
    dense: NonNegative            # tiny judge: weight of the per-cell loss on those renders (0 = off)
    centres: bool                 # tiny judge: + a per-cell object-centre map and its soft count (needs dense > 0)
    degraded: Annotated[float, Field(ge=0, le=1)]   # tiny judge: share of the near-miss renders that draw the prompt badly
    val_frac: Annotated[float, Field(gt=0, lt=1)]
    trust_remote_code: bool       # vlm / remote: run the model folder's own code; explicit, never implied
    python: Optional[str]         # remote: the judge environment's python executable
    worker: Optional[str]         # remote: the worker script (null = sana_core/judges/nvila_worker.py)
    timeout: Optional[Positive]   # remote: seconds per start / request before the worker is killed (null = no limit)
    device: Device
    dtype: DType


class GenEval(Section):
    variants: Annotated[list[str], Field(min_length=1)]
    splits: Annotated[list[Literal["eval_iid", "eval_comp"]], Field(min_length=1)]
    n_images: Count
    best_of: Annotated[list[Count], Field(min_length=1)]
    seed: Seed
    max_prompts: Size
    detector: ModelFolder          # real-data sources: local Mask2Former (COCO instance) folder
    clip: ModelFolder              # real-data sources: local CLIP ViT-L/14 folder (colour)
    eval_batch_size: Count
    num_processes: Count           # > 1: the stage re-launches itself under accelerate launch, candidates split


class Report(Section):
    title: str


class Params(Section):
    """The whole params.yaml. Cross-section rules (cheap, no compute) run once every section is valid."""
    profile: Annotated[str, Field(min_length=1)]
    seed: Seed
    model: Model
    text: Text
    codec: Codec
    codec_train: CodecTrain
    train: Train
    sample: Sample
    quick_eval: QuickEval
    data: Data
    encode: Encode
    curate: Curate
    pretrain_base: TrainStage
    grow: Grow
    pretrain_grown: TrainStage
    sft: SFT
    importance: Importance
    prune: Prune
    finetune: TrainStage
    scratch: TrainStage
    judge: Judge
    geneval: GenEval
    report: Report

    @model_validator(mode="after")
    def _cross_rules(self):
        _check_consistency(self.model_dump())
        return self


def variant_name(stage: str, item=None) -> str:
    """The model-variant name (= folder under models/) of a stage run: `sft`, `prune_8`."""
    return stage if item is None else f"{stage}_{item}"


def model_variants(params: dict) -> list[str]:
    """Names of every model folder the recipe produces (= valid `geneval.variants`)."""
    targets = params.get("prune", {}).get("targets", [])
    return list(MODEL_STAGES) + [variant_name(s, t) for s in PER_TARGET_STAGES for t in targets]


def lineage(variant: str, params: dict) -> list[str]:
    """The training stages whose compute a model variant embodies, in order: `finetune_8` → pretrain_base,
    pretrain_grown, sft (or `importance.source`'s lineage), finetune_8; `scratch_8` → itself; `grow` → pretrain_base.
    (Sum of their `flops` metrics = the variant's training FLOPs.)"""
    base = ["pretrain_base"]
    chains = {"pretrain_base": base, "grow": base, "pretrain_grown": base + ["pretrain_grown"],
              "sft": base + ["pretrain_grown", "sft"]}
    if variant in chains:
        return chains[variant]
    stage, _, t = variant.rpartition("_")
    source = chains.get(params.get("importance", {}).get("source", "sft"), chains["sft"])
    if stage == "prune":
        return source
    if stage == "finetune":
        return source + [variant]
    if stage == "scratch":
        return [variant]
    raise ValueError(f"lineage: {variant!r} is not a model of this recipe; choose from {model_variants(params)}")


def _check_consistency(params: dict) -> None:
    """Cross-section rules that one field cannot express; each message starts with the dotted key."""
    targets = params["prune"]["targets"]
    if len(set(targets)) != len(targets):
        raise ValueError(f"prune.targets: duplicate depths in {targets}")
    grown = params["grow"]["target_depth"]
    bad = [t for t in targets if not 0 < t < grown]
    if bad:
        raise ValueError(f"prune.targets: depths {bad} must be in (0, grow.target_depth={grown})")
    # the growth layout (block_replication needs a multiple of the base depth, …): checked here, not after
    # pretrain_base has trained for minutes (the first growth ablation found it that way)
    from sana_core.growth import growth_args, growth_layout
    from sana_core.model import resolve_config
    model_cfg = {k: v for k, v in params["model"].items() if k not in ("init", "seed")}
    growth_layout(resolve_config(model_cfg)["num_layers"], **growth_args(params["grow"]))
    _check_data_source(params)
    if params["text"]["kind"] != "minilm" and not params["text"]["path"]:
        raise ValueError(f"text.path: the {params['text']['kind']} text encoder needs a local checkpoint folder")
    if params["judge"]["name"] in ("vlm", "clip") and not params["judge"]["path"]:
        raise ValueError(f"judge.path: required for the {params['judge']['name']!r} judge (a local folder)")
    cur = params["curate"]
    if cur["scorer"] == "clip" and not cur["clip_path"]:
        raise ValueError("curate.clip_path: required for the 'clip' scorer (a local CLIP model folder)")
    lo, hi = (0.0, 2.0) if cur["scorer"] == "oracle" else (-100.0, 100.0)
    if cur["min_score"] is not None and not lo <= cur["min_score"] <= hi:
        raise ValueError(f"curate.min_score: {cur['min_score']} outside [{lo:g}, {hi:g}] (the {cur['scorer']} "
                         f"scorer's range)")
    n, calib = params["importance"]["n_prompts"], params["data"]["calibration_size"]
    if params["data"]["source"] == "shapes" and n > calib:   # another source holds out n rows (stages._common)
        raise ValueError(f"importance.n_prompts: {n} > data.calibration_size={calib} (calibration prompts available)")
    # each training stage's config as sana_core.train will see it ({**train, **<stage>, seed}): its cross-key rules
    # (batch divisible by processes × accumulation, more than one process needs ddp/fsdp, …)
    from sana_core.train import validate_config
    for stage in TRAINING_STAGES:
        try:
            validate_config(train_cfg(params, stage))
        except ValueError as e:
            raise ValueError(f"train (as {stage} uses it): {e}") from None
    if params["train"]["accelerate_config"] and not Path(params["train"]["accelerate_config"]).is_file():
        raise ValueError(f"train.accelerate_config: {params['train']['accelerate_config']}: no such file")
    from sana_core.device import check as check_placement
    for sec in ("text", "codec", "sample", "curate", "importance", "judge"):  # device / dtype of each model-running part
        check_placement(params[sec], sec)
    known = model_variants(params)
    for i, v in enumerate(params["geneval"]["variants"]):
        if v not in known:
            raise ValueError(f"geneval.variants[{i}]: {v!r} is not a model of this recipe; choose from {known}")
    for key in ("variants", "splits", "best_of"):
        if len(set(params["geneval"][key])) != len(params["geneval"][key]):
            raise ValueError(f"geneval.{key}: duplicates in {params['geneval'][key]}")


def codec_factor(codec: dict) -> int | None:
    """The codec's spatial downsampling factor from its params (profile, or a local folder's config.json), without
    building it; None when a codec.path folder is not here to read."""
    if codec.get("path"):
        cfg = Path(codec["path"]) / "config.json"
        if not cfg.is_file():
            return None
        import json
        return 2 ** (len(json.loads(cfg.read_text())["encoder_block_out_channels"]) - 1)
    from sana_core.latents import CODEC_PROFILES
    return 2 ** (len(CODEC_PROFILES[codec["profile"]]["encoder_block_out_channels"]) - 1)


SHAPES_PATH = "data/shapes"   # = flows.stages._common.SHAPES: where stage data writes the shapes world


def _check_data_source(params: dict) -> None:
    """data.source / data.path / data.image_size against each other and the codec (before any stage runs).
    data.path is always a path, so dvc.yaml can list `${data.path}` as a dependency of the stages that read the
    dataset (DVC cannot interpolate null): for shapes it is the data stage's own output, data/shapes."""
    d = params["data"]
    if d["source"] == "shapes" and d["path"] != SHAPES_PATH:
        raise ValueError(f"data.path: must be {SHAPES_PATH} for source 'shapes' (stage data writes the world there)")
    if d["source"] != "shapes" and (not d["path"] or d["path"] == SHAPES_PATH):
        raise ValueError(f"data.path: required for source {d['source']!r} (a folder, shard pattern or datasets "
                         "folder)")
    if d["source"] == "shapes" and params["quick_eval"]["prompts"]:
        raise ValueError("quick_eval.prompts: the shapes world's quick eval uses its own eval_iid prompts (scored by "
                         "the exact evaluator); set it only for a brought dataset")
    if d["source"] == "shapes" and d["image_size"] not in (32, 64):
        raise ValueError(f"data.image_size: {d['image_size']} not supported by the shapes world (64 or 32)")
    f = codec_factor(params["codec"])
    if f and d["image_size"] % f:
        raise ValueError(f"data.image_size: {d['image_size']} is not a multiple of the codec's downsampling factor "
                         f"{f}")


def check_brought_eval(params: dict) -> None:
    """The evaluation stages' rules for a brought dataset (`data.source` ≠ shapes), run by stages judge and geneval
    before any compute. The GenEval-Shapes world's exact evaluator labels nothing on real images, so the judges
    built on it (the trainable tiny judge, trained on its labels; the oracle, which is that evaluator) do not apply,
    and GenEval runs on GenEval's own prompts (stage data's eval_iid) with the official evaluator's two models.
    Not part of `_check_consistency`: a brought dataset's data → training stages run without evaluation models."""
    if params["data"]["source"] == "shapes":
        return
    src = params["data"]["source"]
    from sana_core.judges import judge_class
    name = params["judge"]["name"]
    if name == "oracle" or judge_class(name).trainable:
        raise ValueError(f"judge.name: {name!r} needs the GenEval-Shapes world's exact evaluator (its labels), which "
                         f"does not apply to data.source {src!r}; use a pretrained judge: clip, vlm or remote "
                         f"(judge.path)")
    if not params["judge"]["path"]:
        raise ValueError(f"judge.path: required for the {name!r} judge (a local folder)")
    if list(params["geneval"]["splits"]) != ["eval_iid"]:
        raise ValueError(f"geneval.splits: {params['geneval']['splits']} — data.source {src!r} is evaluated on "
                         f"GenEval's own prompts only: [eval_iid] (eval_comp is a GenEval-Shapes split)")
    for key in ("detector", "clip"):
        if not params["geneval"][key]:
            raise ValueError(f"geneval.{key}: required for data.source {src!r} (the official GenEval evaluator: "
                             f"Mask2Former COCO instance + CLIP ViT-L/14 local folders)")


def _with_undeclared_keys(model: type[Section], defaults: dict) -> type[Section]:
    """A key that is in profiles/tiny.yaml but has no field yet (added there by a parallel branch) gets a field of
    its default's type and no other rule, so it keeps working; tests/test_params.py fails until it is declared."""
    extra: dict[str, Any] = {}
    for k, v in defaults.items():
        field = model.model_fields.get(k)
        if field is None:
            extra[k] = (Any if v is None else type(v), ...)
        elif isinstance(v, dict) and isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            sub = _with_undeclared_keys(field.annotation, v)
            if sub is not field.annotation:
                extra[k] = (sub, ...)
    return create_model(model.__name__, __base__=model, **extra) if extra else model


def undeclared_keys(defaults: dict | None = None) -> list[str]:
    """Dotted keys of profiles/tiny.yaml without a field in `Params` (should be empty)."""
    defaults = default_params() if defaults is None else defaults

    def walk(model, d, prefix):
        for k, v in d.items():
            f = model.model_fields.get(k)
            if f is None:
                yield prefix + k
            elif isinstance(v, dict) and isinstance(f.annotation, type) and issubclass(f.annotation, Section):
                yield from walk(f.annotation, v, f"{prefix}{k}.")
    return list(walk(Params, defaults, ""))


def default_params() -> dict:
    """The default profile (tiny): the default value of every key."""
    return read_yaml(PROFILES_DIR / f"{DEFAULT_PROFILE}.yaml")


# ------------------------------------------------------------------------------------------------ error text
_TYPES = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str", "list_type": "list",
          "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping"}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("bool", "list[str]") or "[" in str(part) or part.startswith("function-"):
            continue  # a union branch / validator name, not a key
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: dict, defaults: dict) -> str:
    key, kind, value, ctx = _dotted(err["loc"]), err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return f"missing key {key!r} (run `sana15 params use <profile>` to regenerate params.yaml)"
    if kind == "extra_forbidden":
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        known = defaults
        for part in parent.split(".") if parent else []:
            known = known.get(part, {}) if isinstance(known, dict) else {}
        return (f"unknown key {key!r} (known under {parent or 'top level'}: {sorted(known)}); a new key is a field "
                f"in flows/params.py and a default in profiles/{DEFAULT_PROFILE}.yaml")
    if kind in _TYPES:
        hint = " (YAML needs a number; write e.g. 1.0e-4)" if kind == "float_type" and isinstance(value, str) else ""
        expected = " or ".join((_TYPES[kind], *err.get("alt", ())))
        return f"{key}: expected {expected}, got {_tname(value)} {value!r}{hint}"
    if kind in _BOUNDS:
        op = _BOUNDS[kind]
        return f"{key}: {value!r} must be {op} {next(iter(ctx.values()))}"
    if kind in ("too_short", "too_long", "string_too_short"):
        n, what = (ctx["min_length"], "at least") if "min_length" in ctx else (ctx["max_length"], "at most")
        unit = "character" if isinstance(value, str) else "item"
        return f"{key}: needs {what} {n} {unit}{'s' if n != 1 else ''}, got {value!r}"
    if kind == "literal_error":
        return f"{key}: must be {ctx.get('expected')}, got {value!r}"
    msg = str(ctx["error"]) if kind == "value_error" and "error" in ctx else err["msg"]
    if not key or msg.startswith((key + ".", key + ":", key + "[")):
        return msg  # the library's / cross-rule message already names its dotted key
    return f"{key}: {msg}"


def validate(params: dict, root: str | Path | None = None) -> dict:
    """Check `params` against `Params` → `params` unchanged; ValueError naming the dotted key (the first problem,
    then how many more and where). `root` given: folders named in params must exist (relative to it)."""
    defaults = default_params()
    schema = _with_undeclared_keys(Params, defaults)
    try:
        schema.model_validate(params, context={"root": None if root is None else Path(root)})
    except ValidationError as e:
        errs, seen = [], {}
        for x in e.errors(include_url=False):  # a union field (bool | list) fails once per branch: one entry per key
            k = _dotted(x["loc"])
            if k in seen and x["type"] in _TYPES and errs[seen[k]]["type"] in _TYPES:
                errs[seen[k]]["alt"] = errs[seen[k]].get("alt", ()) + (_TYPES[x["type"]],)
                continue
            seen[k] = len(errs)
            errs.append(x)
        more = f" (+{len(errs) - 1} more: {', '.join(_dotted(x['loc']) or '<top>' for x in errs[1:4])}" \
               f"{', …' if len(errs) > 4 else ''})" if len(errs) > 1 else ""
        raise ValueError(f"params: {_message(errs[0], defaults)}{more}") from None
    return params


# ----------------------------------------------------------------------------------------------------- helpers
def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-4}} → {'train.lr': 1e-4}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def params_hash(section: Any) -> str:
    """Short content hash of a params section (canonical JSON)."""
    blob = json.dumps(section, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load(root: str | Path = ".", validate_: bool = True) -> dict:
    """Read `<root>/params.yaml` (plain dict) and validate it (folders it names must exist under `root`)."""
    p = read_yaml(Path(root) / PARAMS_FILE)
    return validate(p, root=root) if validate_ else p


def deep_merge(base: Any, over: Any, key: str = "") -> Any:
    """Overlay `over` onto `base` in place (dicts merge; lists and scalars replace). Unknown keys → ValueError."""
    if not isinstance(over, dict):
        return over
    if not isinstance(base, dict):
        raise ValueError(f"params: {key}: expected {_tname(base)}, got a mapping")
    for k, v in over.items():
        sub = f"{key}.{k}" if key else k
        if base and k not in base:
            raise ValueError(f"params: unknown key {sub!r} in profile (known: {sorted(base)})")
        if isinstance(v, dict) and isinstance(base.get(k), dict) and base.get(k):
            deep_merge(base[k], v, sub)
        else:
            base[k] = v
    return base


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str, roundtrip: bool = False) -> Any:
    """Tiny + `profiles/<name>.yaml` overrides, validated. `roundtrip=True` keeps tiny's comments (for writing)."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such profile (available: {available_profiles()})")
    base = read_yaml(PROFILES_DIR / f"{DEFAULT_PROFILE}.yaml", roundtrip=True)
    if name != DEFAULT_PROFILE:
        over = read_yaml(path, roundtrip=True)
        try:
            deep_merge(base, over)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    try:
        validate(_plain(base))  # folders are checked where the profile is used (`load`)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return base if roundtrip else _plain(base)


def use_profile(name: str, root: str | Path = ".") -> Path:
    """Write the merged profile to `<root>/params.yaml` (atomically, after validation)."""
    data = load_profile(name, roundtrip=True)  # validates
    out = Path(root) / PARAMS_FILE
    if name == DEFAULT_PROFILE:  # byte copy
        return write_text_atomic(out, (PROFILES_DIR / f"{DEFAULT_PROFILE}.yaml").read_text())
    header = f"# generated by `sana15 params use {name}` = profiles/{DEFAULT_PROFILE}.yaml + profiles/{name}.yaml overrides\n"
    return write_yaml_atomic(data, out, header=header)


def stage_section(params: dict, stage: str) -> dict:
    """The params section named after a DVC stage (`prune@8` → `prune`)."""
    base = stage.split("@", 1)[0]
    if base not in params:
        raise KeyError(f"params: no section {base!r} for stage {stage!r} (sections: {sorted(params)})")
    return params[base]

"""`sana15 geneval`: best-of-N GenEval by hand — generate N candidates per prompt, keep k by the judge's knockout
tournament, write the GenEval layout, score it (GenEval-Shapes prompts only).

    sana15 geneval --model models/sft --prompts data/shapes/eval_iid.jsonl --n 16 --judge tiny --out out/sft_n16
                   [--judge-path models/judge] [--k 4] [--seed 0] [--steps 20] [--cfg 4.5] [--max-prompts 0]
                   [--reserved models/judge/training_prompts.jsonl]

Same procedure as the `geneval` stage (flows/stages/geneval.py) at one N: candidate j of every prompt uses seed
`--seed + j` (GenEval's rule, `sana_core.geneval.procedure`; prompts sampled in the stage's batches, so the pixels are
the stage's at N = N_max); N ≤ k keeps all N (no judging); N > k keeps the k survivors of `scaling.tournament`.
Reserved prompts: the prompts a judge was trained on are never scored — those of `--reserved` (a judge folder or
its `training_prompts.jsonl`; default: the `--judge-path` folder's, when it has one, as the stage does with
models/judge) are dropped from `--prompts` before `--max-prompts`, and the count is printed.
Out: `<out>/<index:05d>/{metadata.jsonl, samples/*.png}` (GenEval layout) + `<out>/selection.jsonl` (per prompt: the
kept seeds and every judged candidate's verdict). When every prompt lies in the GenEval-Shapes world the folder is
scored with the exact evaluator (`results.jsonl`, `summary.json`) and the summary printed.

The real GenEval prompts (`geneval/evaluation_metadata.jsonl` of the shared folder, COCO classes) work too, with a judge that
can read them (`vlm`/`clip` with `--judge-path`): the layout is then written but NOT scored — scoring COCO images
needs the official GenEval tool (Mask2Former detector + CLIP colour classifier: `evaluation/evaluate_images.py`
`<out> --outfile results.jsonl --model-path <detector>`, then `summary_scores.py`). The oracle judge (our
evaluator) and the tiny judge (GenEval-Shapes vocabulary) cannot judge COCO prompts: a clear error before any compute.
"""
from __future__ import annotations

import json
from pathlib import Path

# Heavy project imports (torch, diffusers, MLflow, Prefect behind them) live inside the functions: `sana15` imports
# every command module to build its parser (import time is the reason).

JUDGES = ("tiny", "oracle", "clip", "vlm")


def register(subparsers):
    p = subparsers.add_parser("geneval", help="best-of-N GenEval: generate N, pick k with a judge, write (+ score) "
                                              "the GenEval layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder (SanaPipeline layout + sana15.json)")
    p.add_argument("--prompts", required=True, help="GenEval metadata JSONL (GenEval-Shapes split or the real file)")
    p.add_argument("--n", type=int, default=4, help="candidates per prompt N (default 4)")
    p.add_argument("--k", type=int, default=4, help="images kept per prompt (GenEval: 4)")
    p.add_argument("--judge", choices=JUDGES, default="tiny", help="judge of the knockout (default tiny)")
    p.add_argument("--judge-path", default=None, help="judge folder (tiny: models/judge; clip/vlm: local model)")
    p.add_argument("--out", required=True, help="output folder (GenEval layout); replaced atomically")
    p.add_argument("--seed", type=int, default=0,
                   help="first seed; candidate j of every prompt uses seed + j (GenEval)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--max-prompts", type=int, default=0, help="tag-stratified subset of the prompts (0 = all)")
    p.add_argument("--reserved", default=None, help="prompts never scored: a judge folder or its training_prompts.jsonl "
                                                    "(default: --judge-path's training_prompts.jsonl, if present)")
    p.set_defaults(func=run)


def _world_for(model: Path):
    """The GenEval-Shapes world the model was trained in (sana15.json "world", written by every stage), else the
    full world at the model's image size."""
    from sana_core.geneval.world import world_config, world_from_dict
    meta_file = model / "sana15.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if isinstance(meta.get("world"), dict):
        return world_from_dict(meta["world"])
    size = meta.get("image_size", 64)
    return world_config(64 if int(size) not in (32, 64) else int(size))


def reserved_prompts(args) -> set[str]:
    """The prompts a judge trained on (sana_core.judges.base.training_prompts): `--reserved`, else the
    `--judge-path` folder's training_prompts.jsonl when it exists, else none."""
    from sana_core.judges.base import TRAINING_PROMPTS_FILE, training_prompts
    if args.reserved:
        return training_prompts(args.reserved)
    if args.judge_path and (Path(args.judge_path) / TRAINING_PROMPTS_FILE).is_file():
        return training_prompts(args.judge_path)
    return set()


def run(args) -> int:
    from sana_core.geneval.layout import read_metadata_jsonl, write_prompt_folder
    from sana_core.geneval.score import check_metadata_world, score_folder
    from sana_core.geneval.splits import stratified
    from sana_core.sample import check_model_dir

    # ---- every check before loading/generating anything
    model = check_model_dir(args.model)
    if args.n < 1 or args.k < 1:
        raise ValueError(f"--n and --k must be ≥ 1 (got --n {args.n}, --k {args.k})")
    metas = read_metadata_jsonl(args.prompts)
    reserved = reserved_prompts(args)
    kept = [m for m in metas if m["prompt"] not in reserved]
    if reserved:
        print(f"dropped {len(metas) - len(kept)} of {len(metas)} prompts: the judge trained on them ({len(reserved)} "
              f"reserved)")
    metas = stratified(kept, args.max_prompts)
    if not metas:
        raise ValueError(f"{args.prompts}: no prompts" + (" outside the reserved set" if reserved else ""))
    world = _world_for(model)
    in_world = True
    for i, m in enumerate(metas):
        try:
            check_metadata_world(m, world, f"{args.prompts}: prompt {i}")
        except ValueError as e:
            if args.judge == "oracle":
                raise ValueError(f"--judge oracle: the oracle is the GenEval-Shapes evaluator and cannot judge this "
                                 f"prompt ({e}); use --judge vlm or clip with --judge-path") from None
            in_world = False
    judge_needed = args.n > args.k
    if args.judge == "tiny" and judge_needed:
        from sana_core.judges.tiny import parse_prompt
        for i, m in enumerate(metas):
            try:
                parse_prompt(m["prompt"])
            except ValueError as e:
                raise ValueError(f"--judge tiny: {args.prompts}: prompt {i}: {e}; the tiny judge reads GenEval-Shapes "
                                 f"prompts only (use --judge vlm or clip for COCO prompts)") from None
    if args.judge in ("tiny", "clip", "vlm") and judge_needed and not args.judge_path:
        raise ValueError(f"--judge-path is required for --judge {args.judge}")
    out = Path(args.out)

    from sana_core.atomic import atomic_dir
    from sana_core.geneval.procedure import generate_images, image_seeds
    from sana_core.judges import build_judge
    from sana_core.sample import load_sampler
    from sana_core.scaling import select, verdicts_from_decide

    judge = None
    if judge_needed:
        cfg = {"name": args.judge} if args.judge == "oracle" else {"name": args.judge, "path": args.judge_path}
        if args.judge == "oracle":
            cfg["world"] = world            # the model's world (sana15.json), as the scoring below
        judge = build_judge(cfg)
    sampler = load_sampler(model, steps=args.steps, guidance_scale=args.cfg)
    seeds = image_seeds(args.seed, args.n)

    def write(tmp: Path):
        rows = []
        for start, block, grid in generate_images(sampler, metas, args.seed, args.n):
            for i, m, imgs in zip(range(start, start + len(block)), block, grid):
                v = verdicts_from_decide(seeds, judge.decide(m["prompt"], imgs, m)) if judge is not None else {}
                sel = select(seeds, v, args.n, args.k)
                write_prompt_folder(tmp, i, m, list(imgs[sel]))
                rows.append({"index": i, "prompt": m["prompt"], "kept_seeds": [seeds[j] for j in sel],
                             "verdicts": {str(s): [x.yes, x.p_yes, x.p_no] for s, x in v.items()}})
        (tmp / "selection.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    atomic_dir(out, write)
    print(f"wrote {out}: {len(metas)} prompts × {min(args.k, args.n)} images (best of N={args.n}, judge "
          f"{args.judge if judge_needed else 'none (N ≤ k)'})")
    if in_world:
        _, summ = score_folder(out, world)
        print(json.dumps(summ, indent=1))
    else:
        print("not scored: these prompts are outside the GenEval-Shapes world; score the folder with the official "
              "GenEval tool (evaluation/evaluate_images.py + summary_scores.py)")
    return 0

"""`sana15 geneval-compare A/results.jsonl B/results.jsonl [--out agreement.json]`: per-image and per-task agreement
of two GenEval results files on the same images (e.g. `geneval-score --evaluator geneval` vs the official
evaluate_images.py); prints a task table and writes the full report (with every disagreeing image) as JSON."""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("geneval-compare", help="agreement of two GenEval results.jsonl files",
                              description=__doc__)
    p.add_argument("a", help="results.jsonl A (e.g. ours)")
    p.add_argument("b", help="results.jsonl B (e.g. the official tool's)")
    p.add_argument("--out", default=None, help="write the full report (JSON) here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sana_core.atomic import write_text_atomic
    from sana_core.geneval.agreement import compare_results, format_report

    rep = compare_results(args.a, args.b)
    print(format_report(rep))
    if args.out:
        write_text_atomic(args.out, json.dumps(rep, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0

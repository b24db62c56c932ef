"""`sana15 params`: choose and inspect parameter profiles (flows/params.py).

    sana15 params list                 profiles in profiles/ (tiny = default and schema)
    sana15 params use <profile>        validate profiles/tiny.yaml + profiles/<profile>.yaml, write params.yaml
    sana15 params check [FILE]         validate params.yaml (or FILE): every key's type, range, choices, folders;
                                       errors name the dotted key
    sana15 params show [--flat]        print the current params (dotted keys with --flat)
"""
from __future__ import annotations

import sys
from pathlib import Path

from flows import params as P


def _list(args) -> int:
    for name in P.available_profiles():
        d = P.read_yaml(P.PROFILES_DIR / f"{name}.yaml")
        print(f"{name:8s} {len(P.flatten(d)) if name != P.DEFAULT_PROFILE else 'schema'} "
              f"{'keys overridden' if name != P.DEFAULT_PROFILE else ''}".rstrip())
    return 0


def _use(args) -> int:
    path = P.use_profile(args.profile, args.root)
    print(f"{path}: profile {args.profile!r} ({len(P.flatten(P.load(args.root, validate_=False)))} keys, validated)")
    try:  # the folders it names (paper: /models/...) are checked where it runs
        P.load(args.root)
    except ValueError as e:
        print(f"sana15 params: note: {e} — edit {path} before running", file=sys.stderr)
    return 0


def _check(args) -> int:
    path = Path(args.file) if args.file else Path(args.root) / P.PARAMS_FILE
    try:
        P.validate(P.read_yaml(path), root=args.root)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    print(f"{path}: ok")
    return 0


def _show(args) -> int:
    d = P.load(args.root, validate_=False)
    if args.flat:
        for k, v in P.flatten(d).items():
            print(f"{k} = {v!r}")
    else:
        import yaml

        print(yaml.safe_dump(d, sort_keys=False, default_flow_style=None).rstrip())
    return 0


def register(sub) -> None:
    p = sub.add_parser("params", help="choose/inspect parameter profiles (params.yaml)",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--root", default=".", help="project root holding params.yaml (default: .)")
    s = p.add_subparsers(dest="params_cmd", required=True)
    s.add_parser("list", help="list profiles").set_defaults(func=_list)
    u = s.add_parser("use", help="write profiles/<profile> (merged onto tiny, validated) to params.yaml")
    u.add_argument("profile")
    u.set_defaults(func=_use)
    c = s.add_parser("check", help="validate params.yaml or FILE")
    c.add_argument("file", nargs="?")
    c.set_defaults(func=_check)
    sh = s.add_parser("show", help="print params")
    sh.add_argument("--flat", action="store_true", help="dotted keys")
    sh.set_defaults(func=_show)

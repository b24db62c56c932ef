"""`sana15` command line. Each subcommand lives in `flows/commands/<name>.py` and exposes `register(subparsers)`;
`register` adds a parser and sets `func=` to a callable taking the parsed args and returning an exit code."""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit code 2, no traceback."""


def version() -> str:
    """The installed distribution's version (pyproject.toml); a bare checkout on PYTHONPATH says so."""
    from importlib.metadata import PackageNotFoundError, version as dist_version
    try:
        return dist_version("sana15")
    except PackageNotFoundError:
        return "(not installed: source checkout)"


def build_parser() -> argparse.ArgumentParser:
    from flows import commands

    p = argparse.ArgumentParser(prog="sana15", description="SANA-1.5 efficient-scaling pipeline (GenEval-Shapes on CPU).")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"flows.commands.{mod}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.stage_runner import log_to_stderr
    log_to_stderr()   # progress lines of long commands (generate, geneval) when stderr is not a terminal
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"sana15 {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

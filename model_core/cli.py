"""Command line: ``python -m model_core COMMAND ...``.

Each command lives next to the code it drives and registers itself through ``add_parser``;
commands whose module is missing are simply not offered.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

# (module relative to this package, attribute) of each command's ``add_parser(subparsers)``;
# order = help order.
COMMANDS = [
    (".info", "add_parser"),
    (".inference.cli", "add_parser"),
    (".training.cli", "add_parser"),
    (".bench", "add_parser"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_core",
                                     description="FCtL ultra-high-resolution segmentation engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module, attr in COMMANDS:
        try:
            mod = importlib.import_module(module, __package__)
        except ModuleNotFoundError as exc:
            if exc.name and importlib.util.resolve_name(module, __package__).startswith(exc.name):
                continue  # that part of the engine is not installed in this build
            raise
        getattr(mod, attr)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .inference.heap import keep_freed_memory

    keep_freed_memory()   # this is our own process: every command runs the network
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:   # OSError: unreadable input blocks
        print(f"error: {exc}", file=sys.stderr)
        return 2

"""The ``m2f-med`` console command.

One module per subcommand (``inspect_cmd``, ``convert_cmd``, ``predict_cmd``), each exposing
``add_parser(subparsers)`` that registers its arguments and sets ``func``. The CLI holds no logic of its
own: it parses arguments, calls the library, and turns a ``VolumeError`` into one line on stderr and exit
code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from m2f_med import __version__

__all__ = ["main", "build_parser"]

SUBCOMMAND_MODULES = ("inspect_cmd", "convert_cmd", "predict_cmd", "pacs_cmd")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand whose module is importable."""
    parser = argparse.ArgumentParser(prog="m2f-med", description="Mask2Former for CT and MRI volumes.")
    parser.add_argument("--version", action="version", version=f"m2f-med {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"m2f_med.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"m2f_med.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``m2f-med`` console script. Returns the process exit code."""
    from m2f_med.io.errors import VolumeError
    from m2f_med.threads import prepare_environment

    prepare_environment()  # before any command imports torch: waiting OpenMP threads must not spin

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except VolumeError as err:
        print(f"m2f-med: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # missing/unwritable paths, an output that is a folder, a full disk, ...
        print(f"m2f-med: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("m2f-med: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The xr2ct command line.

Every command reports a user's mistake (a bad manifest row, an unreadable file, a full disk)
as one line naming the file and the problem, exits non-zero, and leaves no partial file;
``xr2ct --debug COMMAND ...`` shows the traceback instead.

``main`` (here) runs a command and turns its error into that line; ``parser`` builds the
argument parser; the commands live by what they do, each with its options: ``data_commands``
(validate-manifest, prepare), ``train_commands`` (train, add-stages), ``generate_command``
(generate), ``book_commands`` (run-notebooks, reader-kit, reader-score); ``common`` holds what
they share.
"""

from __future__ import annotations

import os
import sys

from xr2ct_lib.cli.common import UserError
from xr2ct_lib.cli.parser import COMMAND_ORDER, build_parser

__all__ = [
    "COMMAND_ORDER",
    "EXPECTED_ERRORS",
    "UserError",
    "build_parser",
    "describe_error",
    "main",
]


def describe_error(e: BaseException) -> str:
    """One line (one per problem for a manifest) naming the file and what is wrong."""
    from xr2ct_lib.data.io import DataError
    from xr2ct_lib.data.manifest import ManifestError

    if isinstance(e, ManifestError):
        return "\n".join(str(p) for p in e.problems)
    from xr2ct_lib.files import FileError
    from xr2ct_lib.generation.volume import GenerateError
    from xr2ct_lib.models.bundle import StaleBundleError

    if isinstance(e, FileError | DataError | UserError | GenerateError | StaleBundleError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror}"
    if isinstance(e, FileNotFoundError | NotADirectoryError | PermissionError):
        return str(e)  # raised with a message that names the file
    if isinstance(e, MemoryError):
        return "out of memory; try a smaller profile or fewer --workers"
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


EXPECTED_ERRORS = (OSError, ValueError, RuntimeError, MemoryError, UserError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    debug = args.debug or os.environ.get("XR2CT_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"xr2ct {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"xr2ct {args.command}: error: {describe_error(e)}", file=sys.stderr)
        if not isinstance(e, EXPECTED_ERRORS):
            print("(an unexpected error: `xr2ct --debug ...` shows where)", file=sys.stderr)
        return 1

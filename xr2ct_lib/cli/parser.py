"""The ``xr2ct`` argument parser: the top-level options and every command's sub-parser, listed
in the order a new cohort needs them. Each command's options live beside its code."""

from __future__ import annotations

import argparse

from xr2ct_lib import __version__
from xr2ct_lib.cli import book_commands, data_commands, generate_command, train_commands
from xr2ct_lib.cli.common import HelpFormatter

DESCRIPTION = """\
xr2ct: the X-ray2CTPA book's command line. A 3D latent diffusion model turns one chest
X-ray into a CT pulmonary angiogram; these commands take a cohort (a manifest CSV, one row
per patient) from its files to trained models and generated volumes.

Paths given on the command line are taken from the current directory; paths inside a
manifest are taken from the manifest's folder."""

EPILOG = """\
Run `xr2ct COMMAND --help` for a command's options and defaults.
Your own cohort, step by step: README.md, section "Bring your own cohort"."""

# the order a user needs the commands in; commands added elsewhere follow in any order
COMMAND_ORDER = (
    "validate-manifest",
    "prepare",
    "train",
    "add-stages",
    "pretrain-clot-reader",
    "pretrain-cxr-reader",
    "generate",
    "run-notebooks",
    "reader-kit",
    "reader-score",
)

COMMAND_MODULES = (data_commands, train_commands, generate_command, book_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xr2ct", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"xr2ct {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (or XR2CT_DEBUG=1)"
    )
    sub = parser.add_subparsers(
        dest="command", title="commands (in the order a new cohort needs them)", metavar="COMMAND"
    )
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error")  # fmt: skip

    def command(name: str, summary: str, description: str):
        return sub.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=HelpFormatter,
            parents=[debug],
        )

    for module in COMMAND_MODULES:
        module.add_commands(sub, command)
    rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
    # argparse lists commands in the order they were added; list them in the user's order
    sub._choices_actions.sort(key=lambda a: rank.get(a.dest, len(rank)))
    return parser

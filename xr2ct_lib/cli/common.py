"""What every command module shares: the one-line user error, paths, the help format and the
--manifest/--profile/--run-dir options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xr2ct_lib.config import PROFILES


class UserError(Exception):
    """A mistake in how a command was called, reported as one line."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks; adds '(default: ...)' to options that have one."""

    def __init__(self, prog, indent_increment=2, max_help_position=28, width=None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):  # count the commands' indent too
            longest = max((len(a.dest) for a in action._choices_actions), default=0)
            indent = self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest + indent)

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "%(default)" in text
            or "default:" in text
            or not action.option_strings
            or any(action.default is v for v in (None, False, argparse.SUPPRESS))
        ):
            return text
        return f"{text} (default: %(default)s)"


def default_run_dir(profile: str) -> Path:
    from xr2ct_lib.config import REPO_ROOT

    return REPO_ROOT / "runs" / profile


def optional_path(value: str | None, option: str = "a path option") -> Path | None:
    """A path from the command line: from the current directory, ``~`` expanded; None when
    not given; an empty one (``--out ""``) is a :class:`UserError` naming ``option``."""
    if value is None:
        return None
    if not value.strip():
        raise UserError(f'{option} is empty (""): give a file or folder name')
    return Path(value).expanduser().resolve()


MAX_SEED = 2**32 - 1


def seed_arg(text: str) -> int:
    """``--seed``: a whole number from 0 to 2**32 - 1 (every RNG of the library takes it)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from 0 to {MAX_SEED}")
    return value


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (an interval, a count)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number ≥ 1")
    return value


def say(msg: str) -> None:
    print(f">> {msg}", file=sys.stderr, flush=True)


def add_profile(p) -> None:
    p.add_argument(
        "--profile",
        default="workshop",
        choices=sorted(PROFILES),
        help="sizes and budgets: smoke (CI), workshop (a laptop), paper (a GPU)",
    )


def add_cohort(p, run_dir_help: str) -> None:
    """--manifest, --profile and --run-dir, as every command on a cohort takes them."""
    p.add_argument(
        "--manifest", default=None, help="cohort manifest CSV (default: the embedded cohort)"
    )
    add_profile(p)
    p.add_argument("--run-dir", default=None, help=run_dir_help)

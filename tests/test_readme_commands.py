"""Every command of README's "Bring your own cohort" is a real command line: each ``xr2ct``
call (and the ``xr2ct_lib.cli`` one under ``accelerate launch``) parses with the options the
CLI has. What they do on a cohort is tested in test_cli, test_train_cli, test_generate_cli.
"""

from __future__ import annotations

import re
import shlex

from xr2ct_lib.cli import build_parser
from xr2ct_lib.config import REPO_ROOT


def _section_commands() -> list[list[str]]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Bring your own cohort", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split("|")[0])
            if words and words[0] == "xr2ct":
                commands.append(words[1:])
            elif "xr2ct_lib.cli" in words:  # accelerate launch -m xr2ct_lib.cli ...
                commands.append(words[words.index("xr2ct_lib.cli") + 1 :])
    return commands


def test_readme_cohort_commands_parse():
    commands = _section_commands()
    names = [c[0] for c in commands]
    for name in ("validate-manifest", "prepare", "train", "generate", "run-notebooks"):
        assert name in names, name
    assert names.count("train") == 2 and names.count("generate") == 3
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)  # exits (status 2) on an option the CLI lacks
        assert args.command == argv[0]

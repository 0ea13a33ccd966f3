"""Re-render the tables of a reproduction page's "## Tables so far" section from the commands the page shows.

    python benchmark/reproduction/refresh_tables.py benchmark/reproduction/lunarlander.md

Each `### ...` part of that section holds a ```bash block of `python plots/tables.py ...` commands; everything after
the block, up to the next heading, is replaced by the commands' outputs, in order. Run it after committing a run's
results, so the page's tables are its data's (tests/test_reproduction.py checks that they are).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Tables so far"
PART = re.compile(r"(### [^\n]*\n\n```bash\n(.*?)```\n)(.*?)(?=\n##|\Z)", re.S)


def tables_section(page: str) -> str:
    start = page.index(SECTION)
    end = page.find("\n## ", start + len(SECTION))
    return page[start:] if end < 0 else page[start:end]


def render(command: str) -> str:
    """What `command` (a `python plots/tables.py ...` line, run from the repository root, globs expanded as a shell
    would) prints."""
    from plots import tables

    argv = []
    for word in shlex.split(command)[2:]:
        argv += sorted(glob.glob(word)) if "*" in word else [word]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        tables.main(argv)
    return out.getvalue().strip()


def refresh(page: str) -> str:
    section = tables_section(page)

    def part(match: re.Match) -> str:
        commands = [line for line in match.group(2).splitlines() if line.startswith("python plots/tables.py ")]
        return match.group(1) + "\n" + "\n\n".join(render(command) for command in commands) + "\n"

    return page.replace(section, PART.sub(part, section))


def main(argv: list[str] | None = None) -> int:
    paths = [Path(path) for path in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        raise SystemExit("usage: refresh_tables.py PAGE.md [PAGE.md ...]")
    paths = [path.resolve() for path in paths]
    os.chdir(REPO)  # the commands name the data from the repository root
    sys.path.insert(0, str(REPO))
    for path in paths:
        text = path.read_text()
        if SECTION not in text:
            raise SystemExit(f"{path}: no '{SECTION}' section")
        path.write_text(refresh(text))
        print(f"refreshed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

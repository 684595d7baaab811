"""Copy the benchmark tables into README.md, so README numbers always come from result files.

README.md marks each table with a pair of comments naming a Markdown file under
``benchmarks/results/``; everything between the pair is replaced by that file's contents::

    <!-- results: simulate.md -->
    (generated)
    <!-- /results -->

Usage:
    python benchmarks/update_readme.py          # rewrite README.md
    python benchmarks/update_readme.py --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(
    r"(<!-- results: (?P<name>[\w.\-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S
)


def _demote_headings(markdown: str) -> str:
    """Results files start at level-1 headings; inside the README they sit below level 3."""
    def deeper(match: re.Match[str]) -> str:
        return "#" * min(len(match.group(1)) + 3, 6) + " "

    return re.sub(r"^(#+) ", deeper, markdown, flags=re.M)


def render(readme: str) -> str:
    """README text with every results block refreshed from its file."""

    def fill(match: re.Match[str]) -> str:
        path = RESULTS / match.group("name")
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (run its benchmark first)")
        body = _demote_headings(path.read_text().strip()) + "\n"
        return f"{match.group(1)}{body}{match.group(4)}"

    return BLOCK.sub(fill, readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that README is current")
    args = parser.parse_args()
    readme_path = ROOT / "README.md"
    current = readme_path.read_text()
    updated = render(current)
    if args.check:
        if updated != current:
            print("README.md tables are out of date: run benchmarks/update_readme.py")
            return 1
        return 0
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())

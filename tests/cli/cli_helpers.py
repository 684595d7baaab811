"""Running the CLI in-process and checking its one-line errors."""

from __future__ import annotations

from lowdose.cli.main import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``lowdose ARGV``."""
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(rc: int, err: str, *needles: str) -> None:
    """A failed run printed exactly one ``error:`` line (containing ``needles``), no traceback."""
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]

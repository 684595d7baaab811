"""``lowdose data phantom OUT`` and ``lowdose data audit DIR``: built-in data and dataset audit."""

from __future__ import annotations

from pathlib import Path

import typer

from lowdose.errors import LowdoseError


def _window(text: str):
    from lowdose.image import NAMED_WINDOWS, Window

    text = text.strip()
    if text in NAMED_WINDOWS:
        return Window.named(text)
    try:
        lo, hi = (float(v) for v in text.split(","))
        return Window(lo, hi)
    except ValueError:
        raise LowdoseError(
            f"--window {text!r}: expected 'lo,hi' in HU (e.g. -1350,150) or one of "
            f"{', '.join(sorted(NAMED_WINDOWS))}"
        ) from None


def phantom(
    out: Path = typer.Argument(..., help="New folder for the dataset (Kaggle layout)."),
    n: int = typer.Option(400, "--n", min=1, help="Number of slices, classes balanced."),
    size: int = typer.Option(256, "--size", min=32, help="Pixels per side (350 mm field of view)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same data."),
    fmt: str = typer.Option("png", "--format", help="png (8-bit through --window) or npy (HU)."),
    window: str = typer.Option(
        "lung", "--window", help="HU window of the PNGs: a name or 'lo,hi' (lung = -1350,150)."
    ),
    splits: str = typer.Option("0.7,0.1,0.2", "--splits", help="train,valid,test fractions."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a phantom dataset already in OUT (nothing else)."
    ),
) -> None:
    """Write built-in phantom chest CT slices as OUT/{train,valid,test}/<class>/.

    Example: lowdose data phantom data/phantom --n 400 --size 256 --format png
    """
    from lowdose.io.phantom import write_phantom_dataset

    try:
        fractions = tuple(float(v) for v in splits.split(","))
    except ValueError:
        raise LowdoseError(
            f"--splits {splits!r}: expected three fractions like 0.7,0.1,0.2"
        ) from None
    meta_path = write_phantom_dataset(
        out, n=n, size=size, seed=seed, splits=fractions, fmt=fmt.lower(), window=_window(window),
        overwrite=overwrite, progress=True,
    )
    import json

    meta = json.loads(meta_path.read_text())
    per_split = {s: sum(c.values()) for s, c in meta["counts"].items()}
    typer.echo(
        f"wrote {meta['n']} phantom slices ({meta['size']}x{meta['size']}, "
        f"{meta['pixel_spacing_mm'][0]:.3f} mm, {meta['format']}) to {out}: "
        + ", ".join(f"{s} {k}" for s, k in per_split.items())
    )
    typer.echo(f"metadata: {meta_path}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` group (``phantom``, ``audit``) to app."""
    group = typer.Typer(help="Datasets: built-in phantom data, duplicate audit and manifests.",
                        no_args_is_help=True)
    group.command("phantom")(phantom)
    app.add_typer(group, name="data")

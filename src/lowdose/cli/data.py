"""``lowdose data phantom OUT`` and ``lowdose data audit DIR``: built-in data and dataset audit."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import typer

from lowdose.cli.options import parse_window
from lowdose.errors import LowdoseError
from lowdose.io.datasets import CLASSES

# The class folders every dataset command accepts, for their help texts (from the constant
# the reader checks against, so the help cannot drift from it).
CLASS_FOLDERS = ("{train,valid,test}/<class>/ with <class> one of " + ", ".join(CLASSES)
                 + " (a staging suffix such as _left.lower.lobe_T2_N0_M0_Ib is stripped; "
                 "other classes are refused)")


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show library warnings as ``warning: ...`` lines on stderr, not Python's format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)


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
    with _warnings_as_lines():
        meta_path = write_phantom_dataset(
            out, n=n, size=size, seed=seed, splits=fractions, fmt=fmt.lower(),
            window=parse_window(window), overwrite=overwrite, progress=True,
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
    for split, fraction in zip(meta["counts"], fractions, strict=True):
        missing = [c for c, k in meta["counts"][split].items() if k == 0]
        if fraction > 0 and missing:  # a split asked for, too small to hold every class
            which = ("any class" if len(missing) == len(meta["counts"][split])
                     else ", ".join(missing))
            typer.echo(f"warning: split {split} holds no slice of {which} (--n {meta['n']} "
                       "splits each class by --splits on its own: give a larger --n)", err=True)


def _outside(path: Path | None, folder: Path, option: str) -> None:
    if path is None:
        return
    target, base = path.resolve(), folder.resolve()
    if target == base or base in target.parents:
        raise LowdoseError(f"{option} {path}: inside the audited folder {folder}; the input "
                           "is never modified, write it elsewhere")
    if target.is_dir():
        raise LowdoseError(f"{option} {path}: is a folder; give a file name")
    from lowdose.io.atomic import check_output_place

    check_output_place(path)  # before the audit (minutes on a large set): a file in the way


def audit(
    folder: Path = typer.Argument(..., help=f"Dataset folder of images: {CLASS_FOLDERS}."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report as JSON."),
    manifest: Path | None = typer.Option(
        None, "--write-manifest", help="Write the de-duplicated split as CSV path,label,split."
    ),
    phash_max: int = typer.Option(12, "--phash-max", min=0, max=64,
                                  help="Near duplicates: largest pHash distance (bits)."),
    detail_corr_min: float = typer.Option(0.80, "--detail-corr-min",
                                          help="Near duplicates: least detail correlation."),
    mad_max: float = typer.Option(3.0, "--mad-max",
                                  help="Near duplicates: largest mean grey difference (0-255)."),
) -> None:
    """Find exact and near-duplicate images within and across splits and classes.

    Prints a summary; --json writes every group, --write-manifest a de-duplicated split (a
    test image seen in train leaves test; images filed under two classes are dropped).

    Example: lowdose data audit ../shared/data/chest-ctscan-images --json audit.json
    --write-manifest manifest.csv
    """
    from lowdose.io.audit import NearDuplicateRule, audit_dataset

    _outside(json_out, folder, "--json")
    _outside(manifest, folder, "--write-manifest")
    rule = NearDuplicateRule(phash_max=phash_max, detail_corr_min=detail_corr_min,
                             mad_max=mad_max)
    with _warnings_as_lines():
        result = audit_dataset(folder, rule=rule, progress=True)
    typer.echo(result.summary())
    if json_out is not None:
        typer.echo(f"report: {result.write_json(json_out)}")
    if manifest is not None:
        typer.echo(f"manifest: {result.write_manifest(manifest)} ({len(result.kept)} rows)")


def register(app: typer.Typer) -> None:
    """Add the ``data`` group (``phantom``, ``audit``) to app."""
    group = typer.Typer(help="Datasets: built-in phantom data, duplicate audit and manifests.",
                        no_args_is_help=True)
    group.command("phantom")(phantom)
    group.command("audit")(audit)
    app.add_typer(group, name="data")

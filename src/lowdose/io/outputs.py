"""Where a run's outputs may go, checked before the work, and a run over many inputs that goes
on past a bad one: what ``denoise``, ``upscale`` and ``simulate`` share about their outputs."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from lowdose.errors import LowdoseError


def refuse_output_inside_input(src: Path, dst: Path) -> None:
    """Raise when ``dst`` lies in an input folder: inside ``src`` (a rerun would read its own
    outputs as inputs), inside the folder a symlink under ``src`` leads to, or, for a DICOM
    file, inside the folder of its series (a second series mixed into it).

    Example:
        >>> refuse_output_inside_input(Path("pngs"), Path("pngs/restored"))  # doctest: +SKIP
        Traceback (most recent call last):
        LowdoseError: pngs/restored: is inside the input folder pngs; write next to it
    """
    out = dst.resolve()
    if src.is_dir():
        folders = _input_folders(src)
        for folder in folders:
            if out == folder or folder in out.parents:
                where = ("the input folder" if folder == folders[0]
                         else "a folder the input's symlinks lead to,")
                raise LowdoseError(f"{dst}: is inside {where} {folder}; write next to it, not "
                                   "into it (a rerun would read the outputs as inputs)")
        return
    folder = src.resolve().parent
    # Only a DICOM output (a file, or a series folder) joins the series when the folder is read
    # again; a NIfTI, npy or PNG beside it is skipped there.
    from lowdose.io.formats.dicom import DICOM_SUFFIXES
    from lowdose.io.read import IMAGE_FILE_SUFFIXES

    non_dicom = tuple(s for s in IMAGE_FILE_SUFFIXES if s not in DICOM_SUFFIXES)
    if dst.name.lower().endswith(non_dicom):
        return
    if folder in out.parents and _holds_other_dicom(folder, src.resolve()):
        raise LowdoseError(
            f"{dst}: is inside the folder of the input's DICOM series ({folder}); a derived "
            "series there mixes with it; write next to that folder")


def _input_folders(src: Path) -> list[Path]:
    """``src`` resolved, and the folders its symlinks lead to: a linked folder, or the folder
    of a linked DICOM file (its series, read as a whole); a linked image of another kind adds
    nothing (no output beside it is read with it)."""
    folders = [src.resolve()]
    for path in src.rglob("*"):
        if not path.is_symlink() or not path.exists():
            continue
        target = path.resolve()
        if target.is_dir():
            folder = target
        elif _is_dicom(target):
            folder = target.parent
        else:
            continue
        if folder not in folders:
            folders.append(folder)
    return folders


def _holds_other_dicom(folder: Path, file: Path) -> bool:
    """Whether ``folder`` holds a DICOM file besides ``file``, itself a DICOM file."""
    if not _is_dicom(file):
        return False
    return any(_is_dicom(path) for path in folder.iterdir()
               if not path.name.startswith(".") and path.is_file() and path.resolve() != file)


def _is_dicom(path: Path) -> bool:
    """A DICOM file by its suffix, else by its content (an unreadable one is not)."""
    from lowdose.io.formats.common import sniff
    from lowdose.io.formats.dicom import DICOM_SUFFIXES

    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        return sniff(path) == "dicom"
    except LowdoseError:
        return False


def check_outputs(root: Path, outputs: list[Path], folders: bool = False,
                  expected: Callable[[Path], bool] | None = None) -> None:
    """Before a run over many inputs: each output's name and folder can be written
    (:func:`lowdose.io.atomic.check_output_place`), and a warning where ``root`` already holds
    files the run will not write (an older run's: they stay, mixed with the new outputs).
    ``folders``: each output is a folder (a series), all the files under it its own;
    ``expected``: older files (by their path under ``root``) that are no strays.

    Raises:
        LowdoseError: ``root`` is a file, or an output cannot be written.

    Example:
        >>> check_outputs(Path("out"), [Path("out/a/1.png")])  # doctest: +SKIP
    """
    from lowdose.io.atomic import check_output_place

    if root.exists() and not root.is_dir():
        raise LowdoseError(f"{root}: exists and is not a folder; a tree of outputs needs one")
    for out in outputs:
        check_output_place(out)
    older = [p for p in older_files(root, outputs, folders)
             if expected is None or not expected(p.relative_to(root))]
    if older:
        warnings.warn(
            f"{root}: {len(older)} older file(s) this run does not write stay there (e.g. "
            f"{older[0].relative_to(root).as_posix()}), mixed with its outputs; remove them or "
            "write to a new folder", stacklevel=3)


def older_files(root: Path, outputs: Iterable[Path], folders: bool = False) -> list[Path]:
    """The files under ``root`` (hidden ones left out) that are none of ``outputs`` nor, with
    ``folders``, inside one of them.

    Example:
        >>> older_files(Path("no-such-folder"), [])
        []
    """
    if not root.is_dir():
        return []
    own = {os.path.normpath(p) for p in outputs}
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.is_dir():
            continue
        if os.path.normpath(path) in own:
            continue
        if folders and any(os.path.normpath(p) in own for p in path.parents):
            continue
        found.append(path)
    return found


class SkippedInputs:
    """A run over several inputs goes on past one that fails (a half-copied or unreadable
    file): each is warned about, and :meth:`finish` raises one error counting them.

    Example:
        >>> said = []
        >>> skipped = SkippedInputs(3, Path("out"), said.append)
        >>> skipped.add(LowdoseError("in/b0.png: empty file"))
        >>> said
        ['skipped in/b0.png: empty file']
        >>> try:
        ...     skipped.finish()
        ... except LowdoseError as exc:
        ...     print(exc)
        1 of 3 inputs failed (first: in/b0.png: empty file); the other 2 were written under out
    """

    def __init__(self, total: int, root: Path, warn: Callable[[str], None] | None = None
                 ) -> None:
        self.total, self.root = total, root
        self.warn = warn or (lambda m: warnings.warn(m, stacklevel=3))
        self.failed: list[str] = []

    def add(self, exc: LowdoseError) -> None:
        """Record and warn about one failed input."""
        self.failed.append(str(exc))
        self.warn(f"skipped {exc}")

    def finish(self) -> None:
        """Raise :class:`LowdoseError` if any input failed."""
        if not self.failed:
            return
        n, first = len(self.failed), self.failed[0]
        if n == self.total:
            raise LowdoseError(f"all {n} inputs failed (first: {first}); nothing written")
        raise LowdoseError(f"{n} of {self.total} inputs failed (first: {first}); the other "
                           f"{self.total - n} were written under {self.root}")


def refuse_output_over_inputs(out: Path, inputs: Iterable[Path], option: str = "") -> None:
    """Before the work: raise when the output ``out`` is one of ``inputs`` or lies inside an
    input folder (a report written over a scan, or into its series), or cannot be written
    there (:func:`lowdose.io.atomic.check_output_place`: a file where a folder must be, a
    folder this process may not write). ``option`` names the output in the message.

    Example:
        >>> refuse_output_over_inputs(Path("s.json"), [Path("fd.nii.gz")])
        >>> refuse_output_over_inputs(Path("fd.nii.gz"), [Path("fd.nii.gz")], "--json")
        Traceback (most recent call last):
        ...
        lowdose.errors.LowdoseError: --json fd.nii.gz: is an input; write it elsewhere
    """
    from lowdose.io.atomic import check_output_place

    name = f"{option} {out}" if option else str(out)
    target = out.resolve()
    for source in inputs:
        resolved = source.resolve()
        if target == resolved:
            raise LowdoseError(f"{name}: is an input; write it elsewhere")
        if source.is_dir() and resolved in target.parents:
            raise LowdoseError(f"{name}: is inside the input folder {source}; write it "
                               "elsewhere")
    check_output_place(out)


def warn_skipped_files(root: Path, taken: list[Path]) -> None:
    """Warn once about the files under ``root`` a run over its images leaves out (a
    ``README.txt``, a ``Thumbs.db``; hidden files are no news), as a DICOM folder's skipped
    files are said.

    Example:
        >>> warn_skipped_files(Path("no-such-folder"), [])
    """
    if not root.is_dir():
        return
    own = set(taken)
    others = sorted(p for p in root.rglob("*") if p.is_file() and p not in own
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if others:
        shown = ", ".join(p.relative_to(root).as_posix() for p in others[:3])
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        warnings.warn(f"{root}: skipped {len(others)} file(s) that are not images ({shown}"
                      f"{more})", stacklevel=3)


def run_each(jobs: list[tuple[Path, Callable[[], object]]],
             work: Callable[[Path, Callable[[], object]], Path], root: Path,
             warn: Callable[[str], None] | None = None, bar: str | None = None) -> list[Path]:
    """``work(output, read)`` for each job, the written paths; with several jobs (a tree,
    ``--series all``) a failing one is skipped and counted (:class:`SkippedInputs`), the
    others written. ``bar``: the description of one progress bar over the jobs (a tree of
    images, where a bar of each image's slices would flash by, one after another).

    Example:
        >>> run_each([(Path("a.png"), lambda: None)], lambda out, read: out, Path("."))
        [PosixPath('a.png')]
    """
    skipped = SkippedInputs(len(jobs), root, warn) if len(jobs) > 1 else None
    written = []
    shown = None
    if bar is not None:
        from tqdm import tqdm

        shown = tqdm(total=len(jobs), desc=bar, unit="image")
    try:
        for out, read in jobs:
            try:
                written.append(work(out, read))
            except LowdoseError as exc:
                if skipped is None:
                    raise
                skipped.add(exc)
            if shown is not None:
                shown.update(1)
    finally:
        if shown is not None:
            shown.close()
    if skipped is not None:
        skipped.finish()
    return written

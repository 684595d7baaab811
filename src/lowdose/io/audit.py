"""Dataset audit: exact and near-duplicate images within and across splits and classes.

``audit_dataset(root)`` decodes every image of a class-folder dataset once and finds

- **exact duplicates**: identical decoded grey pixels (so a PNG re-saved as JPEG-free RGB, or
  RGBA with an opaque alpha, of the same picture counts; byte-identical files are reported
  too);
- **near duplicates**: the same picture resized, re-encoded, cropped by a pixel or two (a crop
  of 1% a side, 5 px of 512, is missed) or with a little noise. Candidates come from a 64-bit
  DCT perceptual hash (pHash: 32x32 grey thumbnail, 8x8 lowest DCT frequencies against their
  median) within Hamming distance
  :attr:`NearDuplicateRule.phash_max`; a candidate is a near duplicate only when its fine detail
  agrees too (correlation of the high-pass 128x128 thumbnails >= ``detail_corr_min``) and
  its 64x64 grey thumbnails differ by at most ``mad_max`` grey levels on average.

Why the second test: chest CT slices share their layout, so pHash alone puts different
patients and adjacent slices of one scan within a few bits of each other. On the Kaggle
Chest CT-Scan images the 41 true copies (checked by eye: re-saves, resizes, re-crops, one with
a line drawn on it) have pHash distance <= 4, detail correlation >= 0.84 and mean difference
<= 1.9 grey levels; every other candidate pair (different patients, adjacent slices of one
scan) has detail correlation <= 0.76 and none has a mean difference below 3.4.

Exact and near matches are merged into groups (connected components). The de-duplicated
manifest keeps one image per group: a group spread over splits keeps its copy in the earliest
split (train, then valid, then test), so a test image seen in train leaves the test split;
within that split the largest image (most pixels) is kept. A group filed under more than one
class has no trustworthy label: all its copies are dropped, from every split, and reported.

Example:
    >>> result = audit_dataset("../shared/data/chest-ctscan-images")  # doctest: +SKIP
    >>> result.n_files, result.n_unique  # doctest: +SKIP
    (1000, 847)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.io.datasets import (
    SPLITS,
    DatasetItem,
    absolute,
    scan_class_folders,
    write_manifest,
)
from lowdose.io.formats.png import COLOUR_SHARE

THUMB = 64
DETAIL = 128


@dataclass(frozen=True)
class NearDuplicateRule:
    """When two different images count as the same picture (see the module docstring).

    Attributes:
        phash_max: largest pHash Hamming distance (of 64 bits) for a candidate pair.
        detail_corr_min: least correlation of the high-pass (detail) 128x128 thumbnails.
        mad_max: largest mean absolute difference of the 64x64 grey thumbnails (0-255).
    """

    phash_max: int = 12
    detail_corr_min: float = 0.80
    mad_max: float = 3.0


@dataclass
class AuditFile:
    """One decoded image: where it is and its fingerprints."""

    path: str  # relative to the audited folder, POSIX separators
    split: str
    label: str
    folder: str
    format: str
    mode: str
    width: int
    height: int
    byte_hash: str
    pixel_hash: str
    phash: int
    colour: float = 0.0  # share of coloured pixels (marks on a grey screenshot)


@dataclass
class NearPair:
    a: int
    b: int
    phash_distance: int
    detail_correlation: float
    mean_abs_diff: float


@dataclass
class Drop:
    index: int
    reason: str  # cross-split | within-split | label-conflict
    kept: int | None


@dataclass
class AuditResult:
    """Everything the audit found; :meth:`to_json` and :meth:`summary` report it."""

    root: Path
    files: list[AuditFile]
    unreadable: list[tuple[str, str]]
    exact_groups: list[list[int]]
    groups: list[list[int]]
    near_pairs: list[NearPair]
    rule: NearDuplicateRule
    kept: list[int]
    dropped: list[Drop]

    @property
    def n_files(self) -> int:
        return len(self.files) + len(self.unreadable)

    @property
    def n_unique(self) -> int:
        """Readable images with distinct decoded pixels (exact copies counted once)."""
        return len({f.pixel_hash for f in self.files})

    @property
    def n_unique_near(self) -> int:
        """Readable images left when exact and near copies count once."""
        return len(self.groups)

    def rel(self, index: int) -> str:
        return self.files[index].path

    def where(self, index: int) -> str:
        f = self.files[index]
        return f"{f.split}/{f.label}"

    def manifest_items(self) -> list[DatasetItem]:
        """The de-duplicated split: one item per kept image, path relative to the root."""
        return [DatasetItem(Path(self.files[i].path), self.files[i].label, self.files[i].split)
                for i in self.kept]

    def write_manifest(self, path: str | Path) -> Path:
        return write_manifest(self.manifest_items(), path)

    # -- reporting -------------------------------------------------------------------------
    def _copies_in(self, groups: list[list[int]]) -> dict[int, Counter]:
        """For each file, how many other split/class places hold a copy of it."""
        out: dict[int, Counter] = {}
        for g in groups:
            places = {self.where(i) for i in g}
            for i in g:
                others = Counter(self.where(j) for j in g if j != i)
                own = self.where(i)
                # A copy in its own folder is a within-folder duplicate, not "seen elsewhere".
                out[i] = Counter({p: 1 for p in places if p != own and others[p]})
        return out

    def _overlap(self, groups: list[list[int]]) -> dict[str, int]:
        """``"test_in_train": n``: files of one split with a copy in another split."""
        counts: dict[str, int] = {}
        for a in SPLITS:
            for b in SPLITS:
                if a == b:
                    continue
                n = 0
                for g in groups:
                    if any(self.files[j].split == b for j in g):
                        n += sum(1 for i in g if self.files[i].split == a)
                counts[f"{a}_in_{b}"] = n
        return counts

    def _split_class_table(self) -> dict[str, dict[str, dict]]:
        exact_in = self._copies_in(self.exact_groups)
        any_in = self._copies_in(self.groups)
        kept = set(self.kept)
        table: dict[str, dict[str, dict]] = {}
        for i, f in enumerate(self.files):
            row = table.setdefault(f.split, {}).setdefault(f.label, {
                "files": 0, "unique": set(), "kept": 0,
                "with_exact_copy_in": Counter(), "with_copy_in": Counter()})
            row["files"] += 1
            row["unique"].add(f.pixel_hash)
            row["kept"] += i in kept
            row["with_exact_copy_in"].update(exact_in.get(i, Counter()))
            row["with_copy_in"].update(any_in.get(i, Counter()))
        for split in table.values():
            for row in split.values():
                row["unique"] = len(row["unique"])
                row["with_exact_copy_in"] = dict(sorted(row["with_exact_copy_in"].items()))
                row["with_copy_in"] = dict(sorted(row["with_copy_in"].items()))
        order = {s: k for k, s in enumerate(SPLITS)}
        return {s: dict(sorted(table[s].items())) for s in sorted(table, key=order.get)}

    def _kind(self, group: list[int]) -> str:
        """``exact`` (one image's copies), ``near`` (no two identical) or ``exact and near``
        (identical copies among near ones: called ``near`` before, which hid the exact)."""
        copies = Counter(self.files[i].pixel_hash for i in group)
        if len(copies) == 1:
            return "exact"
        return "exact and near" if max(copies.values()) > 1 else "near"

    def cross_split_groups(self) -> list[list[int]]:
        return [g for g in self.groups if len({self.files[i].split for i in g}) > 1]

    def cross_class_groups(self) -> list[list[int]]:
        return [g for g in self.groups if len({self.files[i].label for i in g}) > 1]

    def to_json(self) -> dict:
        """A JSON-ready dict (paths relative to the audited folder)."""
        def paths(g: list[int]) -> list[str]:
            return sorted(self.rel(i) for i in g)

        def describe(g: list[int]) -> dict:
            return {"paths": paths(g), "kind": self._kind(g),
                    "splits": sorted({self.files[i].split for i in g}, key=SPLITS.index),
                    "labels": sorted({self.files[i].label for i in g})}

        near_groups = [g for g in self.groups if len(g) > 1 and self._kind(g) != "exact"]
        per_split = Counter(f.split for f in self.files)
        per_class = Counter(f.label for f in self.files)
        drops = Counter(d.reason for d in self.dropped)
        kept_table: dict[str, dict[str, int]] = {}
        for i in self.kept:
            f = self.files[i]
            kept_table.setdefault(f.split, {}).setdefault(f.label, 0)
            kept_table[f.split][f.label] += 1
        return {
            "root": str(self.root),
            "n_files": self.n_files,
            "n_readable": len(self.files),
            "n_unique": self.n_unique,
            "n_unique_bytes": len({f.byte_hash for f in self.files}),
            "n_unique_near": self.n_unique_near,
            "n_redundant": len(self.files) - self.n_unique,
            "n_redundant_near": len(self.files) - self.n_unique_near,
            "definitions": {
                "n_unique": "readable images with distinct decoded grey pixels",
                "n_unique_near": "readable images left when exact and near copies count once",
                "duplicate_groups": "images with identical decoded pixels (exact duplicates)",
                "near_duplicate_groups": "groups joined by at least one near-duplicate match "
                                         "(with their exact copies)",
            },
            "near_duplicate_rule": {
                "method": "candidates: 64-bit DCT pHash (32x32 grey, 8x8 low frequencies vs "
                          "median) within phash_max bits; confirmed when the high-pass "
                          "128x128 thumbnails correlate >= detail_corr_min and the 64x64 grey "
                          "thumbnails differ by <= mad_max grey levels on average",
                **asdict(self.rule),
            },
            "duplicate_groups": [paths(g) for g in self.exact_groups],
            "near_duplicate_groups": [paths(g) for g in near_groups],
            "near_duplicate_pairs": [
                {"a": self.rel(p.a), "b": self.rel(p.b), "phash_distance": p.phash_distance,
                 "detail_correlation": round(p.detail_correlation, 4),
                 "mean_abs_diff": round(p.mean_abs_diff, 3)} for p in self.near_pairs],
            "cross_split_groups": [describe(g) for g in self.cross_split_groups()],
            "cross_class_groups": [describe(g) for g in self.cross_class_groups()],
            "overlap_exact": self._overlap(self.exact_groups),
            "overlap": self._overlap(self.groups),
            "per_split": {s: per_split[s] for s in SPLITS if per_split[s]},
            "per_class": dict(sorted(per_class.items())),
            "per_split_class": self._split_class_table(),
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "manifest": {
                "rows": len(self.kept),
                "per_split_class": kept_table,
                "dropped": {"cross_split": drops["cross-split"],
                            "within_split": drops["within-split"],
                            "label_conflict": drops["label-conflict"],
                            "unreadable": len(self.unreadable)},
                "rules": "one image per group; a group over several splits keeps its copy in "
                         "the earliest of train, valid, test (a test image seen in train leaves "
                         "test); within a split the largest image is kept; groups filed under "
                         "several classes are dropped from every split",
            },
            "dropped": [{"path": self.rel(d.index), "reason": d.reason,
                         "kept": None if d.kept is None else self.rel(d.kept)}
                        for d in self.dropped],
        }

    def summary(self) -> str:
        """A few lines for people: counts, overlaps, conflicts, what the manifest keeps."""
        js = self.to_json()
        per_split = ", ".join(f"{s} {n}" for s, n in js["per_split"].items())
        rule = self.rule
        lines = [
            f"audit of {self.root}: {js['n_files']} files ("
            + ("readable: " if self.unreadable else "") + per_split + ")"
            + (f", {len(self.unreadable)} unreadable" if self.unreadable else ""),
            f"  exact duplicates: {len(self.exact_groups)} groups, {js['n_redundant']} redundant"
            f" files -> {js['n_unique']} unique images",
            f"  near duplicates: {len(self.near_pairs)} matches (pHash <= {rule.phash_max} bits,"
            f" detail corr >= {rule.detail_corr_min}, mean diff <= {rule.mad_max}) -> "
            f"{js['n_unique_near']} unique when near copies count once "
            f"({js['n_redundant_near']} redundant)",
        ]
        ov, ovx = js["overlap"], js["overlap_exact"]
        for a, b in (("test", "train"), ("valid", "train"), ("test", "valid")):
            n_a = js["per_split"].get(a, 0)
            if n_a and ov[f"{a}_in_{b}"]:
                lines.append(f"  {a} images with a copy in {b}: {ov[f'{a}_in_{b}']} of {n_a}"
                             f" ({ovx[f'{a}_in_{b}']} exact)")
        for split, classes in js["per_split_class"].items():
            for label, row in classes.items():
                for place, n in row["with_copy_in"].items():
                    if SPLITS.index(place.split("/")[0]) < SPLITS.index(split):
                        lines.append(f"    {split}/{label}: {n} of {row['files']} have a copy in"
                                     f" {place} ({row['with_exact_copy_in'].get(place, 0)} exact)")
        for g in self.cross_class_groups():
            lines.append(f"  filed under {len({self.files[i].label for i in g})} classes "
                         f"({self._kind(g)}): " + " = ".join(sorted(self.rel(i) for i in g))
                         + " -> all copies dropped from the manifest")
        m = js["manifest"]
        kept = ", ".join(f"{s} {sum(c.values())}" for s, c in m["per_split_class"].items())
        d = m["dropped"]
        lines.append(f"  manifest: {m['rows']} images kept ({kept}); dropped {d['cross_split']} "
                     f"seen in an earlier split, {d['within_split']} repeated within a split, "
                     f"{d['label_conflict']} with conflicting labels"
                     + (f", {d['unreadable']} unreadable" if d["unreadable"] else ""))
        marked = [f for f in self.files if f.colour >= COLOUR_SHARE]
        if marked:  # grey conversion makes the marks HU the classifier sees
            lines.append(f"  colour marks (an annotation line?) on {len(marked)} images, e.g. "
                         + ", ".join(f.path for f in marked[:3]) + ": read as grey levels")
        # A split missing or emptied by the dedup: training or the study fails on it later.
        for split in SPLITS:
            n_files = js["per_split"].get(split, 0)
            n_kept = sum(m["per_split_class"].get(split, {}).values())
            # Without valid images, training holds out a share of train instead.
            needed = ("the study needs a train and a test split" if split != "valid" else
                      "training holds out a share of train instead")
            if n_files == 0:
                lines.append(f"  warning: no {split} images: {needed}")
            elif n_kept == 0:
                lines.append(f"  warning: the manifest keeps none of the {n_files} {split} "
                             f"images (all copies of others or unreadable): {needed}")
        for p, reason in self.unreadable[:5]:
            lines.append(f"  unreadable: {p}: {reason}")
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> Path:
        from lowdose.io.atomic import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")


# -- decoding and fingerprints ------------------------------------------------------------

def _grey_image(path: Path):
    """Decode any image Pillow reads (content sniffed, not the suffix) to 8-bit grey.

    Returns ``(grey PIL image, exact-content array, format, mode, share of coloured
    pixels)``.
    """
    from PIL import Image, UnidentifiedImageError

    from lowdose.io.formats.png import colour_share

    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise LowdoseError(f"not a readable .npy array ({exc})") from None
        arr = np.squeeze(arr)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise LowdoseError(f"expected a 2D numeric array, got {arr.dtype} {arr.shape}")
        if not np.isfinite(arr).all():
            raise LowdoseError("array holds NaN or inf")
        from lowdose.image import Window

        # Float arrays are HU slices (phantom npy): thumbnails through the lung window.
        unit = Window.named("lung").to_unit(arr) if arr.dtype.kind == "f" else (
            (arr - arr.min()) / max(float(np.ptp(arr)), 1e-6))
        grey = Image.fromarray(np.round(unit * 255).astype(np.uint8), mode="L")
        return grey, np.ascontiguousarray(arr), "NPY", str(arr.dtype), 0.0
    try:
        with Image.open(path) as im:
            im.load()
            fmt, mode = im.format or "?", im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im)
                unit = (arr.astype(np.float64) - arr.min()) / max(float(np.ptp(arr)), 1e-6)
                return (Image.fromarray(np.round(unit * 255).astype(np.uint8), mode="L"),
                        np.ascontiguousarray(arr), fmt, mode, 0.0)
            colour = colour_share(im)
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                grey = Image.alpha_composite(black, rgba).convert("L")
            else:
                grey = im.convert("L")
    except UnidentifiedImageError:
        raise LowdoseError("not an image Pillow can decode") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise LowdoseError(f"corrupt or truncated image ({exc})") from None
    return grey, np.asarray(grey), fmt, mode, colour


def phash64(grey) -> int:
    """64-bit DCT perceptual hash of a grey PIL image (bits: 8x8 low frequencies > median).

    Example:
        >>> from PIL import Image
        >>> img = Image.fromarray((np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8))
        >>> phash64(img) == phash64(img.resize((100, 100)))
        True
    """
    from PIL import Image
    from scipy.fft import dctn

    a = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), np.float64)
    low = dctn(a, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low)
    return int(np.packbits(bits).view(">u8")[0])


def _fingerprint(path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    from PIL import Image
    from scipy import ndimage

    grey, content, fmt, mode, colour = _grey_image(path)
    h = hashlib.sha256()
    h.update(f"{content.dtype.str}{content.shape}".encode())
    h.update(content.tobytes())
    # Lanczos, not box: a copy resized to fewer pixels than the thumbnail must still match.
    thumb = np.asarray(grey.resize((THUMB, THUMB), Image.Resampling.LANCZOS), np.uint8)
    fine = np.asarray(grey.resize((DETAIL, DETAIL), Image.Resampling.LANCZOS), np.float32)
    detail = fine - ndimage.gaussian_filter(fine, 2.0)
    detail = (detail - detail.mean()) / max(float(detail.std()), 1e-6)
    info = {"format": fmt, "mode": mode, "width": grey.width, "height": grey.height,
            "byte_hash": hashlib.sha256(path.read_bytes()).hexdigest(),
            "pixel_hash": h.hexdigest(), "phash": phash64(grey), "colour": round(colour, 5)}
    return info, thumb, detail.astype(np.float16)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def _near_pairs(hashes: np.ndarray, thumbs: np.ndarray, details: np.ndarray,
                rule: NearDuplicateRule, chunk: int = 2048) -> list[NearPair]:
    """Pairs (i < j) of the given images that the rule calls the same picture."""
    n = len(hashes)
    pairs: list[NearPair] = []
    for start in range(0, n, chunk):
        block = hashes[start:start + chunk]
        dist = _popcount(block[:, None] ^ hashes[None, :])
        ii, jj = np.nonzero(dist <= rule.phash_max)
        ii = ii + start
        keep = jj > ii
        ii, jj = ii[keep], jj[keep]
        if ii.size == 0:
            continue
        d = dist[ii - start, jj]
        for lo in range(0, ii.size, 4096):  # bounded memory for the pair features
            a, b = ii[lo:lo + 4096], jj[lo:lo + 4096]
            corr = np.einsum("nij,nij->n", details[a].astype(np.float32),
                             details[b].astype(np.float32)) / float(DETAIL * DETAIL)
            mad = np.abs(thumbs[a].astype(np.float32) - thumbs[b].astype(np.float32)).mean((1, 2))
            ok = (corr >= rule.detail_corr_min) & (mad <= rule.mad_max)
            for k in np.flatnonzero(ok):
                pairs.append(NearPair(int(a[k]), int(b[k]), int(d[lo + k]), float(corr[k]),
                                      float(mad[k])))
    return pairs


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _select(files: list[AuditFile], groups: list[list[int]]) -> tuple[list[int], list[Drop]]:
    """The manifest rules: which image of each group stays, and why the others go."""
    kept: list[int] = []
    dropped: list[Drop] = []
    for g in groups:
        if len({files[i].label for i in g}) > 1:
            dropped.extend(Drop(i, "label-conflict", None) for i in g)
            continue
        first = min(SPLITS.index(files[i].split) for i in g)
        home = [i for i in g if SPLITS.index(files[i].split) == first]
        keeper = max(home, key=lambda i: (files[i].width * files[i].height, -i))
        kept.append(keeper)
        for i in g:
            if i == keeper:
                continue
            reason = "within-split" if files[i].split == files[keeper].split else "cross-split"
            dropped.append(Drop(i, reason, keeper))
    order = {s: k for k, s in enumerate(SPLITS)}
    kept.sort(key=lambda i: (order[files[i].split], files[i].path))
    dropped.sort(key=lambda d: files[d.index].path)
    return kept, dropped


def audit_dataset(
    root: str | Path,
    rule: NearDuplicateRule | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> AuditResult:
    """Find exact and near-duplicate images in a class-folder dataset (see the module doc).

    Args:
        root: the dataset folder, ``{train,valid,test}/<class>/`` inside.
        rule: the near-duplicate thresholds (defaults chosen on the Kaggle chest CT images).
        progress: ``True`` for a progress bar on stderr (when it is a terminal).
        workers: decoding threads (default: up to 8, one per CPU).

    Returns:
        An :class:`AuditResult`; unreadable files are listed there, never fatal.

    Raises:
        LowdoseError: missing or empty folder, no images, unknown class folder.
    """
    rule = rule or NearDuplicateRule()
    root = Path(root)
    items = scan_class_folders(root)
    base = absolute(root)
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    def work(item: DatasetItem):
        try:
            return _fingerprint(item.path)
        except LowdoseError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot read ({exc.strerror or exc})"

    n_workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(n_workers) as pool:
        results = list(tqdm(pool.map(work, items), total=len(items), desc="audit",
                            unit="image", disable=None if progress else True, leave=False))

    files: list[AuditFile] = []
    thumbs: list[np.ndarray] = []
    details: list[np.ndarray] = []
    unreadable: list[tuple[str, str]] = []
    for item, res in zip(items, results, strict=True):
        rel = item.path.relative_to(base).as_posix()
        if isinstance(res, str):
            unreadable.append((rel, res))
            continue
        info, thumb, detail = res
        files.append(AuditFile(path=rel, split=item.split, label=item.label,
                               folder=item.path.parent.name, **info))
        thumbs.append(thumb)
        details.append(detail)
    if not files:
        raise LowdoseError(f"{root}: none of the {len(items)} image files could be decoded "
                           f"(e.g. {unreadable[0][0]}: {unreadable[0][1]})")

    # Exact groups: identical decoded pixels.
    by_pixels: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        by_pixels[f.pixel_hash].append(i)
    exact = list(by_pixels.values())
    reps = np.array([g[0] for g in exact])
    hashes = np.array([files[i].phash for i in reps], np.uint64)
    rep_pairs = _near_pairs(hashes, np.stack(thumbs)[reps], np.stack(details)[reps], rule)

    uf = _UnionFind(len(files))
    for g in exact:
        for i in g[1:]:
            uf.union(g[0], i)
    near_pairs = []
    for p in rep_pairs:
        a, b = int(reps[p.a]), int(reps[p.b])
        uf.union(a, b)
        near_pairs.append(NearPair(a, b, p.phash_distance, p.detail_correlation, p.mean_abs_diff))
    comps: dict[int, list[int]] = defaultdict(list)
    for i in range(len(files)):
        comps[uf.find(i)].append(i)
    groups = sorted((sorted(g, key=lambda i: files[i].path) for g in comps.values()),
                    key=lambda g: files[g[0]].path)
    exact_groups = sorted((sorted(g, key=lambda i: files[i].path) for g in exact if len(g) > 1),
                          key=lambda g: files[g[0]].path)
    kept, dropped = _select(files, groups)
    return AuditResult(root=root, files=files, unreadable=unreadable, exact_groups=exact_groups,
                       groups=groups, near_pairs=near_pairs, rule=rule, kept=kept,
                       dropped=dropped)

"""DICOM reading and derived-series writing on tiny series made here with pydicom."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from lowdose import CTImage, LowdoseError
from lowdose.io import list_series, read_ct, write_ct
from lowdose.io.formats.dicom import MixedSeriesError

COMPRESSED = (RLELossless, JPEG2000Lossless, JPEGLosslessSV1)


def jpeg_lossless_sv1(img: np.ndarray, precision: int) -> bytes:
    """A greyscale frame as JPEG Lossless, first-order prediction (ITU-T T.81 annex H, SV1).

    One Huffman table gives every difference category (SSSS 0..16) a 5-bit code.
    """
    h, w = img.shape
    x = img.astype(np.int64)
    out = bytearray()
    acc, nbits = 0, 0

    def put(value: int, n: int) -> None:
        nonlocal acc, nbits
        acc = (acc << n) | (value & ((1 << n) - 1))
        nbits += n
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        acc &= (1 << nbits) - 1

    for r in range(h):
        for c in range(w):
            if r == 0 and c == 0:
                pred = 1 << (precision - 1)
            elif c == 0:
                pred = int(x[r - 1, 0])
            else:
                pred = int(x[r, c - 1])
            d = (int(x[r, c]) - pred) & 0xFFFF
            if d >= 0x8000:
                d -= 0x10000
            ssss = 16 if d == -0x8000 else abs(d).bit_length()
            put(ssss, 5)
            if 0 < ssss < 16:
                put(d if d > 0 else d - 1, ssss)
    if nbits:
        put(0x7F, 8 - nbits)  # pad with 1-bits
    bits = [0] * 16
    bits[4] = 17

    def seg(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    sof = bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    dht = bytes([0x00, *bits, *range(17)])
    sos = bytes([1, 1, 0x00, 1, 0, 0])
    return b"\xff\xd8" + seg(0xC3, sof) + seg(0xC4, dht) + seg(0xDA, sos) + bytes(out) + b"\xff\xd9"


def ct_slice(
    path: Path,
    hu: np.ndarray,
    *,
    z: float = 0.0,
    instance: int = 1,
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    description: str = "TEST SERIES",
    iop: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    intercept: float = -1024.0,
    slope: float = 1.0,
    unsigned: bool = True,
    syntax: str = ExplicitVRLittleEndian,
    pixels: bool = True,
    bad_private_tag: bool = False,
) -> Path:
    """Write one CT slice holding ``hu`` (stored = (hu - intercept) / slope) at position ``z``
    along the slice normal of ``iop``."""
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = np.cross(row, col)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if syntax in COMPRESSED else syntax
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "P001"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesDescription = description
    ds.SeriesNumber = 3
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.InstanceNumber = instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.ImagePositionPatient = [float(v) for v in (np.array([-100.0, -80.0, 0.0]) + z * normal)]
    ds.PixelSpacing = list(pixel_spacing)
    ds.SliceThickness = 2.0
    if pixels:
        stored = np.round((hu - intercept) / slope)
        dtype = np.uint16 if unsigned else np.int16
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16 if not unsigned else 12
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = slope
        ds.PixelData = stored.astype(dtype).tobytes()
    if bad_private_tag:
        # Like the itkelastix files: ELSCINT1 Pitch (FD in pydicom's private dictionary) holding
        # 4 bytes "0.15"; stored implicit VR, so a reader takes the dictionary's FD and fails.
        ds.add_new(0x01F10010, "LO", "ELSCINT1")
        ds.add_new(0x01F11026, "UN", b"0.15")
    if syntax == JPEGLosslessSV1:  # pydicom has no encoder for it: ours, above
        ds.file_meta.TransferSyntaxUID = syntax
        frame = jpeg_lossless_sv1(stored.astype(np.uint16), int(ds.BitsStored))
        ds.add_new(0x7FE00010, "OB", encapsulate([frame]))
    elif syntax in COMPRESSED:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def phantom_volume(n: int = 5, size: int = 16, seed: int = 0) -> np.ndarray:
    """Integer HU slices, each with a distinct level so slice order is checkable."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(-1000, 1500, size=(n, size, size)).astype(np.float32)
    vol[:, 0, 0] = np.arange(n) * 10.0 - 900.0  # slice k marked by HU at (0, 0)
    return vol


def make_series(
    folder: Path, vol: np.ndarray, *, spacing: float = 2.0, reverse_files: bool = False, **kw
) -> Path:
    """One file per slice; file numbers rise with z unless ``reverse_files`` (then they fall,
    as in the itkelastix set); files are written in shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(vol)
    order = list(range(n))
    random.Random(1).shuffle(order)
    for k in order:
        number = n - k if reverse_files else k + 1
        ct_slice(folder / f"IM{number:03d}.dcm", vol[k], z=-50.0 + k * spacing, instance=number,
                 **kw)  # fmt: skip
    return folder


def test_series_sorted_by_position_with_shuffled_files_and_negative_spacing(tmp_path):
    vol = phantom_volume()
    folder = make_series(tmp_path / "s", vol, reverse_files=True)
    img = read_ct(folder)
    assert img.shape == vol.shape
    np.testing.assert_array_equal(img.hu, vol)  # z ascending: slice 0 is the lowest z
    assert img.spacing == pytest.approx((2.0, 0.8, 0.7))
    assert img.origin == pytest.approx((-100.0, -80.0, -50.0))
    np.testing.assert_allclose(img.direction, np.eye(3))
    assert img.metadata["series_description"] == "TEST SERIES"
    assert img.metadata["slice_order"].startswith("position along the slice normal")
    names = [Path(f).name for f in img.metadata["files"]]
    assert names == [f"IM{5 - k:03d}.dcm" for k in range(5)]
    assert len(img.source_headers) == 5


def test_series_with_negative_normal_orientation_sorts_along_the_normal(tmp_path):
    # Rows along -x: the normal is -z, so ascending along the normal means z descending.
    vol = phantom_volume(4)
    folder = make_series(tmp_path / "s", vol, iop=(-1, 0, 0, 0, 1, 0))
    img = read_ct(folder)
    np.testing.assert_array_equal(img.hu, vol)
    assert img.direction[:, 2] == pytest.approx([0, 0, -1])


def test_sorting_falls_back_to_instance_number_without_positions(tmp_path):
    vol = phantom_volume(3)
    folder = make_series(tmp_path / "s", vol)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    img = read_ct(folder)
    np.testing.assert_array_equal(img.hu, vol)
    assert img.metadata["slice_order"].startswith("InstanceNumber")


def test_single_file_is_2d_with_rescale_applied(tmp_path):
    hu = phantom_volume(1)[0]
    path = ct_slice(tmp_path / "one.dcm", hu, intercept=-1000.0, slope=0.5, unsigned=False)
    img = read_ct(path)
    assert img.shape == hu.shape and not img.is_volume
    np.testing.assert_allclose(img.hu, hu)
    assert img.spacing == (0.8, 0.7)
    assert img.metadata["rescale"] == [0.5, -1000.0]


@pytest.mark.parametrize("syntax", COMPRESSED, ids=["rle", "jpeg2000", "jpeg-lossless"])
def test_compressed_transfer_syntaxes_decode_through_plugins(tmp_path, syntax):
    hu = phantom_volume(1, size=64)[0]
    path = ct_slice(tmp_path / "c.dcm", hu, syntax=syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    img = read_ct(path)
    np.testing.assert_array_equal(img.hu, hu)
    assert img.metadata["transfer_syntax"] == syntax.name


def test_implicit_vr_and_malformed_private_tag_do_not_crash(tmp_path):
    vol = phantom_volume(3)
    folder = make_series(tmp_path / "s", vol, syntax=ImplicitVRLittleEndian, bad_private_tag=True)
    img = read_ct(folder)
    np.testing.assert_array_equal(img.hu, vol)
    str(img.source_headers[0])  # walking every element raised before the fix
    out = write_ct(img, tmp_path / "derived")
    np.testing.assert_array_equal(read_ct(out).hu, vol)


def test_non_dicom_files_skipped_with_warning_and_listed(tmp_path):
    vol = phantom_volume(3)
    folder = make_series(tmp_path / "s", vol)
    (folder / "info").mkdir()
    (folder / "info" / "capture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (folder / "README.txt").write_text("notes")
    (folder / ".DS_Store").write_bytes(b"\0\0")
    (folder / "cut.dcm").write_bytes(b"")  # a copy that never finished
    with pytest.warns(UserWarning, match="skipped"):
        img = read_ct(folder)
    assert img.shape == (3, 16, 16)
    skipped = {d["file"]: d["reason"] for d in img.metadata["skipped"]}
    assert set(skipped) == {"info/capture.png", "README.txt", ".DS_Store", "cut.dcm"}
    assert skipped["info/capture.png"].startswith("not DICOM")
    assert skipped["cut.dcm"] == "empty file"  # was "not DICOM (unknown file)"


def test_a_media_export_with_a_dicomdir_reads_its_series(tmp_path):
    """A CD/USB export (DICOMDIR + the files it lists) was refused: the DICOMDIR read as a
    corrupt DICOM (it has no SOPClassUID or Modality of its own)."""
    from pydicom.fileset import FileSet

    vol = phantom_volume(3)
    source = make_series(tmp_path / "s", vol)
    fs = FileSet()
    for f in sorted(source.iterdir()):
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.StudyID, ds.StudyDate, ds.StudyTime = "P1", "1", "20070101", "000000"
        fs.add(ds)
    export = tmp_path / "cd"
    fs.write(export)
    assert (export / "DICOMDIR").is_file()
    with pytest.warns(UserWarning, match="skipped"):
        img = read_ct(export)
    assert img.shape == (3, 16, 16)
    skipped = {d["file"]: d["reason"] for d in img.metadata["skipped"]}
    assert skipped == {"DICOMDIR": "DICOMDIR (the index of a media export; its images are read "
                                   "directly)"}


def test_mixed_series_error_names_them_and_series_picks_one(tmp_path):
    folder = tmp_path / "mixed"
    make_series(folder / "a", phantom_volume(3), series_uid="1.2.3.111", description="AX")
    make_series(folder / "b", phantom_volume(2, seed=2), series_uid="1.2.3.222", description="COR")
    with pytest.raises(MixedSeriesError, match=r"2 DICOM series.*--series.*1\.2\.3\.111 'AX'"):
        read_ct(folder)
    assert read_ct(folder, series="1.2.3.222").shape == (2, 16, 16)
    assert read_ct(folder, series="222").metadata["series_description"] == "COR"
    with pytest.raises(LowdoseError, match=r"'1\.2\.3\.999' is not here"):
        read_ct(folder, series="1.2.3.999")
    found = list_series(folder)
    assert [(s.uid, s.n_slices, s.orientation) for s in found] == [
        ("1.2.3.111", 3, "axial"),
        ("1.2.3.222", 2, "axial"),
    ]


def test_series_listing_puts_the_most_slices_first_counting_frames(tmp_path):
    # One 4-frame file against two single-frame files: the listing (error and info alike)
    # ranks by slices, not by files.
    folder = tmp_path / "mixed"
    make_series(folder / "two", phantom_volume(2), series_uid="1.2.3.222")
    path = ct_slice(folder / "multi.dcm", phantom_volume(1)[0], series_uid="1.2.3.444")
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 4
    ds.PixelData = np.tile(np.frombuffer(ds.PixelData, np.uint16), 4).tobytes()
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(MixedSeriesError) as raised:
        read_ct(folder)
    assert [(s.uid, s.n_slices) for s in raised.value.series] == [
        ("1.2.3.444", 4), ("1.2.3.222", 2)]
    assert str(raised.value).index("1.2.3.444") < str(raised.value).index("1.2.3.222")
    assert [s.uid for s in list_series(folder)] == ["1.2.3.444", "1.2.3.222"]


def test_read_ct_picking_uses_the_series_only_where_several_and_scans_once(tmp_path,
                                                                            monkeypatch):
    from lowdose.io.formats import dicom
    from lowdose.io.read import read_ct_picking

    mixed, single = tmp_path / "mixed", tmp_path / "single"
    make_series(mixed / "a", phantom_volume(3), series_uid="1.2.3.111")
    make_series(mixed / "b", phantom_volume(2, seed=2), series_uid="1.2.3.222")
    make_series(single, phantom_volume(4), series_uid="1.2.3.333")
    scans = []
    real_scan = dicom.scan_folder
    monkeypatch.setattr(dicom, "scan_folder", lambda f: scans.append(f) or real_scan(f))
    picked = read_ct_picking(mixed, "222")
    assert picked.metadata["series_uid"] == "1.2.3.222" and picked.shape == (2, 16, 16)
    np.testing.assert_array_equal(picked.hu, read_ct(mixed, series="222").hu)
    assert scans.count(mixed) == 2  # once for read_ct_picking, once for the plain read_ct
    assert read_ct_picking(single, "222").metadata["series_uid"] == "1.2.3.333"
    with pytest.raises(MixedSeriesError, match="2 DICOM series"):
        read_ct_picking(mixed, None)
    with pytest.raises(MixedSeriesError, match="'999' is not here"):
        read_ct_picking(mixed, "999")


def test_duplicate_instance_copies_are_kept_once(tmp_path):
    vol = phantom_volume(3)
    folder = make_series(tmp_path / "s", vol)
    (folder / "copy.dcm").write_bytes((folder / "IM002.dcm").read_bytes())
    with pytest.warns(UserWarning):
        img = read_ct(folder)
    assert img.shape == (3, 16, 16)
    assert any("same SOPInstanceUID" in d["reason"] for d in img.metadata["skipped"])


def test_orientation_labels(tmp_path):
    hu = phantom_volume(1)[0]
    ct_slice(tmp_path / "cor.dcm", hu, iop=(1, 0, 0, 0, 0, -1), series_uid="1.9.1")
    ct_slice(tmp_path / "sag.dcm", hu, iop=(0, 1, 0, 0, 0, -1), series_uid="1.9.2")
    assert {s.uid: s.orientation for s in list_series(tmp_path)} == {
        "1.9.1": "coronal",
        "1.9.2": "sagittal",
    }


def test_derived_series_round_trip_within_1hu_with_new_uids(tmp_path):
    vol = phantom_volume(4) + np.float32(0.3)  # fractional HU: rounding costs < 0.5 HU
    src = make_series(tmp_path / "in", np.round(vol), reverse_files=True)
    img = read_ct(src)
    restored = img.with_pixels(img.hu + np.float32(0.3))
    out = write_ct(restored, tmp_path / "in-denoised", description="denoised")
    back = read_ct(out)
    assert np.abs(back.hu - restored.hu).max() <= 0.5
    assert back.spacing == img.spacing and back.origin == pytest.approx(img.origin)
    files = sorted(out.iterdir())
    assert len(files) == 4
    originals = {pydicom.dcmread(f).SOPInstanceUID for f in src.iterdir()}
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SeriesInstanceUID != img.metadata["series_uid"]
        assert ds.SOPInstanceUID not in originals
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert ds.SeriesDescription == "TEST SERIES denoised"
        assert ds.StudyInstanceUID == img.metadata["study_uid"]
        assert ds.PatientID == "P001" and str(ds.PatientName) == "Test^Patient"
        assert ds.FrameOfReferenceUID == "1.2.826.0.1.3680043.8.498.3"
        assert ds.PixelRepresentation == 1 and ds.BitsAllocated == 16
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in originals
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1


def test_derived_series_refuses_the_input_folder_and_places_around_it(tmp_path):
    src = make_series(tmp_path / "in", phantom_volume(3))
    img = read_ct(src)
    before = {f.name: f.read_bytes() for f in src.iterdir()}
    for target in (src, src / "derived", tmp_path, src / "IM001.dcm"):
        with pytest.raises(LowdoseError, match="input"):
            write_ct(img, target)
    with pytest.raises(LowdoseError, match="input"):
        write_ct(img, str(src) + "/")
    assert {f.name: f.read_bytes() for f in src.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_existing_output_folder_replaced_only_when_it_holds_a_series(tmp_path):
    img = read_ct(make_series(tmp_path / "in", phantom_volume(3)))
    out = write_ct(img, tmp_path / "out")
    write_ct(img.with_pixels(img.hu + 5), out)  # a rerun replaces the earlier series
    assert len(list(out.iterdir())) == 3
    np.testing.assert_allclose(read_ct(out).hu, img.hu + 5)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(LowdoseError, match="holds other files"):
        write_ct(img, other)
    assert (other / "notes.txt").read_text() == "keep me"
    foreign = make_series(tmp_path / "foreign", phantom_volume(2))
    with pytest.raises(LowdoseError, match="lowdose did not write"):
        write_ct(img, foreign)
    assert len(list(foreign.iterdir())) == 2


def test_one_slice_dcm_and_non_dicom_source_make_a_minimal_valid_series(tmp_path):
    hu = np.linspace(-1000, 1000, 64 * 48, dtype=np.float32).reshape(64, 48)
    img = CTImage(hu, spacing=(0.5, 0.6), metadata={"format": "npy", "source": "x.npy"})
    path = write_ct(img, tmp_path / "slice.dcm", description="phantom")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "CT" and ds.SOPClassUID == CTImageStorage
    assert ds.PatientID.startswith("LOWDOSE-") and "new patient ID" in ds.DerivationDescription
    assert "spacing" not in ds.DerivationDescription  # this image states its spacing
    assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.6]
    back = read_ct(path)
    assert back.shape == hu.shape and np.abs(back.hu - hu).max() <= 0.5
    vol = CTImage(np.stack([hu, hu + 1, hu + 2]), spacing=(3.0, 0.5, 0.6))
    with pytest.raises(LowdoseError, match="one slice"):
        write_ct(vol, tmp_path / "vol.dcm")
    series = read_ct(write_ct(vol, tmp_path / "vol"))
    assert series.shape == (3, 64, 48) and series.spacing == pytest.approx((3.0, 0.5, 0.6))
    assert np.abs(series.hu - vol.hu).max() <= 0.5


def test_changed_shape_writes_geometry_from_the_image_but_keeps_patient_tags(tmp_path):
    img = read_ct(make_series(tmp_path / "in", phantom_volume(3)))
    half = img.with_pixels(img.hu[:, ::2, ::2], spacing=(2.0, 1.6, 1.4))
    back = read_ct(write_ct(half, tmp_path / "half"))
    assert back.shape == (3, 8, 8) and back.spacing == pytest.approx((2.0, 1.6, 1.4))
    ds = pydicom.dcmread(next((tmp_path / "half").iterdir()))
    assert ds.PatientID == "P001" and ds.StudyInstanceUID == img.metadata["study_uid"]


def test_series_folder_names_are_unique_folder_names() -> None:
    from lowdose.io.formats.dicom import SeriesInfo, series_folder_names

    def info(uid: str, description: str, number: int | None) -> SeriesInfo:
        return SeriesInfo(uid, description, 1, "CT", 8, 8, "axial", number, "1.2")

    names = series_folder_names([
        info("1.2.3.100", "CHEST 2.5 MM/ABD.PEL 2.5MM", 2),
        info("1.2.3.201", "Lung", 3),
        info("1.2.3.202", "Lung", 3),  # two series alike: their UIDs' ends keep them apart
        info("1.2.3.300", "", None),
        info("1.2.3.400", "  ", None),
        info("9.300", "", None),  # and where those end alike too, their positions
    ])
    assert names == ["2-CHEST_2_5_MM_ABD_PEL_2_5MM", "3-Lung-201", "3-Lung-202",
                     "series-300-4", "series-400", "series-300-6"]
    assert all("." not in n and "/" not in n for n in names)  # no suffix, no subfolder

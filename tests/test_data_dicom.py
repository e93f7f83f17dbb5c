"""DICOM reading on the real NIH chest X-rays and the real JPEG2000 CT series."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from fedaegis.shared.data import DataValidationError, load_dicom_folder, load_dicom_series, read_dicom_image
from fedaegis.shared.data.dicom import apply_window

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CXR_SITE = {"expected_modality": {"DX", "CR"}, "expected_body_part": {"CHEST"}}


def need(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def cxr(n: int) -> Path:
    return need("dicom", "nih_cxr", f"test{n}.dcm")


@pytest.fixture(scope="module")
def ct_files() -> list[Path]:
    return sorted(need("dicom", "ct_series", "example_ct_dicom").iterdir())


def z_of(path: Path) -> float:
    return float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])


# --- single images ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_good_chest_xrays_read(n: int) -> None:
    image = read_dicom_image(cxr(n), **CXR_SITE)
    raw = pydicom.dcmread(cxr(n)).pixel_array
    assert image.shape == (1024, 1024) and image.dtype == np.float32
    # 8-bit, no rescale, no window in the file: the full 8-bit range maps onto [0, 1].
    np.testing.assert_allclose(image, raw / 255.0, atol=1e-6)


def test_test4_rejected_for_ribcage_body_part() -> None:
    with pytest.raises(DataValidationError) as err:
        read_dicom_image(cxr(4), **CXR_SITE)
    assert "test4.dcm" in str(err.value)
    assert "BodyPartExamined" in str(err.value) and "RIBCAGE" in str(err.value)
    # Same pixels as test1; only the header is wrong, so without the check it reads.
    np.testing.assert_array_equal(read_dicom_image(cxr(4)), read_dicom_image(cxr(1)))


def test_test5_rejected_for_ct_modality() -> None:
    with pytest.raises(DataValidationError) as err:
        read_dicom_image(cxr(5), **CXR_SITE)
    assert "test5.dcm" in str(err.value)
    assert "Modality" in str(err.value) and "'CT'" in str(err.value)


def test_test6_rejected_for_patient_position_xx() -> None:
    with pytest.raises(DataValidationError) as err:
        read_dicom_image(cxr(6))
    assert "test6.dcm" in str(err.value)
    assert "PatientPosition" in str(err.value) and "'XX'" in str(err.value)


def test_expected_value_given_as_plain_string() -> None:
    read_dicom_image(cxr(1), expected_modality="DX")  # not split into {"D", "X"}
    with pytest.raises(DataValidationError, match="Modality"):
        read_dicom_image(cxr(5), expected_modality="DX")


def test_missing_header_tag_rejected(tmp_path: Path) -> None:
    ds = pydicom.dcmread(cxr(1))
    del ds.BodyPartExamined
    ds.save_as(tmp_path / "nobody.dcm")
    with pytest.raises(DataValidationError, match="BodyPartExamined \\(0018,0015\\) is missing"):
        read_dicom_image(tmp_path / "nobody.dcm", **CXR_SITE)


def test_truncated_file_is_corrupt(tmp_path: Path) -> None:
    raw = cxr(1).read_bytes()
    (tmp_path / "half.dcm").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataValidationError, match="half.dcm.*pixel data .* cannot be decoded"):
        read_dicom_image(tmp_path / "half.dcm")
    (tmp_path / "head.dcm").write_bytes(raw[:100])
    with pytest.raises(DataValidationError, match="head.dcm.*not a readable DICOM"):
        read_dicom_image(tmp_path / "head.dcm")


def test_text_file_named_dcm(tmp_path: Path) -> None:
    (tmp_path / "report.dcm").write_text("Findings: none. This is not DICOM.\n")
    with pytest.raises(DataValidationError, match="report.dcm.*not a readable DICOM"):
        read_dicom_image(tmp_path / "report.dcm")


def test_missing_file_and_missing_pixel_data(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file not found"):
        read_dicom_image(tmp_path / "absent.dcm")
    ds = pydicom.dcmread(cxr(1))
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(DataValidationError, match="nopixels.dcm.*missing pixel data"):
        read_dicom_image(tmp_path / "nopixels.dcm")


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ds = pydicom.dcmread(cxr(2))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    inverted = read_dicom_image(tmp_path / "mono1.dcm")
    np.testing.assert_allclose(inverted, 1.0 - read_dicom_image(cxr(2)), atol=1e-6)


def test_multiframe_file(tmp_path: Path, ct_files: list[Path]) -> None:
    frames = [pydicom.dcmread(f) for f in ct_files[:3]]
    stack = np.stack([ds.pixel_array for ds in frames])  # uint16, 12 bits stored
    ds = frames[0]
    ds.set_pixel_data(stack, "MONOCHROME2", 12)
    ds.save_as(tmp_path / "multi.dcm")
    assert int(pydicom.dcmread(tmp_path / "multi.dcm").NumberOfFrames) == 3
    image = read_dicom_image(tmp_path / "multi.dcm", window=None)
    assert image.shape == (3, 512, 512)
    # Full 12-bit range after rescale: -1024 .. 3071 HU onto [0, 1].
    np.testing.assert_allclose(image, stack / 4095.0, atol=1e-6)
    windowed = read_dicom_image(tmp_path / "multi.dcm", window=(40, 400))
    np.testing.assert_allclose(windowed, apply_window(stack - 1024.0, 40, 400), atol=1e-6)


def test_colour_dicom_returns_rgb(tmp_path: Path) -> None:
    ds = pydicom.dcmread(cxr(3))
    grey = ds.pixel_array[::16, ::16]
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1).astype(np.uint8)
    ds.set_pixel_data(rgb, "RGB", 8)
    ds.save_as(tmp_path / "colour.dcm")
    out = read_dicom_image(tmp_path / "colour.dcm")
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(out, rgb / 255.0, atol=1e-6)


# --- windowing ----------------------------------------------------------------------------------


def test_window_formula() -> None:
    hu = np.array([-1000, -160.5, 40, 239.5, 1000], dtype=np.float32)
    out = apply_window(hu, center=40, width=401)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.50125, 1.0, 1.0], atol=1e-5)
    with pytest.raises(ValueError, match="window"):
        apply_window(hu, 40, 0)


def test_ct_slice_auto_window_uses_file_window(ct_files: list[Path]) -> None:
    ds = pydicom.dcmread(ct_files[0])
    assert [float(v) for v in ds.WindowCenter] == [40.0, 300.0]
    auto = read_dicom_image(ct_files[0], expected_modality={"CT"}, window="auto")
    explicit = read_dicom_image(ct_files[0], window=(40.0, float(ds.WindowWidth[0])))
    np.testing.assert_array_equal(auto, explicit)
    hu = ds.pixel_array.astype(np.float32) - 1024
    assert np.all(auto[hu <= 40 - 0.5 - (300 - 1) / 2] == 0.0)
    assert np.all(auto[hu > 40 - 0.5 + (300 - 1) / 2] == 1.0)
    lung = read_dicom_image(ct_files[0], window=(-600, 1500))
    assert lung.mean() > auto.mean()  # a wider, lower window shows more of the image


def test_auto_window_uses_voi_lut_sequence(tmp_path: Path) -> None:
    ds = pydicom.dcmread(cxr(1))
    item = pydicom.Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = np.arange(255, -1, -1, dtype=np.uint16).tobytes()  # an inverting LUT
    ds.VOILUTSequence = pydicom.Sequence([item])
    ds.save_as(tmp_path / "voilut.dcm")
    out = read_dicom_image(tmp_path / "voilut.dcm", window="auto")
    np.testing.assert_allclose(out, 1.0 - read_dicom_image(cxr(1)), atol=1e-6)


def test_auto_window_honours_sigmoid_function(tmp_path: Path) -> None:
    ds = pydicom.dcmread(cxr(1))
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 100, 50, "SIGMOID"
    ds.save_as(tmp_path / "sigmoid.dcm")
    raw = ds.pixel_array.astype(np.float64)
    expected = 1.0 / (1.0 + np.exp(-4.0 * (raw - 100) / 50))
    np.testing.assert_allclose(read_dicom_image(tmp_path / "sigmoid.dcm"), expected, atol=1e-6)


# --- series -------------------------------------------------------------------------------------


def test_ct_series_volume_in_hounsfield_units(ct_files: list[Path]) -> None:
    volume = load_dicom_series(ct_files[0].parent, expected_modality={"CT"})
    assert volume.shape == (20, 512, 512) and volume.dtype == np.float32
    assert volume.min() == pytest.approx(-1024.0)  # stored 0 + RescaleIntercept -1024
    assert volume.max() == pytest.approx(2863 - 1024)
    lowest = min(ct_files, key=z_of)
    first = pydicom.dcmread(lowest).pixel_array.astype(np.float32) - 1024
    np.testing.assert_array_equal(volume[0], first)  # sorted by position along the normal
    windowed = load_dicom_series(ct_files[0].parent, window="auto")
    assert windowed.shape == volume.shape
    assert 0.0 <= windowed.min() and windowed.max() <= 1.0
    np.testing.assert_allclose(windowed, apply_window(volume, 40, 300), atol=1e-6)


def test_series_order_ignores_file_names(tmp_path: Path, ct_files: list[Path]) -> None:
    names = [f"slice{i:02d}.dcm" for i in range(len(ct_files))]
    random.Random(3).shuffle(names)
    for src, name in zip(ct_files, names, strict=True):
        shutil.copy(src, tmp_path / name)
    volume = load_dicom_series(tmp_path)
    order = sorted(ct_files, key=z_of)
    for k in (0, 7, 19):
        expected = pydicom.dcmread(order[k]).pixel_array.astype(np.float32) - 1024
        np.testing.assert_array_equal(volume[k], expected)


def _copy_slices(ct_files: list[Path], folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir()
    return [Path(shutil.copy(src, folder / f"s{i}.dcm")) for i, src in enumerate(ct_files[:count])]


def test_series_falls_back_to_instance_number(tmp_path: Path, ct_files: list[Path]) -> None:
    copies = _copy_slices(ct_files, tmp_path / "series")
    for path in copies:
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.InstanceNumber = 100 - int(ds.InstanceNumber)  # reverse the order
        ds.save_as(path)
    volume = load_dicom_series(tmp_path / "series")
    last = pydicom.dcmread(ct_files[2]).pixel_array.astype(np.float32) - 1024
    np.testing.assert_array_equal(volume[0], last)


def test_series_mixing_series_uids_is_an_error(tmp_path: Path, ct_files: list[Path]) -> None:
    copies = _copy_slices(ct_files, tmp_path / "series")
    ds = pydicom.dcmread(copies[1])
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.save_as(copies[1])
    with pytest.raises(DataValidationError, match="s1.dcm.*SeriesInstanceUID.*mixes series"):
        load_dicom_series(tmp_path / "series")


def test_series_slices_of_different_shape(tmp_path: Path, ct_files: list[Path]) -> None:
    copies = _copy_slices(ct_files, tmp_path / "series")
    ds = pydicom.dcmread(copies[2])
    ds.set_pixel_data(ds.pixel_array[:256, :256].copy(), "MONOCHROME2", 12)
    ds.save_as(copies[2])
    with pytest.raises(DataValidationError, match="s2.dcm.*shape"):
        load_dicom_series(tmp_path / "series")


# --- site folders -------------------------------------------------------------------------------


def test_site_folder_skips_bad_files_and_keeps_good_ones(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "no_finding").mkdir(parents=True)
    (site / "finding").mkdir()
    for n in (1, 4, 5):
        shutil.copy(cxr(n), site / "no_finding" / f"test{n}.dcm")
    for n in (2, 3, 6):
        shutil.copy(cxr(n), site / "finding" / f"test{n}.dcm")
    raw = cxr(1).read_bytes()
    (site / "finding" / "corrupt.dcm").write_bytes(raw[: len(raw) // 2])
    (site / "finding" / "README.txt").write_text("exported 2024\n")

    data = load_dicom_folder(site, image_size=(32, 32), **CXR_SITE)

    assert len(data) == 3 and data.images.shape == (3, 1, 32, 32)
    assert data.labels.tolist() == [0, 0, 1]  # finding: test2, test3; no_finding: test1
    assert data.num_classes == 2
    assert data.num_skipped == 5
    assert set(data.skipped) == {
        "no_finding/test4.dcm", "no_finding/test5.dcm", "finding/test6.dcm",
        "finding/corrupt.dcm", "finding/README.txt",
    }
    assert "BodyPartExamined" in data.skipped["no_finding/test4.dcm"]
    assert "Modality" in data.skipped["no_finding/test5.dcm"]
    assert "PatientPosition" in data.skipped["finding/test6.dcm"]
    assert "cannot be decoded" in data.skipped["finding/corrupt.dcm"]
    assert "not a readable DICOM" in data.skipped["finding/README.txt"]
    # Resizing averages (antialiasing), so the mean intensity is preserved closely.
    full = torch.from_numpy(read_dicom_image(cxr(2)))
    assert abs(float(data.images[0].mean()) - float(full.mean())) < 0.01


def test_site_folder_with_label_mapping(tmp_path: Path) -> None:
    for n in (1, 2, 3):
        shutil.copy(cxr(n), tmp_path / f"test{n}.dcm")
    data = load_dicom_folder(
        tmp_path,
        labels={"test1.dcm": "normal", "test3.dcm": "effusion"},
        class_names=["normal", "effusion"],
        image_size=(16, 16),
        channels=3,
    )
    assert data.labels.tolist() == [0, 1]
    assert data.images.shape == (2, 3, 16, 16)
    assert data.skipped == {"test2.dcm": "no label given for this file"}


def test_site_folder_with_nothing_usable(tmp_path: Path) -> None:
    (tmp_path / "chest").mkdir()
    shutil.copy(cxr(5), tmp_path / "chest" / "test5.dcm")
    with pytest.raises(DataValidationError, match="no usable images \\(1 skipped: Modality") as err:
        load_dicom_folder(tmp_path, **CXR_SITE)
    assert "test5" not in err.value.problem  # file names stay in the site's own skip record
    with pytest.raises(ValueError, match="window"):
        load_dicom_folder(tmp_path, window=(40, 0))  # bad arguments fail before any file

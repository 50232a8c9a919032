"""Reading scenes: times, sensors, masks and the errors for every bad input."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from glacierflow.acquisition import (
    acquisition_from_mtl,
    acquisition_from_name,
    find_mtl,
    trusting_given_dates,
)
from glacierflow.dates import parse_datetime
from glacierflow.errors import InputError, NoAcquisitionTimeError
from glacierflow.scenes import read_scene

REF_NAME = "LC80630182016200LGN00_B8_yahtse.TIF"
SEC_NAME = "LC80630182016216LGN00_B8_yahtse.TIF"
UTM7_15M = Affine(15.0, 0.0, 465067.5, 0.0, -15.0, 6681577.5)


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32607",
    transform: Affine = UTM7_15M,
    nodata: float | None = None,
) -> Path:
    """Write a (bands, rows, cols) or (rows, cols) array as a GeoTIFF."""
    arr = data if data.ndim == 3 else data[np.newaxis]
    profile = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype,
        "transform": transform,
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Real data


@pytest.mark.parametrize(
    ("name", "expected", "scene_id"),
    [
        (REF_NAME, utc(2016, 7, 18, 20, 37, 6, 339158), "LC80630182016200LGN00"),
        (SEC_NAME, utc(2016, 8, 3, 20, 37, 9, 463613), "LC80630182016216LGN00"),
    ],
)
def test_yahtse_time_sensor_and_grid_from_mtl(yahtse_dir, name, expected, scene_id):
    scene = read_scene(yahtse_dir / name)
    assert scene.acquired == expected
    assert scene.acquired.utcoffset() == timedelta(0)
    assert scene.time_source == "MTL"
    assert scene.sensor == "Landsat 8 OLI"
    assert scene.scene_id == scene_id
    assert scene.crs.to_epsg() == 32607
    assert scene.pixel_size_m == 15.0
    assert scene.transform == UTM7_15M
    assert scene.shape == (1087, 1698)
    assert scene.data.dtype == np.float32
    # The crop holds no fill: every pixel is valid, and the DNs are those of the file.
    assert scene.valid.all()
    with rasterio.open(yahtse_dir / name) as src:
        np.testing.assert_array_equal(scene.data, src.read(1).astype(np.float32))


def test_yahtse_pair_is_16_days_apart(yahtse_dir):
    ref = read_scene(yahtse_dir / REF_NAME)
    sec = read_scene(yahtse_dir / SEC_NAME)
    dt = (sec.acquired - ref.acquired).total_seconds() / 86400
    assert dt == pytest.approx(16.0 + 3.124455 / 86400, abs=1e-9)


def test_everest_landsat7_time_and_sensor_from_name(shared_data):
    path = shared_data / "everest_landsat7_2000" / "LE71400412000304SGS00_B4.tif"
    scene = read_scene(path)
    # Day 304 of the leap year 2000 is 30 October; the name gives no time of day.
    assert scene.acquired == utc(2000, 10, 30)
    assert scene.time_source == "filename"
    assert scene.sensor == "Landsat 7 ETM+"
    assert scene.scene_id == "LE71400412000304SGS00"
    assert scene.crs.to_epsg() == 32645
    assert scene.pixel_size_m == 30.0
    assert scene.shape == (655, 800)


def test_explicit_time_overrides_mtl_but_keeps_sensor(yahtse_dir):
    """A time given on the MTL file's UTC day (2016-07-18) is used as given; another day
    only when trusted (issue 16: a contradicting date stops, see test_dates.py)."""
    scene = read_scene(yahtse_dir / REF_NAME, acquired="2016-07-18T12:00:00")
    assert scene.acquired == utc(2016, 7, 18, 12)
    assert scene.time_source == "option"
    assert scene.sensor == "Landsat 8 OLI"
    assert scene.scene_id == "LC80630182016200LGN00"

    aware = datetime(2016, 7, 18, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert read_scene(yahtse_dir / REF_NAME, acquired=aware).acquired == utc(2016, 7, 18, 12)
    naive = datetime(2016, 7, 18, 12, 0)
    assert read_scene(yahtse_dir / REF_NAME, acquired=naive).acquired == utc(2016, 7, 18, 12)
    with trusting_given_dates():
        later = read_scene(yahtse_dir / REF_NAME, acquired="2016-07-20T12:00:00")
    assert later.acquired == utc(2016, 7, 20, 12)
    assert read_scene(yahtse_dir / REF_NAME, sensor="my camera").sensor == "my camera"


# --------------------------------------------------------------------------------------------
# Identifiers in names


@pytest.mark.parametrize(
    ("name", "acquired", "sensor", "scene_id"),
    [
        (REF_NAME, utc(2016, 7, 18), "Landsat 8 OLI", "LC80630182016200LGN00"),
        ("LE71480351999197SGS00_B8.TIF", utc(1999, 7, 16), "Landsat 7 ETM+", None),
        ("crop_LT50630181995200PAC02_b3.tif", utc(1995, 7, 19), "Landsat 5 TM", None),
        ("lc91480352022060LGN00.tif", utc(2022, 3, 1), "Landsat 9 OLI", None),
        (
            "clip_LE07_L1TP_148035_19990716_20161003_01_T1_B8_utm.tif",
            utc(1999, 7, 16),
            "Landsat 7 ETM+",
            "LE07_L1TP_148035_19990716_20161003_01_T1",
        ),
        (
            "LC08_L1TP_063018_20160718_20200906_02_T1_B8.TIF",
            utc(2016, 7, 18),
            "Landsat 8 OLI",
            None,
        ),
        (
            "LC09_L2SP_063018_20220301_20220303_02_T1_SR_B5.TIF",
            utc(2022, 3, 1),
            "Landsat 9 OLI",
            None,
        ),
        ("LT05_L1TP_063018_19950719_20160926_01_T1_B3.tif", utc(1995, 7, 19), "Landsat 5 TM", None),
        (
            "LO08_L1GT_063018_20160718_20170222_01_T2_B8.TIF",
            utc(2016, 7, 18),
            "Landsat 8 OLI",
            None,
        ),
        (
            "S2A_MSIL1C_20200407T044659_N0209_R076_T45RVL_20200407T063215.SAFE",
            utc(2020, 4, 7, 4, 46, 59),
            "Sentinel-2A MSI",
            "S2A_MSIL1C_20200407T044659_N0209_R076_T45RVL_20200407T063215",
        ),
        (
            "my_S2B_MSIL2A_20210815T103629_N0301_R008_T32TMS_20210815T134317_B08.tif",
            utc(2021, 8, 15, 10, 36, 29),
            "Sentinel-2B MSI",
            None,
        ),
        ("T45RVL_20200407T044659_B08.jp2", utc(2020, 4, 7, 4, 46, 59), "Sentinel-2 MSI", None),
        (
            "crop-T45RVL_20200407T044659_B08_10m.tif",
            utc(2020, 4, 7, 4, 46, 59),
            "Sentinel-2 MSI",
            None,
        ),
    ],
)
def test_acquisition_from_name(name, acquired, sensor, scene_id):
    found = acquisition_from_name(name)
    assert found is not None
    assert found[0] == acquired
    assert found[1] == sensor
    if scene_id is not None:
        assert found[2] == scene_id


@pytest.mark.parametrize(
    "name",
    [
        "image.tif",
        "2016-07-18_B8.tif",
        "LC80630182016400LGN00_B8.TIF",  # day of year 400
        "LC08_L1TP_063018_20161345_20200906_02_T1_B8.TIF",  # month 13
        "XLC80630182016200LGN00.tif",  # ID glued to other letters
        "S2A_MSIL1C_20201307T044659_N0209.SAFE",  # month 13
    ],
)
def test_acquisition_from_name_rejects_non_ids(name):
    assert acquisition_from_name(name) is None


# --------------------------------------------------------------------------------------------
# MTL files

MTL_C2 = """GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    ORIGIN = "Image courtesy of the U.S. Geological Survey"
    LANDSAT_PRODUCT_ID = "LC09_L1TP_063018_20220301_20220301_02_T1"
    PROCESSING_LEVEL = "L1TP"
    COLLECTION_NUMBER = 02
    FILE_NAME_BAND_8 = "LC09_L1TP_063018_20220301_20220301_02_T1_B8.TIF"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "LANDSAT_9"
    SENSOR_ID = "OLI_TIRS"
    WRS_PATH = 63
    WRS_ROW = 18
    DATE_ACQUIRED = 2022-03-01
    SCENE_CENTER_TIME = "20:51:03.1234567Z"
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = LEVEL1_PROCESSING_RECORD
    LANDSAT_SCENE_ID = "LC90630182022060LGN00"
    LANDSAT_PRODUCT_ID = "LC09_L1TP_063018_20220301_20220301_02_T1"
  END_GROUP = LEVEL1_PROCESSING_RECORD
END_GROUP = LANDSAT_METADATA_FILE
END
"""

MTL_OLD = """GROUP = L1_METADATA_FILE
  GROUP = PRODUCT_METADATA
    PRODUCT_TYPE = "L1T"
    SPACECRAFT_ID = "Landsat7"
    SENSOR_ID = "ETM+"
    ACQUISITION_DATE = 1999-07-16
    SCENE_CENTER_SCAN_TIME = 04:53:59.6981250Z
  END_GROUP = PRODUCT_METADATA
END_GROUP = L1_METADATA_FILE
END
"""


def test_collection2_mtl_beside_product(tmp_path):
    pid = "LC09_L1TP_063018_20220301_20220301_02_T1"
    (tmp_path / f"{pid}_MTL.txt").write_text(MTL_C2)
    image = write_tif(tmp_path / f"{pid}_B8.TIF", np.full((4, 5), 7, np.uint16))
    assert find_mtl(image) == tmp_path / f"{pid}_MTL.txt"
    scene = read_scene(image)
    # The MTL gives the time of day, which the product ID alone does not.
    assert scene.acquired == utc(2022, 3, 1, 20, 51, 3, 123456)
    assert scene.time_source == "MTL"
    assert scene.sensor == "Landsat 9 OLI"
    assert scene.scene_id == pid


def test_very_old_mtl_keys(tmp_path):
    mtl = tmp_path / "L71148035_03519990716_MTL.txt"
    mtl.write_text(MTL_OLD)
    acquired, sensor, scene_id = acquisition_from_mtl(mtl)
    assert acquired == utc(1999, 7, 16, 4, 53, 59, 698125)
    assert sensor == "Landsat 7 ETM+"
    assert scene_id is None


def test_mtl_found_by_its_scene_id(tmp_path, yahtse_dir):
    # The MTL has an unrelated name; its LANDSAT_SCENE_ID matches the image name.
    shutil.copy(yahtse_dir / "LC80630182016216LGN00_MTL.txt", tmp_path / "metadata_MTL.txt")
    (tmp_path / "other_MTL.txt").write_text(MTL_C2)
    image = write_tif(
        tmp_path / "yahtse_LC80630182016216LGN00_crop.tif", np.ones((4, 5), np.uint16)
    )
    assert find_mtl(image) == tmp_path / "metadata_MTL.txt"
    scene = read_scene(image)
    assert scene.time_source == "MTL"
    assert scene.acquired == utc(2016, 8, 3, 20, 37, 9, 463613)
    # No MTL claims an image with no ID in its name.
    assert find_mtl(write_tif(tmp_path / "plain.tif", np.ones((4, 5), np.uint16))) is None


def test_mtl_without_date_is_an_input_error(tmp_path):
    mtl = tmp_path / "broken_MTL.txt"
    mtl.write_text("GROUP = L1_METADATA_FILE\nEND\n")
    with pytest.raises(InputError, match="broken_MTL.txt"):
        acquisition_from_mtl(mtl)


# --------------------------------------------------------------------------------------------
# Pixel types and masks


def pattern(dtype) -> np.ndarray:
    arr = (np.arange(6 * 7).reshape(6, 7) % 11).astype(dtype)  # holds zeros
    return arr


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32, np.float64])
def test_dtypes_read_as_float32_and_zero_is_fill_for_integers(tmp_path, dtype):
    arr = pattern(dtype)
    scene = read_scene(write_tif(tmp_path / "plain.tif", arr), acquired="2020-01-01")
    assert scene.data.dtype == np.float32
    np.testing.assert_array_equal(scene.data, arr.astype(np.float32))
    if np.issubdtype(dtype, np.integer):
        # Integer images without declared nodata: 0 is the Landsat fill value.
        np.testing.assert_array_equal(scene.valid, arr != 0)
    else:
        assert scene.valid.all()
    assert scene.sensor == "unknown"
    assert scene.scene_id is None


def test_declared_nodata_masks_only_that_value(tmp_path):
    arr = pattern(np.int16)
    arr[0, :3] = -9999
    scene = read_scene(write_tif(tmp_path / "n.tif", arr, nodata=-9999), acquired="2020-01-01")
    np.testing.assert_array_equal(scene.valid, arr != -9999)
    assert (scene.data[~scene.valid] == 0).all()


def test_float32_min_nodata(tmp_path):
    arr = pattern(np.float32) + 1
    fill = float(np.finfo(np.float32).min)
    arr[2, 2] = fill
    scene = read_scene(write_tif(tmp_path / "f.tif", arr, nodata=fill), acquired="2020-01-01")
    assert not scene.valid[2, 2]
    assert scene.valid.sum() == arr.size - 1
    assert scene.data[2, 2] == 0


def test_nan_and_inf_are_invalid_and_zeroed(tmp_path):
    arr = pattern(np.float64)
    arr[1, 1], arr[3, 4], arr[5, 0] = np.nan, np.inf, -np.inf
    scene = read_scene(write_tif(tmp_path / "nan.tif", arr, nodata=np.nan), acquired="2020-01-01")
    assert np.isfinite(scene.data).all()
    assert scene.valid.sum() == arr.size - 3
    assert not scene.valid[1, 1] and not scene.valid[3, 4] and not scene.valid[5, 0]
    assert scene.data[1, 1] == 0
    assert scene.valid[0, 0]  # a genuine 0 in a float image is data


def test_landsat_float_image_treats_zero_as_fill(tmp_path):
    arr = pattern(np.float32)
    scene = read_scene(write_tif(tmp_path / "LE71480351999197SGS00_B8_float.tif", arr))
    assert scene.sensor == "Landsat 7 ETM+"
    np.testing.assert_array_equal(scene.valid, arr != 0)


def test_internal_mask_band_is_used(tmp_path):
    path = tmp_path / "masked.tif"
    arr = pattern(np.float32) + 1
    mask = np.full(arr.shape, 255, np.uint8)
    mask[:, :2] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        profile = dict(driver="GTiff", width=7, height=6, count=1, dtype="float32")
        with rasterio.open(path, "w", crs="EPSG:32607", transform=UTM7_15M, **profile) as dst:
            dst.write(arr, 1)
            dst.write_mask(mask)
    scene = read_scene(path, acquired="2020-01-01")
    np.testing.assert_array_equal(scene.valid, mask > 0)
    assert (scene.data[:, :2] == 0).all()


def test_band_choice(tmp_path):
    arr = np.stack([pattern(np.uint8) + 1, pattern(np.uint8) + 2, pattern(np.uint8) + 3])
    path = write_tif(tmp_path / "rgb.tif", arr)
    scene = read_scene(path, band=2, acquired="2020-01-01")
    np.testing.assert_array_equal(scene.data, arr[1].astype(np.float32))


def test_pixel_size_of_rotated_grid(tmp_path):
    rotated = Affine(12.0, -5.0, 465000.0, 5.0, 12.0, 6681000.0)
    path = write_tif(tmp_path / "rot.tif", pattern(np.float32), transform=rotated)
    assert read_scene(path, acquired="2020-01-01").pixel_size_m == pytest.approx(13.0)


# --------------------------------------------------------------------------------------------
# Bad inputs: every error names the file


def check_error(exc_info, path: Path, *words: str) -> None:
    message = str(exc_info.value)
    assert path.name in message
    for word in words:
        assert word in message


def test_multiband_without_band(tmp_path):
    path = write_tif(tmp_path / "rgb.tif", np.ones((3, 4, 5), np.uint8))
    with pytest.raises(InputError) as exc_info:
        read_scene(path, acquired="2020-01-01")
    check_error(exc_info, path, "3 bands", "choose one with band")


def test_band_out_of_range(tmp_path):
    path = write_tif(tmp_path / "one.tif", np.ones((4, 5), np.uint8))
    with pytest.raises(InputError) as exc_info:
        read_scene(path, band=2, acquired="2020-01-01")
    check_error(exc_info, path, "out of range")


def test_missing_file(tmp_path):
    path = tmp_path / "nothing_here.tif"
    with pytest.raises(InputError) as exc_info:
        read_scene(path)
    check_error(exc_info, path, "file not found")


def test_text_file_named_tif(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image\n")
    with pytest.raises(InputError) as exc_info:
        read_scene(path, acquired="2020-01-01")
    check_error(exc_info, path, "not a raster")


def test_no_crs(tmp_path):
    path = write_tif(tmp_path / "nocrs.tif", np.ones((4, 5), np.uint8), crs=None)
    with pytest.raises(InputError) as exc_info:
        read_scene(path, acquired="2020-01-01")
    check_error(exc_info, path, "no coordinate reference system")


def test_geographic_crs(tmp_path):
    lonlat = Affine(0.001, 0, -141.0, 0, -0.001, 60.0)
    path = write_tif(
        tmp_path / "wgs84.tif", np.ones((4, 5), np.uint8), crs="EPSG:4326", transform=lonlat
    )
    with pytest.raises(InputError) as exc_info:
        read_scene(path, acquired="2020-01-01")
    check_error(exc_info, path, "geographic", "UTM")


def test_crs_in_feet(tmp_path):
    path = write_tif(tmp_path / "feet.tif", np.ones((4, 5), np.uint8), crs="EPSG:2229")
    with pytest.raises(InputError) as exc_info:
        read_scene(path, acquired="2020-01-01")
    check_error(exc_info, path, "metres")


@pytest.mark.parametrize(
    ("arr", "nodata"),
    [
        (np.zeros((4, 5), np.uint16), None),  # all Landsat fill
        (np.full((4, 5), -9999, np.int16), -9999),
        (np.full((4, 5), np.nan, np.float32), None),
    ],
)
def test_all_nodata(tmp_path, arr, nodata):
    path = write_tif(tmp_path / "empty.tif", arr, nodata=nodata)
    with pytest.raises(InputError) as exc_info:
        read_scene(path, acquired="2020-01-01")
    check_error(exc_info, path, "no valid pixels")


@pytest.mark.parametrize("text", ["18/07/2016", "2016-13-01", "yesterday", ""])
def test_bad_date_option(yahtse_dir, text):
    path = yahtse_dir / REF_NAME
    with pytest.raises(InputError) as exc_info:
        read_scene(path, acquired=text)
    check_error(exc_info, path, "2016-07-18")


def test_no_acquisition_time(tmp_path):
    path = write_tif(tmp_path / "mystery.tif", np.ones((4, 5), np.uint8))
    with pytest.raises(NoAcquisitionTimeError) as exc_info:
        read_scene(path)
    check_error(exc_info, path, "ref_date", "sec_date")
    assert isinstance(exc_info.value, InputError)


# --------------------------------------------------------------------------------------------
# Dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-07-18", utc(2016, 7, 18)),
        ("2016-07-18T20:37:06Z", utc(2016, 7, 18, 20, 37, 6)),
        ("2016-07-18T20:37:06z", utc(2016, 7, 18, 20, 37, 6)),
        ("2016-07-18T20:37:06.3391580Z", utc(2016, 7, 18, 20, 37, 6, 339158)),
        ("2016-07-18 20:37", utc(2016, 7, 18, 20, 37)),
        ("2016-07-18T22:37:06+02:00", utc(2016, 7, 18, 20, 37, 6)),
        (" 2016-07-18 ", utc(2016, 7, 18)),
    ],
)
def test_parse_datetime(text, expected):
    value = parse_datetime(text)
    assert value == expected
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["2016/07/18", "July 18 2016", "2016-02-30", ""])
def test_parse_datetime_rejects(text):
    with pytest.raises(InputError, match="ISO"):
        parse_datetime(text)

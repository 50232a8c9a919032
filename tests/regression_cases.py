"""Cases of the regression net: products of the public CLI, value for value.

Each case runs ``glacierflow`` through its command-line surface (the stable door across
refactors), reads the products back from disk and returns them as ``{name: ndarray}``:

* ``tif/<band>``: every band of ``velocity.tif`` (as written, float32);
* ``nc/<variable>``: every numeric variable of ``velocity.nc``;
* ``attr/<name>``: every numeric product attribute of ``velocity.nc`` (``coreg_*``,
  ``stable_*``, ``v_error_*``, ``filter_*``, grid and timing facts), global or filed on the
  variables of the ITS_LIVE layout (:data:`ATTRIBUTE_GROUPS`);
* for the project case, the annual maps, the velocity cube and the glacier tables.

The reference arrays were written by ``tests/record_regression.py`` on the code before the
redesign of issue 11; ``tests/test_regression.py`` compares every case with them. The inputs
are the bundled Yahtse pair (a 400 x 400 px crop over the tongue and its margin) and, for the
project, a synthetic four-year series made here from the Everest test image with scipy alone, so
that no input depends on the code under test.

This module is a helper, not a test file: it holds no test.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import shutil
import sys
import tomllib
from collections.abc import Callable
from datetime import date
from importlib.resources import files
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import xarray as xr
from affine import Affine
from rasterio.windows import Window
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(__file__).parent / "data" / "regression"

#: 400 x 400 px of the bundled Yahtse pair: the lower tongue, its shear margins and some rock.
CROP = Window(col_off=760, row_off=520, width=400, height=400)
#: Matching settings of every crop case: chip side, search reach, node step (pixels).
BASE = ["--chip-px", "32", "--search-px", "16", "--step-px", "8", "--workers", "1"]

# --------------------------------------------------------------------------------------------
# Running the CLI


def cli_entry_point() -> Callable[[], object]:
    """The function of the ``glacierflow`` console script declared in ``pyproject.toml``."""
    with open(REPO / "pyproject.toml", "rb") as f:
        target = tomllib.load(f)["project"]["scripts"]["glacierflow"]
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def run_cli(args: list[str]) -> str:
    """Run ``glacierflow ARGS`` in this process as the script does; its output, or raise."""
    entry = cli_entry_point()
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["glacierflow", *args]
    code: object = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            entry()
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        sys.argv = argv
    if code != 0:
        raise RuntimeError(
            f"glacierflow {' '.join(args)} exited {code}:\n{stdout.getvalue()}{stderr.getvalue()}"
        )
    return stdout.getvalue()


# --------------------------------------------------------------------------------------------
# Reading products back


def _is_numeric(value) -> bool:
    arr = np.asarray(value)
    return arr.dtype.kind in "biuf" and arr.size > 0


def read_geotiff(path: Path, prefix: str) -> dict[str, np.ndarray]:
    """Every band of a GeoTIFF under ``prefix/<band description>`` (``band<i>`` if unnamed)."""
    out = {}
    with rasterio.open(path) as src:
        for i, name in enumerate(src.descriptions, start=1):
            out[f"{prefix}/{name or f'band{i}'}"] = src.read(i)
    return out


def read_netcdf(path: Path, prefix: str = "nc", attrs: bool = True) -> dict[str, np.ndarray]:
    """Numeric variables (and numeric global attributes) of a NetCDF file."""
    out = {}
    with xr.open_dataset(path, engine="h5netcdf", decode_times=False) as ds:
        for name, var in ds.data_vars.items():
            if var.dtype.kind in "biuf" and var.ndim > 0:
                out[f"{prefix}/{name}"] = var.values
        for name, coord in ds.coords.items():
            if coord.dtype.kind in "biuf":
                out[f"{prefix}/coord/{name}"] = coord.values
        if attrs:
            out |= _numeric_attributes(ds)
    return out


#: Variables of ``velocity.nc`` whose attributes hold what were global attributes before the
#: ITS_LIVE layout of issue 15 (pair on ``img_pair_info``, settings and ``coreg_*`` on
#: ``processing_info``, ``stable_v{x,y}_*`` and ``stable_nodes`` on ``vx``/``vy``, ``v_error_*``
#: on ``v_error``). Files without them (the reference's) hold everything globally.
ATTRIBUTE_GROUPS = ("img_pair_info", "processing_info", "vx", "vy", "v_error")


def _numeric_attributes(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Numeric product attributes under ``attr/<name>``, wherever the file keeps them.

    Global attributes first, then those of :data:`ATTRIBUTE_GROUPS` (a name already found is
    not replaced), the quality layer's CF ``flag_masks`` as ``quality_flag_masks`` and the grid
    mapping's ``GeoTransform`` as ``transform``, as the flat global list held them.
    """
    out: dict[str, np.ndarray] = {}
    sources = [ds.attrs] + [ds[v].attrs for v in ATTRIBUTE_GROUPS if v in ds.variables]
    for attrs in sources:
        for name, value in attrs.items():
            if _is_numeric(value):
                out.setdefault(f"attr/{name}", np.asarray(value))
    if "quality" in ds.variables and "flag_masks" in ds["quality"].attrs:
        out.setdefault("attr/quality_flag_masks", np.asarray(ds["quality"].attrs["flag_masks"]))
    if "mapping" in ds.variables and "GeoTransform" in ds["mapping"].attrs:
        text = str(ds["mapping"].attrs["GeoTransform"])
        out.setdefault("attr/transform", np.asarray([float(c) for c in text.split()]))
    return out


def read_velocity_products(folder: Path) -> dict[str, np.ndarray]:
    """``velocity.tif`` bands, ``velocity.nc`` variables and numeric attributes of ``folder``."""
    return read_geotiff(folder / "velocity.tif", "tif") | read_netcdf(folder / "velocity.nc")


def read_table(path: Path, prefix: str, keys: list[str]) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV table, rows sorted by ``keys``, as float64 arrays."""
    import pandas as pd

    df = pd.read_csv(path)
    if df.empty:
        return {f"{prefix}/rows": np.asarray(0)}
    df = df.sort_values([k for k in keys if k in df.columns], kind="stable")
    out = {f"{prefix}/rows": np.asarray(len(df))}
    for col in df.columns:
        if df[col].dtype.kind in "biuf":
            out[f"{prefix}/{col}"] = df[col].to_numpy(dtype=np.float64)
        else:
            out[f"{prefix}/{col}"] = df[col].to_numpy().astype(str)
    return out


# --------------------------------------------------------------------------------------------
# Inputs


def yahtse_crop(folder: Path) -> tuple[Path, Path]:
    """The reference and secondary Yahtse scenes cropped to :data:`CROP`, under ``folder``."""
    src_dir = Path(str(files("glacierflow") / "data" / "yahtse"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for scene in ("LC80630182016200LGN00", "LC80630182016216LGN00"):
        dst = folder / f"{scene}_B8_crop.TIF"
        if not dst.exists():
            with rasterio.open(src_dir / f"{scene}_B8_yahtse.TIF") as src:
                data = src.read(1, window=CROP)
                profile = {
                    "driver": "GTiff",
                    "dtype": data.dtype.name,
                    "width": int(CROP.width),
                    "height": int(CROP.height),
                    "count": 1,
                    "crs": src.crs,
                    "transform": src.window_transform(CROP),
                }
            with rasterio.open(dst, "w", **profile) as out:
                out.write(data, 1)
        paths.append(dst)
    return paths[0], paths[1]


EVEREST = Path(__file__).parent / "data" / "everest" / "LE71400412000304SGS00_B4.tif"
SIZE = 400
ROW0, COL0 = 255, 0  # the most textured 400 x 400 crop of the Everest image
PIXEL_M = 30.0
DATES = [
    date(1999, 7, 16),
    date(2000, 6, 16),
    date(2001, 7, 21),
    date(2002, 8, 9),
    date(2003, 7, 11),
]
MISREG = [(0.0, 0.0), (0.2, -0.1), (-0.15, 0.1), (0.1, 0.2), (0.0, -0.2)]  # (dx, dy) px
GAP = (slice(40, 90), slice(150, 200))  # Landsat fill (DN 0) in the third scene


def _plateau(x: np.ndarray, half_flat: float, ramp: float) -> np.ndarray:
    t = np.clip((half_flat + ramp - np.abs(x)) / ramp, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _band(centre: tuple[float, float], bearing_deg: float):
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    th = np.deg2rad(bearing_deg)
    ux, uy = np.sin(th), -np.cos(th)
    along = (x - centre[1]) * ux + (y - centre[0]) * uy
    across = -(x - centre[1]) * uy + (y - centre[0]) * ux
    return _plateau(across, 35, 30) * _plateau(along, 90, 30), along, (ux, uy)


def synthetic_series(root: Path) -> Path:
    """Five scenes of a moving Everest texture, outlines and a project file; its path.

    The pattern of ``tests/test_project.py`` (two glaciers, one surging, a still box, per-scene
    misregistration, a fill gap), warped here with scipy alone (each scene samples the texture
    at ``p - D_k(p)``), so the inputs do not depend on glacierflow.
    """
    import geopandas as gpd
    from shapely.geometry import box, shape

    with rasterio.open(EVEREST) as src:
        texture = src.read(1)[ROW0 : ROW0 + SIZE, COL0 : COL0 + SIZE].astype(np.float64)
        crs = src.crs
        transform = src.transform @ Affine.translation(COL0, ROW0)
    alpha, _, ua = _band((105, 205), 100)
    beta, along_b, ub = _band((295, 195), 260)
    reach = _plateau(along_b - 10, 35, 30)
    coeffs = ndimage.spline_filter(texture, order=3)
    scenes = root / "scenes"
    scenes.mkdir(parents=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    dx_cum = np.zeros((SIZE, SIZE))
    dy_cum = np.zeros((SIZE, SIZE))
    for k, day in enumerate(DATES):
        at = [yy - dy_cum - MISREG[k][1], xx - dx_cum - MISREG[k][0]]
        image = ndimage.map_coordinates(coeffs, at, order=3, prefilter=False, mode="nearest")
        if k == 2:
            image[GAP] = 0.0
        profile = {
            "driver": "GTiff",
            "width": SIZE,
            "height": SIZE,
            "count": 1,
            "dtype": "float32",
            "crs": crs,
            "transform": transform,
        }
        name = f"LE07_L1TP_148035_{day:%Y%m%d}_20200918_02_T1_B8.TIF"
        with rasterio.open(scenes / name, "w", **profile) as dst:
            dst.write(image.astype(np.float32), 1)
        if k < 4:
            dt_yr = (DATES[k + 1] - day).days / 365.25
            sa = 150.0 * [1.0, 1.2, 0.9, 1.1][k] * alpha
            sb = 80.0 * beta * ([1.0, 0.95, 1.0, 1.0][k] + [0.0, 0.0, 1.3, 0.6][k] * reach)
            vx, vy_down = sa * ua[0] + sb * ub[0], sa * ua[1] + sb * ub[1]
            dx_cum = dx_cum + vx * dt_yr / PIXEL_M
            dy_cum = dy_cum + vy_down * dt_yr / PIXEL_M

    polygons = []
    for gid, name, mask in (("RGI60-99.00001", "Alpha", alpha), ("RGI60-99.00002", "Beta", beta)):
        parts = [
            shape(g)
            for g, v in rasterio.features.shapes(
                (mask > 0.02).astype(np.uint8), transform=transform
            )
            if v == 1
        ]
        polygons.append((gid, name, max(parts, key=lambda g: g.area)))
    gx, gy = transform @ (340, 230)
    polygons.append(("RGI60-99.00003", "Gamma", box(gx, gy, gx + 1500, gy + 1500)))
    gpd.GeoDataFrame(
        {"RGIId": [p[0] for p in polygons], "Name": [p[1] for p in polygons]},
        geometry=[p[2] for p in polygons],
        crs=crs,
    ).to_crs("EPSG:4326").to_file(root / "outlines.gpkg")
    left, top = transform.c, transform.f
    periods = "\n".join(
        f'  {{year = {y}, start = "{y}-07-01", end = "{y + 1}-07-01"}},'
        for y in (1999, 2000, 2001, 2002)
    )
    text = f"""name = "Regression series"
output = "out"

[scenes]
folder = "scenes"
pattern = "*_B8.TIF"
path_row = "148035"

[pairs]
min_days = 300
max_days = 420
same_path_row = true

[grid]
crs = "EPSG:32645"
resolution_m = 120
bounds = [{left}, {top - SIZE * PIXEL_M}, {left + SIZE * PIXEL_M}, {top}]

[matching]
chip_px = 32
search_px = 16
step_px = 8
workers = 1

[outlines]
glaciers = "outlines.gpkg"

[composites]
assign = "majority"
periods = [
{periods}
]
"""
    path = root / "project.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Cases


def _track_case(extra: list[str]) -> Callable[[Path], dict[str, np.ndarray]]:
    def case(work: Path) -> dict[str, np.ndarray]:
        ref, sec = yahtse_crop(work / "inputs")
        out = work / "out"
        if out.exists():
            shutil.rmtree(out)
        run_cli(["track", str(ref), str(sec), "-o", str(out), *BASE, "--no-progress", *extra])
        return read_velocity_products(out)

    case.__doc__ = f"glacierflow track on the Yahtse crop with {' '.join(extra) or 'defaults'}"
    return case


def demo_case(work: Path) -> dict[str, np.ndarray]:
    """``glacierflow demo``: the full bundled Yahtse pair, stable rock from the outlines."""
    out = work / "demo"
    run_cli(["demo", "-o", str(out)])
    return read_velocity_products(out)


def project_case(work: Path) -> dict[str, np.ndarray]:
    """``glacierflow run`` of the four-pair synthetic series: pairs, annual maps, cube, tables."""
    project = synthetic_series(work / "series")
    run_cli(["run", str(project), "--workers", "1", "--no-progress", "--no-report"])
    out = project.parent / "out"
    arrays: dict[str, np.ndarray] = {}
    for tif in sorted(out.glob("v_*.tif")):
        arrays |= read_geotiff(tif, tif.stem)
    for pair in sorted((out / "pairs").iterdir()):
        if (pair / "velocity.tif").exists():
            for key, value in read_geotiff(pair / "velocity.tif", f"pair_{pair.name}").items():
                if key.rsplit("/", 1)[1] in ("dx", "dy", "v_error", "quality"):
                    arrays[key] = value
    arrays |= read_netcdf(out / "velocity_cube.nc", prefix="cube", attrs=False)
    for name, keys in (
        ("glacier_statistics", ["glacier_id", "RGIId", "name", "year"]),
        ("glacier_trends", ["glacier_id", "RGIId", "name"]),
        ("surges", ["glacier_id", "RGIId", "name", "year"]),
    ):
        found = sorted(out.rglob(f"{name}.csv"))
        if found:
            arrays |= read_table(found[0], name, keys)
    return arrays


#: Every case, by name: a function of a fresh work folder returning ``{name: array}``.
CASES: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "track_ncc": _track_case(["--method", "ncc"]),
    "track_phase": _track_case(["--method", "phase"]),
    "track_orientation": _track_case(["--method", "orientation"]),
    "track_prefilter_highpass": _track_case(["--prefilter", "highpass"]),
    "track_prefilter_wallis": _track_case(["--prefilter", "wallis"]),
    "track_prefilter_orientation": _track_case(["--prefilter", "orientation", "--method", "phase"]),
    "track_pyramid_retry_affine_fill": _track_case(
        [
            "--pyramid-levels",
            "2",
            "--retry-chip-px",
            "48",
            "--retry-min-snr",
            "3",
            "--coreg",
            "affine",
            "--fill-holes",
        ]
    ),
    "track_tiled": _track_case(["--tile-nodes", "64"]),
    "demo": demo_case,
    "project": project_case,
}


def is_exact(name: str, array: np.ndarray) -> bool:
    """Whether ``name`` is compared exactly: integer, boolean or text arrays, flag bands."""
    leaf = name.rsplit("/", 1)[-1]
    return array.dtype.kind in "biuUSO" or leaf in ("quality", "chip_px", "count")

"""Quick looks: real PNG files, read back and inspected pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import matplotlib.image
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from shapely.geometry import box

from glacierflow.errors import InputError
from glacierflow.mapstyle import (
    MIN_SPEED_FLOOR_M_PER_YR,
    SPEED_ALPHA_MOVING,
    SPEED_CMAP,
    background_grey,
    extent,
    grid_convergence_deg,
)
from glacierflow.plot import (
    QUICKLOOK_DPI,
    QUICKLOOK_WIDTH_IN,
    quicklook,
    quicklook_figure,
    speed_floor,
)
from glacierflow.velocity import velocity_dataset

YAHTSE = Path(__file__).resolve().parents[1] / "src" / "glacierflow" / "data" / "yahtse"
REF_IMAGE = YAHTSE / "LC80630182016200LGN00_B8_yahtse.TIF"
IMAGE_TRANSFORM = Affine(15, 0, 465067.5, 0, -15, 6681577.5)
ROW0_PX, COL0_PX, STEP_PX = 16, 16, 8
# Nodes covering the 1087 x 1698 pixel Yahtse scene.
NY, NX = (1087 - 2 * ROW0_PX) // STEP_PX + 1, (1698 - 2 * COL0_PX) // STEP_PX + 1


def make_dataset(
    dx_px: np.ndarray,
    dy_px: np.ndarray,
    *,
    v_error: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    attrs: dict | None = None,
) -> xr.Dataset:
    ones = np.ones_like(dx_px)
    return velocity_dataset(
        dx_px,
        dy_px,
        0.8 * ones,
        10 * ones,
        image_transform=IMAGE_TRANSFORM,
        row0_px=ROW0_PX,
        col0_px=COL0_PX,
        step_px=STEP_PX,
        crs_wkt=rasterio.crs.CRS.from_epsg(32607).to_wkt(),
        dt_days=16.0,
        attrs={
            "ref_time": "2016-07-18T20:46:12Z",
            "sec_time": "2016-08-03T20:46:18Z",
            "ref_sensor": "Landsat 8",
            "sec_sensor": "Landsat 8",
            **(attrs or {}),
        },
        v_error=v_error,
        quality=quality,
    )


@pytest.fixture(scope="module")
def glacier() -> xr.Dataset:
    """A glacier-like field: a fast tongue flowing west-south-west, slow margins, NaN holes."""
    rng = np.random.default_rng(42)
    yy, xx = np.mgrid[0:NY, 0:NX].astype(float)
    tongue = np.exp(-(((xx - 0.55 * NX) / (0.3 * NX)) ** 2) - ((yy - 0.45 * NY) / (0.15 * NY)) ** 2)
    dx_px = -3.0 * tongue + rng.normal(0, 0.05, (NY, NX))
    dy_px = 1.2 * tongue + rng.normal(0, 0.05, (NY, NX))
    holes = rng.random((NY, NX)) < 0.05
    holes[-NY // 4 :, : NX // 6] = True
    dx_px[holes] = np.nan
    dy_px[holes] = np.nan
    return make_dataset(dx_px, dy_px)


@pytest.fixture(scope="module")
def reference_image() -> tuple[np.ndarray, Affine]:
    with rasterio.open(REF_IMAGE) as src:
        return src.read(1), src.transform


def test_quicklook_over_the_reference_image(glacier, reference_image, tmp_path):
    image, transform = reference_image
    path = quicklook(glacier, tmp_path / "quicklook.png", image, transform)
    png = matplotlib.image.imread(path)
    height, width = png.shape[:2]
    assert width == round(QUICKLOOK_WIDTH_IN * QUICKLOOK_DPI)
    # The map keeps the scene's aspect (1087 x 1698 pixels), plus title and labels.
    assert 0.5 * width < height < 0.8 * width
    rgb = png[..., :3]
    assert rgb.std() > 0.1, "the picture is (nearly) blank"
    # Both colour (the speed layer) and plain grey image detail (in the hole with no nodes) show.
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    brightness = rgb.mean(axis=2)
    assert (spread > 0.3).mean() > 0.03
    assert ((spread < 0.02) & (brightness > 0.3) & (brightness < 0.95)).mean() > 0.01
    assert [p.name for p in tmp_path.iterdir()] == ["quicklook.png"]


def test_quicklook_without_background_and_default_title(glacier, tmp_path):
    fig = quicklook_figure(glacier)
    ax, cax = fig.axes
    assert ax.get_title(loc="left") == "2016-07-18 → 2016-08-03 (Δt 16 days), Landsat 8"
    assert ax.get_xlabel() == "easting (km), WGS 84 / UTM zone 7N"
    assert ax.get_ylabel() == "northing (km)"
    assert cax.get_ylabel().startswith("speed (m/yr, log scale")
    named = quicklook_figure(glacier.assign_attrs(site_name="Yahtse Glacier"))
    assert (
        named.axes[0]
        .get_title(loc="left")
        .startswith("Yahtse Glacier  2016-07-18 → 2016-08-03 (Δt 16 days)")
    )
    path = quicklook(glacier, tmp_path / "q.png", title="Yahtse")
    png = matplotlib.image.imread(path)
    assert png.shape[1] == round(QUICKLOOK_WIDTH_IN * QUICKLOOK_DPI)
    assert png[..., :3].std() > 0.1


def _render(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(float) / 255


def _map_positions(fig: Figure, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates (m) of the masked picture pixels that lie inside the map axes."""
    ax = fig.axes[0]
    rows, cols = np.nonzero(mask)
    height = mask.shape[0]
    display = np.column_stack([cols + 0.5, height - rows - 0.5])
    bbox = ax.get_window_extent()
    inside = (
        (display[:, 0] > bbox.x0)
        & (display[:, 0] < bbox.x1)
        & (display[:, 1] > bbox.y0)
        & (display[:, 1] < bbox.y1)
    )
    x, y = ax.transData.inverted().transform(display[inside]).T
    return x, y


def _pixels_at(fig: Figure, rgb: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The rendered RGB at map points (x, y)."""
    col, row_up = fig.axes[0].transData.transform(np.column_stack([x, y])).T
    rows = (rgb.shape[0] - row_up).astype(int)
    return rgb[rows, col.astype(int)]


def test_speed_layer_and_background_land_where_they_belong(reference_image):
    _, transform = reference_image
    # Fast flow (towards the east) only in the north-east quadrant of the nodes, NaN elsewhere.
    dx_px = np.full((NY, NX), np.nan)
    dy_px = np.full((NY, NX), np.nan)
    dx_px[: NY // 2, NX // 2 :] = 4.0
    dy_px[: NY // 2, NX // 2 :] = 0.0
    ds = make_dataset(dx_px, dy_px, v_error=np.full((NY, NX), 20.0))
    # A dark background with a bright block in its south-west quadrant.
    background = np.zeros((1087, 1698))
    background[1087 // 2 :, : 1698 // 2] = 1000.0
    background[0, 0] = 500.0  # percentile stretch needs some spread
    fig = quicklook_figure(ds, background, transform)
    rgb = _render(fig)
    mid_x = transform.c + transform.a * 1698 / 2
    mid_y = transform.f + transform.e * 1087 / 2

    node = Affine.from_gdal(*ds.attrs["transform"])
    tolerance_m = 60.0  # about two picture pixels

    # The one speed (1369 m/yr), in its colour on the log scale, over black at full opacity
    # for clearly moving ice.
    norm = fig.axes[1]._colorbar.norm
    speed = float(np.nanmax(ds["v"].values))
    expected = SPEED_ALPHA_MOVING * np.array(colormaps[SPEED_CMAP](norm(speed))[:3])
    coloured = np.abs(rgb - expected).max(axis=2) < 0.03
    x, y = _map_positions(fig, coloured)
    assert x.size > 10_000
    # The coloured block spans the north-east quarter of the node grid, edges included.
    assert x.min() == pytest.approx(node.c + node.a * (NX // 2), abs=tolerance_m)
    assert x.max() == pytest.approx(node.c + node.a * NX, abs=tolerance_m)
    assert y.max() == pytest.approx(node.f, abs=tolerance_m)
    assert y.min() == pytest.approx(node.f + node.e * (NY // 2), abs=tolerance_m)

    white = (rgb > 0.9).all(axis=2)
    x, y = _map_positions(fig, white)
    south_west = (x < mid_x + tolerance_m) & (y < mid_y + tolerance_m)
    assert south_west.sum() > 50_000
    # The bright block fills the south-west quarter of the image, up to its edges; the only
    # other white is the arrows', in the north-east, and the furniture's (scale bar box).
    assert x[south_west].min() == pytest.approx(transform.c, abs=tolerance_m)
    assert x[south_west].max() == pytest.approx(mid_x, abs=tolerance_m)
    assert y[south_west].max() == pytest.approx(mid_y, abs=tolerance_m)
    assert y[south_west].min() == pytest.approx(transform.f + transform.e * 1087, abs=tolerance_m)


def test_speed_scale_is_logarithmic_from_the_noise_floor(glacier):
    ds = glacier.assign(v_error=glacier["v"] * 0 + 30.0).assign_attrs(
        stable_v_error_median_m_per_yr=27.9
    )
    fig = quicklook_figure(ds)
    bar = fig.axes[1]._colorbar
    assert isinstance(bar.norm, LogNorm)
    # Floor: the stable-ground error (27.9 m/yr) rounded down to 1, 2 or 5 x 10^k.
    assert bar.norm.vmin == 20.0
    # Top: a round number at or above the 99th percentile.
    p99 = float(np.nanpercentile(ds["v"].values, 99))
    assert p99 <= bar.norm.vmax <= 2.5 * p99
    assert bar.norm.vmax in (1e3, 2e3, 5e3, 1e4)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert {"20", "100", "1000"} <= set(labels)
    # Equal ratios of speed get equal steps of colour.
    assert bar.norm(200.0) - bar.norm(20.0) == pytest.approx(bar.norm(2000.0) - bar.norm(200.0))
    # Without the stable-ground statistic: the median v_error; never below 1 m/yr.
    assert speed_floor([glacier.assign(v_error=glacier["v"] * 0 + 7.0)]) == 5.0
    assert speed_floor([glacier.assign(v_error=glacier["v"] * 0 + 0.2)]) == 1.0
    assert speed_floor([glacier]) == MIN_SPEED_FLOOR_M_PER_YR


def test_no_data_is_transparent_over_the_grey_image():
    # Background: grey 400 with dark (0) and bright (1000) strips that set the 2 % / 98 %
    # stretch to 0 and 1000, so the 400 region must come out exactly 40 % grey.
    background = np.full((1087, 1698), 400.0)
    background[:120] = 0.0
    background[-120:] = 1000.0
    dx_px = np.full((NY, NX), 3.0)
    dy_px = np.full((NY, NX), -1.0)
    dx_px[:, : NX // 2] = np.nan  # the western half of the nodes has no data
    dy_px[:, : NX // 2] = np.nan
    ds = make_dataset(dx_px, dy_px, v_error=np.full((NY, NX), 20.0))
    fig = quicklook_figure(ds, background, IMAGE_TRANSFORM)
    rgb = _render(fig)
    node = Affine.from_gdal(*ds.attrs["transform"])
    # Sample the no-data half, away from its edge, the strips and the scale bar's corner.
    xs = np.linspace(node.c + 0.1 * NX * node.a, node.c + 0.4 * NX * node.a, 40)
    ys = np.linspace(6681577.5 - 300 * 15, 6681577.5 - 800 * 15, 40)
    gx, gy = np.meshgrid(xs, ys)
    nan_px = _pixels_at(fig, rgb, gx.ravel(), gy.ravel())
    assert np.abs(nan_px - 0.4).max() <= 1.5 / 255
    # Where there is data, the same background is tinted (but where white arrows cross).
    data_px = _pixels_at(fig, rgb, gx.ravel() + 0.55 * NX * node.a, gy.ravel())
    assert ((data_px.max(axis=1) - data_px.min(axis=1)) > 0.1).mean() > 0.9


def _arrow_nodes_drawn(fig: Figure, ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Node (row, col) of each drawn flow arrow."""
    (q,) = [c for c in fig.axes[0].collections if c.get_gid() == "flow-arrows"]
    node = Affine.from_gdal(*ds.attrs["transform"])
    x, y = q.get_offsets().T
    col, row = ~node @ (np.asarray(x), np.asarray(y))
    assert np.allclose(col % 1, 0.5) and np.allclose(row % 1, 0.5)  # on node centres
    return row.astype(int), col.astype(int)


def test_arrows_only_on_good_moving_ice(glacier):
    v = glacier["v"].values
    err = np.full(v.shape, 20.0)
    quality = np.zeros(v.shape, np.uint8)
    quality[NY // 3 : NY // 2, NX // 3 : 2 * NX // 3] = 8  # flagged (finite values kept)
    ds = make_dataset(glacier["dx"].values, glacier["dy"].values, v_error=err, quality=quality)
    fig = quicklook_figure(ds)
    rows, cols = _arrow_nodes_drawn(fig, ds)
    assert rows.size > 50
    assert np.isfinite(v[rows, cols]).all()
    assert (quality[rows, cols] == 0).all()
    assert (v[rows, cols] > 3 * err[rows, cols]).all()  # no arrows on noise-level ground
    # About 30 arrows across, whatever the grid: no two arrows closer than a node stride.
    assert 20 <= np.unique(cols).size <= 40

    # With outlines: arrows only inside them.
    node = Affine.from_gdal(*ds.attrs["transform"])
    x0, y0 = node @ (0.45 * NX, 0.2 * NY)
    x1, y1 = node @ (NX, 0.8 * NY)
    outline = gpd.GeoSeries([box(x0, y1, x1, y0)])
    fig = quicklook_figure(ds, outlines=outline)
    rows, cols = _arrow_nodes_drawn(fig, ds)
    assert rows.size > 20
    x, y = node @ (cols + 0.5, rows + 0.5)
    assert ((x > x0) & (x < x1) & (y < y0) & (y > y1)).all()
    assert (quality[rows, cols] == 0).all()


@pytest.mark.parametrize("step_px", [2, 8, 40])
def test_arrow_density_adapts_to_the_grid(step_px):
    """Whatever the node spacing, about 30 arrows across the map."""
    ny, nx = (1087 - 32) // step_px + 1, (1698 - 32) // step_px + 1
    ds = velocity_dataset(
        np.full((ny, nx), 3.0),
        np.full((ny, nx), 1.0),
        np.ones((ny, nx)),
        np.ones((ny, nx)),
        image_transform=IMAGE_TRANSFORM,
        row0_px=16,
        col0_px=16,
        step_px=step_px,
        crs_wkt=rasterio.crs.CRS.from_epsg(32607).to_wkt(),
        dt_days=16.0,
        v_error=np.full((ny, nx), 10.0),
    )
    rows, cols = _arrow_nodes_drawn(quicklook_figure(ds), ds)
    assert 20 <= np.unique(cols).size <= 45


def test_map_furniture(glacier):
    fig = quicklook_figure(glacier)
    ax = fig.axes[0]
    (bar,) = [a for a in ax.artists if a.get_gid() == "scale-bar"]
    # A round length, about a fifth of the 25 km wide map.
    assert bar.txt_label.get_text() == "5 km"
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(5000.0)
    north = [t for t in ax.texts if t.get_gid() == "north-arrow"]
    label = [t for t in ax.texts if t.get_gid() == "north-arrow-label"]
    assert len(north) == 1 and label[0].get_text() == "N"
    # True north vs grid north at the map centre, as PROJ's meridian convergence gives it.
    left, right, bottom, top = extent(Affine.from_gdal(*glacier.attrs["transform"]), NY, NX)
    cx, cy = (left + right) / 2, (bottom + top) / 2
    proj = pyproj.Proj("EPSG:32607")
    lon, lat = proj(cx, cy, inverse=True)
    expected = -proj.get_factors(lon, lat).meridian_convergence
    assert 0.1 < abs(expected) < 1.0  # UTM near the central meridian: a fraction of a degree
    angle = grid_convergence_deg(glacier.attrs["crs_wkt"], cx, cy)
    assert angle == pytest.approx(expected, abs=1e-3)
    tail = np.array(north[0].xyann)
    assert np.degrees(np.arctan2(-tail[0], -tail[1])) == pytest.approx(angle, abs=1e-6)
    # On a polar stereographic grid, a quarter turn off the central meridian: 90 degrees.
    x, y = pyproj.Proj("EPSG:3413")(45.0, 75.0)
    assert grid_convergence_deg(pyproj.CRS(3413).to_wkt(), x, y) == pytest.approx(-90.0)


def test_background_is_reduced_to_the_map_resolution():
    grey, factor = background_grey(np.random.default_rng(1).random((4000, 8000)), (1000, 600))
    assert factor == 6
    assert 1000 <= grey.shape[1] < 2000 and grey.shape == (4000 // 6, 8000 // 6)
    assert np.nanmin(grey) == 0.0 and np.nanmax(grey) == 1.0


def test_quicklook_of_an_empty_or_tiny_product(tmp_path):
    empty = make_dataset(np.full((4, 5), np.nan), np.full((4, 5), np.nan))
    png = matplotlib.image.imread(quicklook(empty, tmp_path / "empty.png"))
    assert png.shape[1] == round(QUICKLOOK_WIDTH_IN * QUICKLOOK_DPI)
    tiny = make_dataset(np.ones((2, 3)), np.zeros((2, 3)))
    assert quicklook(tiny, tmp_path / "tiny.png").stat().st_size > 0


def test_quicklook_rejects_bad_input(glacier, reference_image, tmp_path):
    image, _ = reference_image
    with pytest.raises(InputError, match="background_transform"):
        quicklook(glacier, tmp_path / "q.png", background=image)
    with pytest.raises(InputError, match="north-up"):
        quicklook(glacier, tmp_path / "q.png", image, Affine(15, 1, 0, 1, -15, 0))
    with pytest.raises(InputError, match="'v'"):
        quicklook(glacier.drop_vars("v"), tmp_path / "q.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_picture(glacier, tmp_path, monkeypatch):
    target = tmp_path / "quicklook.png"
    target.write_bytes(b"old picture")

    def crash(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Figure, "savefig", crash)
    with pytest.raises(OSError, match="simulated"):
        quicklook(glacier, target)
    assert target.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["quicklook.png"]

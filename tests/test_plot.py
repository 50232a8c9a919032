"""Quick looks: real PNG files, read back and inspected pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glacierflow.errors import InputError
from glacierflow.plot import QUICKLOOK_DPI, QUICKLOOK_WIDTH_IN, quicklook, quicklook_figure
from glacierflow.velocity import velocity_dataset

YAHTSE = Path(__file__).resolve().parents[1] / "src" / "glacierflow" / "data" / "yahtse"
REF_IMAGE = YAHTSE / "LC80630182016200LGN00_B8_yahtse.TIF"
IMAGE_TRANSFORM = Affine(15, 0, 465067.5, 0, -15, 6681577.5)
ROW0_PX, COL0_PX, STEP_PX = 16, 16, 8
# Nodes covering the 1087 x 1698 pixel Yahtse scene.
NY, NX = (1087 - 2 * ROW0_PX) // STEP_PX + 1, (1698 - 2 * COL0_PX) // STEP_PX + 1


def make_dataset(dx_px: np.ndarray, dy_px: np.ndarray) -> xr.Dataset:
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
        },
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
    assert fig.axes[0].get_title(loc="left") == "Landsat 8  2016-07-18 → 2016-08-03  (Δt = 16 days)"
    assert fig.axes[0].get_xlabel() == "easting (km)"
    assert fig.axes[1].get_ylabel() == "speed (m/yr)"
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


def test_speed_layer_and_background_land_where_they_belong(reference_image):
    _, transform = reference_image
    # Fast flow (towards the east) only in the north-east quadrant of the nodes, NaN elsewhere.
    dx_px = np.full((NY, NX), np.nan)
    dy_px = np.full((NY, NX), np.nan)
    dx_px[: NY // 2, NX // 2 :] = 4.0
    dy_px[: NY // 2, NX // 2 :] = 0.0
    ds = make_dataset(dx_px, dy_px)
    # A dark background with a bright block in its south-west quadrant.
    background = np.zeros((1087, 1698))
    background[1087 // 2 :, : 1698 // 2] = 1000.0
    background[0, 0] = 500.0  # percentile stretch needs some spread
    fig = quicklook_figure(ds, background, transform)
    rgb = _render(fig)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mid_x = transform.c + transform.a * 1698 / 2
    mid_y = transform.f + transform.e * 1087 / 2

    node = Affine.from_gdal(*ds.attrs["transform"])
    tolerance_m = 60.0  # about two picture pixels

    yellow = (r > 0.55) & (g > 0.55) & (b < 0.3)  # top of viridis over a dark image
    x, y = _map_positions(fig, yellow)
    assert x.size > 10_000
    # The coloured block spans the north-east quarter of the node grid, edges included.
    assert x.min() == pytest.approx(node.c + node.a * (NX // 2), abs=tolerance_m)
    assert x.max() == pytest.approx(node.c + node.a * NX, abs=tolerance_m)
    assert y.max() == pytest.approx(node.f, abs=tolerance_m)
    assert y.min() == pytest.approx(node.f + node.e * (NY // 2), abs=tolerance_m)

    white = (r > 0.9) & (g > 0.9) & (b > 0.9)
    x, y = _map_positions(fig, white)
    south_west = (x < mid_x + tolerance_m) & (y < mid_y + tolerance_m)
    assert south_west.sum() > 50_000
    # The bright block fills the south-west quarter of the image, up to its edges; the only
    # other white is the arrows', in the north-east.
    assert x[south_west].min() == pytest.approx(transform.c, abs=tolerance_m)
    assert x[south_west].max() == pytest.approx(mid_x, abs=tolerance_m)
    assert y[south_west].max() == pytest.approx(mid_y, abs=tolerance_m)
    assert y[south_west].min() == pytest.approx(transform.f + transform.e * 1087, abs=tolerance_m)
    assert ((x[~south_west] > mid_x) & (y[~south_west] > mid_y)).all()


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

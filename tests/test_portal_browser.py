"""The dataset page in a real browser: headless Chromium (Debian's) driven by Playwright.

Skipped, with the reason, where Playwright or ``/usr/bin/chromium`` is missing (a developer's
laptop); under CI (``CI=true``), where ``.ci/run`` installs Chromium, a missing browser fails.
Screenshots are kept in ``tests/artifacts/portal/`` (git-ignored); their paths are printed.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import portal_testing as pt
import pytest
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

CHROMIUM = Path(os.environ.get("GLACIERFLOW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "portal"
VIEWPORT = {"width": 1360, "height": 1000}


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed (pip install -e .[test])"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GLACIERFLOW_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing_browser()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pt.PortalServer]:
    catalog = pt.catalog(tmp_path_factory)
    srv = pt.PortalServer(catalog, tmp_path_factory.mktemp("browser-server") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def page(browser: Any, server: pt.PortalServer) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on(
        "requestfailed",
        lambda req: (
            errors.append(f"request failed: {req.url}")
            if not req.url.startswith(server.url)
            else None
        ),
    )
    page.errors = errors
    yield page
    context.close()
    assert not errors, errors  # no script error, no request leaving the portal


def _save(page: Any, name: str, locator: Any | None = None) -> np.ndarray:
    """Screenshot the page (or one element) into the artifacts; return its RGB pixels."""
    path = ARTIFACTS / name
    target = locator if locator is not None else page
    kwargs = {} if locator is not None else {"full_page": True}
    png = target.screenshot(path=str(path), **kwargs)
    print(f"screenshot: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(png) as mem, mem.open() as src:
            return np.moveaxis(src.read()[:3], 0, -1).astype(np.int16)


def _viridis_fraction(rgb: np.ndarray) -> float:
    """Share of pixels within a small distance of some viridis colour (excluding greys)."""
    from rio_tiler.colormap import cmap

    table = np.array([c[:3] for c in cmap.get("viridis").values()], dtype=np.int16)[::4]
    flat = rgb.reshape(-1, 3)[::7]
    chroma = flat.max(axis=1) - flat.min(axis=1)
    dist = np.abs(flat[:, None, :] - table[None, :, :]).sum(axis=2).min(axis=1)
    return float(((dist < 24) & (chroma > 40)).mean())


def _open(page: Any, server: pt.PortalServer, dataset: str) -> None:
    page.goto(f"{server.url}/datasets/{dataset}")
    page.wait_for_selector("body[data-tiles-loaded^='annual_'], body[data-tiles-loaded^='pair_']")
    page.wait_for_timeout(250)  # let the browser paint the loaded tiles


def test_dataset_page_renders_the_record(
    page: Any, server: pt.PortalServer, artifacts: Path
) -> None:
    _open(page, server, pt.ANNUAL_ID)
    text = page.inner_text("main")
    for expected in (
        "Annual velocity of Yahtse Glacier (test stand-ins), 2016-2017",
        "Annual composites in the stack layout",
        "KEYWORDS",
        "Icy Bay",
        "WGS 84 / UTM zone 7N",
        "2016-01-01 to 2017-12-31",
        "SPATIAL EXTENT",
        "HOW TO CITE",
        "doi:10.3390/rs9101064",
        "TO BE FILLED: supporting project",
        "v_2016.tif",
        "v_2017.tif",
    ):
        assert expected in text, expected
    north = page.inner_text(".ext-n")
    assert north.endswith("° N") and north.split("\n")[-1].startswith("60.26")
    _save(page, "dataset_page.png")


def test_map_shows_speed_tiles_and_the_year_selector_changes_the_layer(
    page: Any, server: pt.PortalServer, artifacts: Path
) -> None:
    _open(page, server, pt.ANNUAL_ID)
    select = page.locator("#layer-select")
    assert select.input_value() == "annual_2017"  # the most recent year first
    map_box = page.locator("#map")
    page.evaluate("document.querySelector('#legend').style.display = 'none'")
    rgb_2017 = _save(page, "map_2017.png", map_box)
    assert _viridis_fraction(rgb_2017) > 0.15, "the map shows no speed tiles"

    select.select_option("annual_2016")
    page.wait_for_selector("body[data-tiles-loaded='annual_2016']")
    page.wait_for_timeout(300)
    rgb_2016 = _save(page, "map_2016.png", map_box)
    assert _viridis_fraction(rgb_2016) > 0.15
    sources = page.eval_on_selector_all(".leaflet-tile-pane img", "imgs => imgs.map(i => i.src)")
    assert sources and all("/items/annual_2016/tiles/" in s for s in sources)
    # 2017 is the 2016 field at half speed: the same place must look clearly different.
    assert np.abs(rgb_2016 - rgb_2017).mean() > 4, "the layer did not change"
    # ... and brighter (faster) in 2016 on viridis, whose lightness grows with speed.
    assert rgb_2016.sum(axis=2).mean() > rgb_2017.sum(axis=2).mean()


def test_a_click_on_the_map_plots_the_time_series(
    page: Any, server: pt.PortalServer, artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _open(page, server, pt.ANNUAL_ID)
    lon, lat, _, _ = pt.valid_lonlat(pt.products(tmp_path_factory)["pair_cog"])
    page.evaluate(
        "([lat, lon]) => { window.glacierflowPortal.map"
        ".setView([lat, lon], 12, {animate: false}); }",
        [lat, lon],
    )
    point = page.evaluate(
        "([lat, lon]) => { const m = window.glacierflowPortal.map;"
        " const p = m.latLngToContainerPoint([lat, lon]); return [p.x, p.y]; }",
        [lat, lon],
    )
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + point[0], box["y"] + point[1])
    page.wait_for_selector("#plot[data-state='done']")
    assert page.get_attribute("#plot", "data-points") == "2"
    assert page.locator("#plot svg circle.pt").count() == 2
    assert page.locator("#plot svg circle.pt.current").count() == 1
    rows = page.locator("#series-table-wrap tbody tr").all_inner_texts()
    assert [r.split("\t")[0] for r in rows] == ["2016", "2017"]
    speeds = [float(r.split("\t")[2]) for r in rows]
    assert speeds[1] == pytest.approx(pt.ANNUAL_2017_SCALE * speeds[0], abs=0.1)
    assert page.locator("#csv-link:not(.hidden)").count() == 1
    page.locator("#series").scroll_into_view_if_needed()
    rgb = _save(page, "time_series.png", page.locator("#series"))
    teal = (np.abs(rgb - np.array([10, 110, 138])).sum(axis=2) < 40).sum()
    assert teal > 50, "the plot's points are not drawn"
    _save(page, "dataset_page_with_series.png")


def test_list_page_searches(page: Any, server: pt.PortalServer, artifacts: Path) -> None:
    page.goto(server.url + "/")
    assert "2 datasets · 3 products" in page.inner_text(".hero")
    assert page.locator("article.result").count() == 2
    page.fill("#start", "2017")
    page.click("form.search-form button[type=submit]")
    page.wait_for_load_state()
    titles = page.locator("article.result h2").all_inner_texts()
    assert titles == ["Annual velocity of Yahtse Glacier (test stand-ins), 2016-2017"]
    _save(page, "dataset_list.png")


ARROW_RGB = np.array([255, 42, 109])


def _arrow_pixels(rgb: np.ndarray) -> int:
    return int((np.abs(rgb - ARROW_RGB).sum(axis=2) < 60).sum())


def test_the_map_has_the_reference_image_under_the_speed_and_flow_arrows_over_it(
    page: Any, server: pt.PortalServer, artifacts: Path
) -> None:
    _open(page, server, pt.PAIR_ID)
    page.wait_for_selector("body[data-base-loaded='reference_image']")
    page.wait_for_function("Number(document.body.getAttribute('data-arrows') || 0) > 20")
    page.wait_for_timeout(300)
    page.evaluate("document.querySelector('#legend').style.display = 'none'")
    page.evaluate("document.querySelector('.leaflet-control-layers').style.display = 'none'")
    map_box = page.locator("#map")
    rgb = _save(page, "map_base_arrows.png", map_box)
    page.evaluate(
        "() => { const s = window.glacierflowPortal; s.map.removeLayer(s.base);"
        " s.map.removeLayer(s.arrows); }"
    )
    page.wait_for_timeout(300)
    bare = _save(page, "map_without_base_and_arrows.png", map_box)

    # the base layer: neutral grey pixels, of varied levels (an image, not a flat fill), that
    # are gone without it: where speed is NaN (open water, gaps) the image shows
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    base = (chroma <= 4) & (np.abs(rgb - bare).sum(axis=2) > 30)
    assert base.mean() > 0.05, f"only {base.mean():.1%} of the map shows the base layer"
    assert rgb.mean(axis=2)[base].std() > 15, "the grey pixels are flat: no image"
    # ... and the speed colours are still drawn over it
    assert _viridis_fraction(rgb) > 0.15 and _viridis_fraction(bare) > 0.15
    # the flow arrows, in their own colour, gone with their layer
    assert _arrow_pixels(rgb) > 300
    assert _arrow_pixels(bare) < 20, "the arrow colour comes from something else"


def test_a_pair_is_plotted_as_its_speed_over_its_time_span(
    page: Any, server: pt.PortalServer, artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _open(page, server, pt.PAIR_ID)
    lon, lat, _, _ = pt.valid_lonlat(pt.products(tmp_path_factory)["pair_cog"])
    page.evaluate(
        "([lat, lon]) => { window.glacierflowPortal.map"
        ".setView([lat, lon], 12, {animate: false}); }",
        [lat, lon],
    )
    point = page.evaluate(
        "([lat, lon]) => { const m = window.glacierflowPortal.map;"
        " const p = m.latLngToContainerPoint([lat, lon]); return [p.x, p.y]; }",
        [lat, lon],
    )
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + point[0], box["y"] + point[1])
    page.wait_for_selector("#plot[data-state='done']")
    segment = page.locator("#plot svg line.pair-span")
    assert segment.count() == 1 and page.locator("#plot svg circle.pt").count() == 0
    x1, x2 = (float(segment.get_attribute(a)) for a in ("x1", "x2"))
    y1, y2 = (float(segment.get_attribute(a)) for a in ("y1", "y2"))
    assert y1 == y2 and x2 - x1 > 300  # horizontal, across the 16 days of the pair
    rows = page.locator("#series-table-wrap tbody tr").all_inner_texts()
    assert rows[0].split("\t")[1] == "2016-07-18 – 2016-08-03"
    page.locator("#series").scroll_into_view_if_needed()
    _save(page, "time_series_pair.png", page.locator("#series"))

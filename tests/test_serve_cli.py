"""``glacierflow serve`` as a user starts it: every option from the command line, in a real
server process (a folder option reaches the server processes; ``--server-processes`` and the
old ``--workers`` name)."""

from __future__ import annotations

from pathlib import Path

import morecantile
import portal_testing as pt
import pytest
import rasterio
from rasterio.warp import transform_bounds

TMS = morecantile.tms.get("WebMercatorQuad")
TILES = f"/api/datasets/{pt.PAIR_ID}/items/pair_20160718_20160803/tiles"


def _tile_path(cog: Path, z: int) -> str:
    with rasterio.open(cog) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    tile = TMS.tile(west + 1e-4, north - 1e-4, z)
    return f"{TILES}/{z}/{tile.x}/{tile.y}.png"


@pytest.mark.parametrize("processes_flag", ["server_processes", "workers"])
def test_serve_with_a_cache_dir_starts_and_caches_tiles_there(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, processes_flag: str
) -> None:
    catalog = pt.catalog(tmp_path_factory)
    cache = tmp_path / "my tiles"
    server = pt.PortalServer(
        catalog, tmp_path / "serve.log", {"cache_dir": cache, processes_flag: 1}, cli=True
    )
    try:
        status, _, body = server.request(
            "GET", _tile_path(pt.products(tmp_path_factory)["pair_cog"], 3)
        )
        assert status == 200 and body.startswith(b"\x89PNG")
        assert list(cache.rglob("*.png")), "the tile was not cached in --cache-dir"
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert "Traceback" not in log
    note = "serve --workers is now --server-processes"
    assert (note in log) == (processes_flag == "workers")

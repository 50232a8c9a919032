"""Load on a real portal server: requests/s and latency for four kinds of request.

Publishes the bundled Yahtse pair (and two annual stand-ins) into a temporary catalog, runs
``glacierflow serve`` as a subprocess, and sends, at concurrency 1, 8, 32 and 128 (one thread
per client, each with its own connections), for a fixed time each:

- ``dataset JSON``  GET /api/datasets/<id>
- ``z10 tile``      a map tile over the glacier (rendered once, then from the cache)
- ``z0 tile``       the world tile (the product is a few pixels of it)
- ``1 MB range``    a 1 MB Range request of a 1.3 MB file (the quick-look PNG) of the catalog

Prints a markdown table: requests/s, p50 and p99 latency (ms), errors (any status other than
200/206). Zero errors at 128 means the burst was queued, not refused.

Usage: ``python benchmarks/portal_load.py [--seconds 3]`` (about 1 minute in all).
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import portal_testing as pt  # noqa: E402

CONCURRENCY = (1, 8, 32, 128)


def _client(port: int, path: str, headers: dict[str, str], stop: float, out: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < stop:
        t0 = time.monotonic()
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            ok = response.status in (200, 206)
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        except OSError:
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out.append((time.monotonic() - t0, ok))
    conn.close()


def measure(port: int, path: str, headers: dict[str, str], clients: int, seconds: float) -> dict:
    """Requests/s, p50/p99 latency (ms) and errors of ``clients`` clients for ``seconds``."""
    results: list[list] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_client, args=(port, path, headers, stop, results[i]))
        for i in range(clients)
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    done = [r for rs in results for r in rs]
    latency = np.array([d for d, _ in done]) * 1000
    return {
        "rps": len(done) / wall,
        "p50": float(np.percentile(latency, 50)) if done else float("nan"),
        "p99": float(np.percentile(latency, 99)) if done else float("nan"),
        "errors": sum(1 for _, ok in done if not ok),
        "n": len(done),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="portal_load_"))
    catalog = pt._catalog(base)
    big = catalog / pt.PAIR_ID / "pair_20160718_20160803" / "quicklook.png"
    size = big.stat().st_size
    server = pt.PortalServer(catalog, base / "server.log")
    try:
        cog = pt._products(base)["pair_cog"]
        import morecantile
        import rasterio
        from rasterio.warp import transform_bounds

        with rasterio.open(cog) as src:
            west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        t10 = morecantile.tms.get("WebMercatorQuad").tile(
            (west + east) / 2, (south + north) / 2, 10
        )
        tiles = f"/api/datasets/{pt.PAIR_ID}/items/pair_20160718_20160803/tiles"
        one_mb = min(2**20, size)
        cases = {
            "dataset JSON": (f"/api/datasets/{pt.PAIR_ID}", {}),
            "z10 tile": (f"{tiles}/10/{t10.x}/{t10.y}.png", {}),
            "z0 tile": (f"{tiles}/0/0/0.png", {}),
            f"{one_mb / 2**20:.2g} MB range": (
                f"/files/{pt.PAIR_ID}/pair_20160718_20160803/velocity.nc",
                {"Range": f"bytes=0-{one_mb - 1}"},
            ),
        }
        print(f"file for ranges: {size / 1e6:.1f} MB; {args.seconds:g} s per cell\n")
        print("| request | clients | requests/s | p50 ms | p99 ms | errors |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, (path, headers) in cases.items():
            for clients in CONCURRENCY:
                r = measure(server.port, path, headers, clients, args.seconds)
                print(
                    f"| {name} | {clients} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} "
                    f"| {r['errors']} of {r['n']} |",
                    flush=True,
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()

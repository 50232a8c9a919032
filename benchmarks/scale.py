"""Full-scene scale: tiled matching of a 12,000 x 11,000 px pair with bounded memory.

Usage: ``python benchmarks/scale.py [--rows 11000 --cols 12000] [--workers N]``

The pair is built on disk, strip by strip, from real texture (the Yahtse Landsat 8 scene,
mirrored) moved by a known field: ``dx = 3 + 2 sin(2 pi y / 3000)`` px, ``dy = 0.4`` px, whose
inverse is exact row by row, so accuracy is checked too. Reported: wall time, nodes/s, peak
resident memory of the run (main process and workers), and nodes/s as a fraction of the ceiling
measured in the same run (the batched FFTs one node needs, per second, on all cores), and the
ratio to the per-node ``cv2.matchTemplate`` loop of ``speed.py`` timed on a crop of the same
pair. Then the seed's 30 m product (step 2 px, the dense kernel) on a 2,048 px crop, against its
own ceiling (the products and box sums a node needs, per second), extrapolated to the seed's
region (about 12,000 x 11,000 px); and the same with the Karakoram example's 64 px chips and
+/-32 px search on a 1,024 px crop (the vs_cv2_loop ratio there still divides by the loop's
rate at chip 32 and search 16).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import scipy.fft as sfft
from rasterio.windows import Window
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from _common import table, yahtse_reference  # noqa: E402

from glacierflow.execute import Executor  # noqa: E402
from glacierflow.matching import MatchSettings  # noqa: E402
from glacierflow.scenes import read_header  # noqa: E402
from glacierflow.tiling import tiled_match  # noqa: E402
from glacierflow.track import MATCHING_MODULES  # noqa: E402

STRIP = 1024
MARGIN = 16


def field_dx(y: np.ndarray) -> np.ndarray:
    return 3.0 + 2.0 * np.sin(2 * np.pi * y / 3000.0)


FIELD_DY = 0.4


def texture_rows(tex: np.ndarray, r0: int, r1: int, cols: int) -> np.ndarray:
    """Rows r0..r1 of the texture mirrored to infinity (period 2 x size along each axis)."""
    h, w = tex.shape
    rr = np.arange(r0, r1) % (2 * h)
    rr = np.where(rr < h, rr, 2 * h - 1 - rr)
    cc = np.arange(cols) % (2 * w)
    cc = np.where(cc < w, cc, 2 * w - 1 - cc)
    return tex[np.ix_(rr, cc)]


def build_pair(folder: Path, rows: int, cols: int) -> tuple[Path, Path]:
    tex = yahtse_reference()
    profile = dict(
        driver="GTiff",
        height=rows,
        width=cols,
        count=1,
        dtype="float32",
        crs="EPSG:32643",
        transform=rasterio.Affine(15, 0, 500000, 0, -15, 4000000),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
    )
    ref_path = folder / "LE71480352000168SGS00_B8.TIF"
    sec_path = folder / "LE71480352001202SGS00_B8.TIF"
    with (
        rasterio.open(ref_path, "w", **profile) as ref,
        rasterio.open(sec_path, "w", **profile) as sec,
    ):
        for r0 in range(0, rows, STRIP):
            r1 = min(rows, r0 + STRIP)
            ref.write(
                texture_rows(tex, r0, r1, cols).astype(np.float32),
                1,
                window=Window(0, r0, cols, r1 - r0),
            )
            # sec(q) = ref(q - d(p)) with p_y = q_y - dy exactly, p_x = q_x - dx(p_y).
            lo = r0 - MARGIN
            block = texture_rows(tex, lo, r1 + MARGIN, cols)
            qy, qx = np.mgrid[r0:r1, 0:cols].astype(np.float64)
            py = qy - FIELD_DY
            px = qx - field_dx(py)
            out = ndimage.map_coordinates(block, [py - lo, px], order=3, mode="mirror")
            sec.write(out.astype(np.float32), 1, window=Window(0, r0, cols, r1 - r0))
    return ref_path, sec_path


def _fft_job(n: int) -> float:
    p = sfft.next_fast_len(40, real=True)
    a = np.random.default_rng(0).random((256, p, p), dtype=np.float32)
    t0 = time.perf_counter()
    for _ in range(n):
        sfft.irfft2(sfft.rfft2(a) * sfft.rfft2(a), s=(p, p))
    return 256 * n / (time.perf_counter() - t0)


def fft_ceiling(workers: int) -> float:
    """Nodes/s if a node cost only its FFTs (2 forward, 1 inverse, 40 x 40), on all workers."""
    with ProcessPoolExecutor(workers) as pool:
        return sum(pool.map(_fft_job, [40] * workers))


def _dense_job(seconds: float) -> float:
    import cv2

    rng = np.random.default_rng(0)
    a, b = (rng.random((158, 158), dtype=np.float32) for _ in range(2))
    prod = np.empty_like(a)
    box = np.empty(a.shape, np.float64)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            cv2.multiply(a, b, dst=prod)
            cv2.boxFilter(prod, cv2.CV_64F, (32, 32), dst=box, normalize=False)
        n += 100
    return n * a.size / (time.perf_counter() - t0)


def dense_ceiling(workers: int, step: int, search: int) -> float:
    """Nodes/s if a node cost only its products and box sums (``step**2`` pixels times
    ``(2 search + 1)**2`` offsets, OpenCV), on all workers."""
    with ProcessPoolExecutor(workers) as pool:
        px_per_s = sum(pool.map(_dense_job, [2.0] * workers))
    return px_per_s / (step * step * (2 * search + 1) ** 2)


def cv2_baseline(ref: Path, sec: Path, side: int) -> float:
    """Nodes/s of the per-node ``cv2.matchTemplate`` loop (as ``speed.py``) on a crop."""
    from speed import cv2_loop

    win = Window(0, 0, side, side)
    with rasterio.open(ref) as a, rasterio.open(sec) as b:
        r, s = a.read(1, window=win), b.read(1, window=win)
    t0 = time.perf_counter()
    g, _, _ = cv2_loop(r, s, 32, 16, 8)
    return g.ny * g.nx / (time.perf_counter() - t0)


_WORKER_PEAK_KB = [0]


def _own_peak_kb(_: int) -> int:
    time.sleep(0.2)  # long enough for every worker to take one
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss_mb() -> float:
    """Largest peak resident memory of this process and of the matching workers (asked before
    their pools closed: forkserver workers are not this process's children)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids, _WORKER_PEAK_KB[0]) / 1024.0


def run(
    ref: Path, sec: Path, step: int, workers: int, tile_nodes: int, chip: int = 32, search: int = 16
) -> dict:
    settings = MatchSettings(chip_px=chip, search_px=search, step_px=step, workers=workers)
    # Workers started as glacierflow track starts them, with the compiled loops loaded before
    # their first tile: the steady state of a long run (a process loads them in the background
    # once it has matched enough nodes; these crops are too small to hide that).
    preload = (*MATCHING_MODULES, "glacierflow.matching.fused")
    with Executor(workers, preload=preload) as executor:
        list(executor.map_unordered(abs, range(workers)))  # started before the clock
        t0 = time.perf_counter()
        res = tiled_match(
            read_header(ref), read_header(sec), settings, tile_nodes=tile_nodes, executor=executor
        )
        wall = time.perf_counter() - t0
        peaks = executor.map_unordered(_own_peak_kb, range(4 * workers))
        _WORKER_PEAK_KB[0] = max(_WORKER_PEAK_KB[0], *peaks)
    rows = res.grid.rows_px()[:, None]
    err = np.hypot(res.dx_px - field_dx(rows.astype(float)), res.dy_px - FIELD_DY)
    ok = np.isfinite(err)
    n = res.dx_px.size
    return dict(
        nodes=n,
        wall=wall,
        rate=n / wall,
        median=float(np.median(err[ok])),
        p95=float(np.percentile(err[ok], 95)),
        valid=float(ok.mean()),
    )


def _ceiling(kind: str, workers: int, search: int = 16) -> float:
    return fft_ceiling(workers) if kind == "fft" else dense_ceiling(workers, 2, search)


def _case(ref, sec, step, workers, kind, chip=32, search=16) -> tuple[dict, float]:
    """One run, between two measurements of its kernel's ceiling (their mean is its ceiling: on
    a shared machine the load moves both alike)."""
    before = _ceiling(kind, workers, search)
    r = run(ref, sec, step, workers, 16384, chip=chip, search=search)
    return r, (before + _ceiling(kind, workers, search)) / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=11000)
    ap.add_argument("--cols", type=int, default=12000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--crop", type=int, default=2048, help="side of the step-2 crop, px")
    args = ap.parse_args()
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        ref, sec = build_pair(folder, args.rows, args.cols)
        print(f"built {args.rows} x {args.cols} px pair in {time.perf_counter() - t0:.0f} s")
        base = cv2_baseline(ref, sec, 2048)
        full, ceiling = _case(ref, sec, 8, args.workers, "fft")
        rows_out.append(
            dict(case=f"{args.cols}x{args.rows} step 8", kernel="block FFT", **_fmt(full, ceiling))
        )
        crop_dir = folder / "crop"
        crop_dir.mkdir()
        cref, csec = build_pair(crop_dir, args.crop, args.crop)
        dense, ceiling2 = _case(cref, csec, 2, args.workers, "dense")
        rows_out.append(
            dict(case=f"{args.crop}x{args.crop} step 2", kernel="dense", **_fmt(dense, ceiling2))
        )
        # The Karakoram example's settings: 64 px chips, +/-32 px search, step 2.
        kref, ksec = build_pair(crop_dir, 1024, 1024)
        wide, ceiling3 = _case(kref, ksec, 2, args.workers, "dense", chip=64, search=32)
        rows_out.append(
            dict(case="1024x1024 step 2 chip 64", kernel="dense", **_fmt(wide, ceiling3))
        )
        region_nodes = (11000 // 2) * (12000 // 2)
        hours = region_nodes / dense["rate"] / 3600
        hours_wide = region_nodes / wide["rate"] / 3600
    for row, r in zip(rows_out, (full, dense, wide), strict=True):
        row["vs_cv2_loop"] = f"{r['rate'] / base:.2f}"
    print(
        f"{args.workers} workers; ceilings (mean of before and after each case): block FFT "
        f"{ceiling:,.0f} nodes/s (three 40 x 40 FFTs per node), dense step 2 {ceiling2:,.0f} "
        f"nodes/s and at chip 64 / search 32 {ceiling3:,.0f} nodes/s (products and box sums "
        f"only); per-node cv2.matchTemplate loop on a 2048 px crop at step 8: {base:,.0f} nodes/s"
    )
    print(
        table(
            rows_out,
            [
                "case",
                "kernel",
                "nodes",
                "wall_s",
                "nodes_per_s",
                "vs_cv2_loop",
                "of_ceiling",
                "median_err_px",
                "p95_err_px",
                "valid",
            ],
        )
    )
    print(f"peak resident memory: {peak_rss_mb():,.0f} MB (largest of main process and workers)")
    print(
        f"seed region (12,000 x 11,000 px) at step 2 on {args.workers} workers: {region_nodes:,} "
        f"nodes, about {hours * 60:.1f} min at the step-2 rate (chip 32, search 16), about "
        f"{hours_wide * 60:.1f} min with the Karakoram example's chip 64 and search 32"
    )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _fmt(r: dict, ceiling: float) -> dict:
    return dict(
        nodes=f"{r['nodes']:,}",
        wall_s=f"{r['wall']:.1f}",
        nodes_per_s=f"{r['rate']:,.0f}",
        of_ceiling=f"{r['rate'] / ceiling:.2f}",
        median_err_px=f"{r['median']:.3f}",
        p95_err_px=f"{r['p95']:.3f}",
        valid=f"{r['valid']:.1%}",
    )


if __name__ == "__main__":
    main()

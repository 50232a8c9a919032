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
rate at chip 32 and search 16), and with coarse to fine (``pyramid_levels=2``,
``fine_search_px=8``: a half-resolution pass with the same footprint and reach, then +/-8 px
around its offsets), whose wall time includes its coarse pass.

Two ratios to each ceiling: ``of_ceiling`` in wall time (the run's nodes per second over the
ceiling's, both on all workers), which on a machine shared with other work moves with the load
of the moment; and ``cpu_of_ceiling``, nodes per CPU second of the run (main process and
workers, everything the run did: reading, filters, matching) over the ceiling's nodes per CPU
second, which the load hardly moves. The seed region's minutes are given both ways: from the
wall-clock rate, and from the CPU rate on two otherwise idle cores.
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


def _fft_job(seconds: float) -> tuple[float, float]:
    """Nodes per wall second and per CPU second of one process doing only block FFTs."""
    p = sfft.next_fast_len(40, real=True)
    a = np.random.default_rng(0).random((256, p, p), dtype=np.float32)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            sfft.irfft2(sfft.rfft2(a) * sfft.rfft2(a), s=(p, p))
        n += 10 * 256
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def fft_ceiling(workers: int) -> tuple[float, float]:
    """Nodes/s if a node cost only its FFTs (2 forward, 1 inverse, 40 x 40), on all workers
    (all at once, for 2 s); and nodes per CPU second."""
    with ProcessPoolExecutor(workers) as pool:
        rates = list(pool.map(_fft_job, [2.0] * workers))
    return sum(r[0] for r in rates), float(np.mean([r[1] for r in rates]))


def _dense_job(seconds: float) -> tuple[float, float]:
    """Pixel-offsets per wall second and per CPU second of OpenCV's products and box sums."""
    import cv2

    rng = np.random.default_rng(0)
    a, b = (rng.random((158, 158), dtype=np.float32) for _ in range(2))
    prod = np.empty_like(a)
    box = np.empty(a.shape, np.float64)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            cv2.multiply(a, b, dst=prod)
            cv2.boxFilter(prod, cv2.CV_64F, (32, 32), dst=box, normalize=False)
        n += 100
    return n * a.size / (time.perf_counter() - t0), n * a.size / (time.process_time() - c0)


def dense_ceiling(workers: int, step: int, search: int) -> tuple[float, float]:
    """Nodes/s if a node cost only its products and box sums (``step**2`` pixels times
    ``(2 search + 1)**2`` offsets, OpenCV), on all workers; and nodes per CPU second."""
    with ProcessPoolExecutor(workers) as pool:
        rates = list(pool.map(_dense_job, [2.0] * workers))
    per_node = step * step * (2 * search + 1) ** 2
    return sum(r[0] for r in rates) / per_node, float(np.mean([r[1] for r in rates])) / per_node


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


def _own_usage(_: int) -> tuple[int, float, int]:
    """This worker's id, CPU seconds so far and peak resident memory (kB)."""
    time.sleep(0.2)  # long enough for every worker to take one
    use = resource.getrusage(resource.RUSAGE_SELF)
    return os.getpid(), use.ru_utime + use.ru_stime, use.ru_maxrss


def _workers_usage(executor: Executor, workers: int) -> dict[int, tuple[float, int]]:
    """CPU seconds and peak memory of every worker, by process id."""
    out: dict[int, tuple[float, int]] = {}
    for pid, cpu, peak in executor.map_unordered(_own_usage, range(4 * workers)):
        old = out.get(pid, (0.0, 0))
        out[pid] = (max(old[0], cpu), max(old[1], peak))
    return out


def _self_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def peak_rss_mb() -> float:
    """Largest peak resident memory of this process and of the matching workers (asked before
    their pools closed: forkserver workers are not this process's children)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids, _WORKER_PEAK_KB[0]) / 1024.0


def run(
    ref: Path,
    sec: Path,
    step: int,
    workers: int,
    tile_nodes: int,
    chip: int = 32,
    search: int = 16,
    **options,
) -> dict:
    settings = MatchSettings(
        chip_px=chip, search_px=search, step_px=step, workers=workers, **options
    )
    # Workers started as glacierflow track starts them, with the compiled loops loaded before
    # their first tile: the steady state of a long run (a process loads them in the background
    # once it has matched enough nodes; these crops are too small to hide that).
    preload = (*MATCHING_MODULES, "glacierflow.matching.fused")
    with Executor(workers, preload=preload) as executor:
        list(executor.map_unordered(abs, range(workers)))  # started before the clock
        before = _workers_usage(executor, workers)
        t0, c0 = time.perf_counter(), _self_cpu()
        res = tiled_match(
            read_header(ref), read_header(sec), settings, tile_nodes=tile_nodes, executor=executor
        )
        wall, cpu = time.perf_counter() - t0, _self_cpu() - c0
        after = _workers_usage(executor, workers)
        cpu += sum(v[0] - before.get(pid, (0.0, 0))[0] for pid, v in after.items())
        _WORKER_PEAK_KB[0] = max(_WORKER_PEAK_KB[0], *(v[1] for v in after.values()))
    rows = res.grid.rows_px()[:, None]
    err = np.hypot(res.dx_px - field_dx(rows.astype(float)), res.dy_px - FIELD_DY)
    ok = np.isfinite(err)
    n = res.dx_px.size
    return dict(
        nodes=n,
        wall=wall,
        rate=n / wall,
        cpu_rate=n / cpu,
        median=float(np.median(err[ok])),
        p95=float(np.percentile(err[ok], 95)),
        valid=float(ok.mean()),
    )


def _ceiling(kind: str, workers: int, search: int = 16) -> tuple[float, float]:
    return fft_ceiling(workers) if kind == "fft" else dense_ceiling(workers, 2, search)


def _case(ref, sec, step, workers, kind, chip=32, search=16, **options) -> tuple[dict, tuple]:
    """One run, between two measurements of its kernel's ceiling (their mean is its ceiling: on
    a shared machine the load moves both alike); the ceiling in nodes per wall second on all
    workers and in nodes per CPU second."""
    before = _ceiling(kind, workers, search)
    r = run(ref, sec, step, workers, 16384, chip=chip, search=search, **options)
    after = _ceiling(kind, workers, search)
    return r, ((before[0] + after[0]) / 2, (before[1] + after[1]) / 2)


#: Coarse to fine for the Karakoram example's wide search: +/-8 px around the offsets of a
#: half-resolution pass (at least the Lanczos peak's taps, +/-6 px, and a pixel or two of the
#: coarse pass's error).
COARSE_TO_FINE = dict(pyramid_levels=2, fine_search_px=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=11000)
    ap.add_argument("--cols", type=int, default=12000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--crop", type=int, default=2048, help="side of the step-2 crop, px")
    ap.add_argument("--wide-crop", type=int, default=1024, help="side of the chip-64 crop, px")
    args = ap.parse_args()
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cases = []  # (row of the table, result, ceiling)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        ref, sec = build_pair(folder, args.rows, args.cols)
        print(f"built {args.rows} x {args.cols} px pair in {time.perf_counter() - t0:.0f} s")
        base = cv2_baseline(ref, sec, 2048)
        full, ceiling = _case(ref, sec, 8, args.workers, "fft")
        cases.append((f"{args.cols}x{args.rows} step 8", "block FFT", full, ceiling))
        crop_dir = folder / "crop"
        crop_dir.mkdir()
        cref, csec = build_pair(crop_dir, args.crop, args.crop)
        dense, ceiling2 = _case(cref, csec, 2, args.workers, "dense")
        cases.append((f"{args.crop}x{args.crop} step 2", "dense", dense, ceiling2))
        # The Karakoram example's settings: 64 px chips, +/-32 px search, step 2; in full, and
        # coarse to fine (its ratio is to the same dense ceiling of the full search).
        side = args.wide_crop
        kref, ksec = build_pair(crop_dir, side, side)
        wide, ceiling3 = _case(kref, ksec, 2, args.workers, "dense", chip=64, search=32)
        cases.append((f"{side}x{side} step 2 chip 64", "dense", wide, ceiling3))
        c2f, ceiling4 = _case(
            kref, ksec, 2, args.workers, "dense", chip=64, search=32, **COARSE_TO_FINE
        )
        cases.append((f"{side}x{side} step 2 chip 64 c2f", "coarse to fine", c2f, ceiling4))
    rows_out = [
        dict(case=case, kernel=kernel, **_fmt(r, c), vs_cv2_loop=f"{r['rate'] / base:.2f}")
        for case, kernel, r, c in cases
    ]
    print(
        f"{args.workers} workers; ceilings (mean of before and after each case), nodes per wall "
        f"second on all workers / per CPU second: block FFT {ceiling[0]:,.0f} / {ceiling[1]:,.0f} "
        f"(three 40 x 40 FFTs per node), dense step 2 {ceiling2[0]:,.0f} / {ceiling2[1]:,.0f} "
        f"and at chip 64 / search 32 {ceiling3[0]:,.0f} / {ceiling3[1]:,.0f} (products and box "
        f"sums only); per-node cv2.matchTemplate loop on a 2048 px crop at step 8: {base:,.0f} "
        "nodes/s"
    )
    columns = ["case", "kernel", "nodes", "wall_s", "nodes_per_s", "vs_cv2_loop", "of_ceiling"]
    columns += ["nodes_per_cpu_s", "cpu_of_ceiling", "median_err_px", "p95_err_px", "valid"]
    print(table(rows_out, columns))
    print(f"peak resident memory: {peak_rss_mb():,.0f} MB (largest of main process and workers)")
    region_nodes = (11000 // 2) * (12000 // 2)
    print(
        f"seed region (12,000 x 11,000 px) at step 2: {region_nodes:,} nodes; minutes on "
        f"{args.workers} workers at this run's wall-clock rate / on {args.workers} idle cores "
        "at its CPU rate:"
    )
    for case, _, r, _ in cases[1:]:
        wall_min = region_nodes / r["rate"] / 60
        cpu_min = region_nodes / (r["cpu_rate"] * args.workers) / 60
        print(f"  {case}: {wall_min:.1f} / {cpu_min:.1f} min")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _fmt(r: dict, ceiling: tuple[float, float]) -> dict:
    return dict(
        nodes=f"{r['nodes']:,}",
        wall_s=f"{r['wall']:.1f}",
        nodes_per_s=f"{r['rate']:,.0f}",
        of_ceiling=f"{r['rate'] / ceiling[0]:.2f}",
        nodes_per_cpu_s=f"{r['cpu_rate']:,.0f}",
        cpu_of_ceiling=f"{r['cpu_rate'] / ceiling[1]:.2f}",
        median_err_px=f"{r['median']:.3f}",
        p95_err_px=f"{r['p95']:.3f}",
        valid=f"{r['valid']:.1%}",
    )


if __name__ == "__main__":
    main()

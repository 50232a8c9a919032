"""Whole-process speed on the real Yahtse pair, and matching speed, against a per-node OpenCV
loop measured in the same run.

Usage: ``python benchmarks/speed.py [--repeat 2] [--compare-src DIR] [--matching] [--kernels]``

The baseline is what most scripts do: one ``cv2.matchTemplate(TM_CCOEFF_NORMED)`` call per node,
``cv2.minMaxLoc`` and a three-point parabola for the sub-pixel peak (chip 32 px, search +/-16 px),
one core, matching only (no reading, filtering or writing).

The first table times the whole ``glacierflow track`` process (start-up, reading, matching,
filtering, co-registration, error model, the four products) on the bundled Landsat 8 Yahtse pair
(1,087 x 1,698 px) at steps 4 and 8 px with 1 and 2 workers: wall time, its ratio to the loop on
the same nodes, and the CPU utilisation of the whole process tree (CPU seconds of the process and
every worker, sampled with psutil, over wall seconds: 200 % is two busy cores; ``cpu_s`` the CPU
seconds themselves, which a busy machine changes less than wall times), with the load
average of the machine (other users' processes slow every number: compare only rows of one
run). The stable-ground spread of the product (std of vx, m/yr, slowest quarter) shows its
accuracy. ``--compare-src``
runs another source tree (e.g. ``/work/main/src``) in the same loop, interleaved, as a second
baseline. ``glacierflow --help`` is timed too (best of five).

``--matching`` adds the matching-only table: a 2048 x 2048 px image mirrored from the Yahtse scene
and its copy warped by a known glacier-like field (up to 10 px, with a 0.3/-0.2 px
misregistration), step 8 px: nodes per second, the ratio to the loop, and the accuracy of both
against the known field (median and 95th percentile error, in pixels).

``--kernels`` adds the measured crossover of the two NCC kernels (shared block FFTs and dense
box-filtered products per offset) at several node steps, next to the kernel that the cost model
of :func:`glacierflow.matching.ncc_tiles.kernel_costs_ns` picks, and the same for a pair with
Landsat 7 SLC-off gaps (masked NCC per node against the masked dense kernel).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from glacierflow.demo import demo_inputs
from glacierflow.execute import Executor
from glacierflow.matching import MatchSettings, make_grid, match
from glacierflow.synthetic import glacier_field, warp_image

try:
    from _common import large_texture, table
except ImportError:  # run as a module
    from benchmarks._common import large_texture, table


def cv2_loop(ref: np.ndarray, sec: np.ndarray, chip: int, search: int, step: int):
    """Per-node OpenCV matching with parabolic sub-pixel refinement."""
    import cv2

    g = make_grid(ref.shape, chip_px=chip, search_px=search, step_px=step)
    h = chip // 2
    dx = np.full(g.shape, np.nan)
    dy = np.full(g.shape, np.nan)
    k = 2 * search
    for i, r in enumerate(g.rows_px()):
        for j, c in enumerate(g.cols_px()):
            tpl = ref[r - h : r - h + chip, c - h : c - h + chip]
            win = sec[
                r - h - search : r - h + chip + search, c - h - search : c - h + chip + search
            ]
            res = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)
            _, _, _, (x, y) = cv2.minMaxLoc(res)
            if 0 < x < k and 0 < y < k:
                lft, ctr, rgt = res[y, x - 1], res[y, x], res[y, x + 1]
                up, dn = res[y - 1, x], res[y + 1, x]
                fx = 0.5 * (lft - rgt) / (lft - 2 * ctr + rgt)
                fy = 0.5 * (up - dn) / (up - 2 * ctr + dn)
                dx[i, j] = x - search + fx
                dy[i, j] = y - search + fy
    return g, dx, dy


def errors(g, dx, dy, tx, ty) -> tuple[float, float]:
    rr, cc = np.meshgrid(g.rows_px(), g.cols_px(), indexing="ij")
    e = np.hypot(dx - tx[rr, cc], dy - ty[rr, cc])
    e = e[np.isfinite(e)]
    return float(np.median(e)), float(np.percentile(e, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs, best kept")
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8], help="whole-process steps")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="whole-process workers")
    ap.add_argument(
        "--compare-src", type=Path, default=None, help="another source tree, timed alongside"
    )
    ap.add_argument("--matching", action="store_true", help="also the matching-only table")
    ap.add_argument("--size", type=int, default=2048, help="image side of --matching, pixels")
    ap.add_argument(
        "--kernels",
        action="store_true",
        help="also time each NCC kernel (block FFT, dense) at several steps: the crossover",
    )
    ap.add_argument("--kernel-size", type=int, default=1024, help="image side for --kernels")
    ap.add_argument(
        "--kernel-steps", type=int, nargs="+", default=[2, 3, 4, 6, 8], help="--kernels steps"
    )
    args = ap.parse_args()
    whole_process_table(args)
    if args.matching:
        print()
        matching_table(args)
    if args.kernels:
        chip, search = 32, 16
        ref = large_texture(args.size)
        tx, ty = glacier_field(ref.shape, peak_px=10.0, misregistration_px=(0.3, -0.2))
        ref32 = ref.astype(np.float32)
        print()
        kernel_table(ref32[: args.kernel_size, : args.kernel_size], tx, ty, chip, search, args)
        print()
        slc_off_table(ref32[:384, :384], tx, ty, chip, search, args)


def _tree_cpu_s(proc, seen: dict[int, float]) -> None:
    """Record the CPU seconds (user + system) of ``proc`` and its descendants in ``seen``."""
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return
    for p in procs:
        try:
            t = p.cpu_times()
            seen[p.pid] = max(seen.get(p.pid, 0.0), t.user + t.system)
        except psutil.Error:
            pass


def run_track(src: Path, ref: Path, sec: Path, step: int, workers: int) -> dict:
    """One ``glacierflow track`` process of the tree ``src``: wall seconds, CPU seconds of the
    process tree, and the stable-ground std of vx (m/yr) from its summary."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory(prefix="speed-") as out:
        cmd = [sys.executable, "-m", "glacierflow.cli", "track", str(ref), str(sec), "-o", out]
        cmd += ["--step-px", str(step), "--workers", str(workers), "--no-progress"]
        seen: dict[int, float] = {}
        t0 = time.perf_counter()
        proc = psutil.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None:
            _tree_cpu_s(proc, seen)
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"{src}: track failed: {proc.stderr.read().decode()[-2000:]}")
        summary = json.loads((Path(out) / "summary.json").read_text())
    cpu = sum(seen.values())
    std = _find(summary.get("stable_ground", summary), "vx_std_m_per_yr")
    return dict(wall=wall, cpu=cpu, std=std, load=os.getloadavg()[0])


def _find(tree, key: str):
    """The first value of ``key`` anywhere in a nested dict (summary layouts differ)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def help_time_s(src: Path, repeat: int = 5) -> float:
    """Best wall time of ``glacierflow --help`` from the source tree ``src``, in seconds."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "glacierflow.cli", "--help"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        best = min(best, time.perf_counter() - t0)
    return best


def whole_process_table(args) -> None:
    """The whole ``glacierflow track`` process on the Yahtse pair against the cv2 loop."""
    import rasterio

    chip, search = 32, 16
    ref_path, sec_path, _ = demo_inputs()
    with rasterio.open(ref_path) as a, rasterio.open(sec_path) as b:
        ref, sec = a.read(1).astype(np.float32), b.read(1).astype(np.float32)
    here = Path(__file__).resolve().parents[1] / "src"
    trees = {"this tree": here}
    if args.compare_src is not None:
        trees[f"{args.compare_src}"] = args.compare_src.resolve()
    loop = {step: np.inf for step in args.steps}
    best: dict[tuple, dict] = {}
    load_start = os.getloadavg()
    # Interleaved: every repetition runs each configuration once, so that a busy spell of the
    # machine falls on all of them alike; the best of the repetitions is kept.
    for _ in range(args.repeat):
        for step in args.steps:
            t0 = time.perf_counter()
            g, _, _ = cv2_loop(ref, sec, chip, search, step)
            loop[step] = min(loop[step], time.perf_counter() - t0)
            for workers in args.workers:
                for name, src in trees.items():
                    r = run_track(src, ref_path, sec_path, step, workers)
                    key = (step, workers, name)
                    if key not in best or r["wall"] < best[key]["wall"]:
                        best[key] = r
    rows = []
    for step in args.steps:
        n = make_grid(ref.shape, chip_px=chip, search_px=search, step_px=step).shape
        nodes = n[0] * n[1]
        rows.append(
            dict(
                run="cv2.matchTemplate loop + parabola (matching only)",
                step_px=step,
                workers=1,
                nodes=nodes,
                wall_s=f"{loop[step]:.2f}",
                nodes_per_s=f"{nodes / loop[step]:,.0f}",
                vs_loop="1.00",
                cpu_pct="",
                cpu_s="",
                stable_vx_std="",
                load="",
            )
        )
        for workers in args.workers:
            for name in trees:
                r = best[(step, workers, name)]
                rows.append(
                    dict(
                        run=f"glacierflow track, whole process ({name})",
                        step_px=step,
                        workers=workers,
                        nodes=nodes,
                        wall_s=f"{r['wall']:.2f}",
                        nodes_per_s=f"{nodes / r['wall']:,.0f}",
                        vs_loop=f"{loop[step] / r['wall']:.2f}",
                        cpu_pct=f"{100 * r['cpu'] / r['wall']:.0f}",
                        cpu_s=f"{r['cpu']:.1f}",
                        stable_vx_std="" if r["std"] is None else f"{r['std']:.2f}",
                        load=f"{r['load']:.1f}",
                    )
                )
    load_end = os.getloadavg()
    print(
        f"Yahtse pair {ref.shape[0]} x {ref.shape[1]} px, chip {chip}, search +/-{search}; "
        f"{os.cpu_count()} CPU cores; load average (1, 5, 15 min) "
        f"{' '.join(f'{x:.1f}' for x in load_start)} at the start, "
        f"{' '.join(f'{x:.1f}' for x in load_end)} at the end; best of {args.repeat}, "
        "interleaved (load: the 1-min load average as that run ended)"
    )
    cols = ["run", "step_px", "workers", "nodes", "wall_s", "nodes_per_s", "vs_loop", "cpu_pct"]
    print(table(rows, [*cols, "cpu_s", "stable_vx_std", "load"]))
    for name, src in trees.items():
        print(f"glacierflow --help ({name}): {help_time_s(src):.3f} s (best of 5)")


def matching_table(args) -> None:
    """Matching only, on the warped 2048 px texture, against the cv2 loop (step 8)."""
    chip, search, step = 32, 16, 8
    ref = large_texture(args.size)
    tx, ty = glacier_field(ref.shape, peak_px=10.0, misregistration_px=(0.3, -0.2))
    sec = warp_image(ref, tx, ty)
    ref32, sec32 = ref.astype(np.float32), sec.astype(np.float32)
    rows = []

    best = np.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        g, dx, dy = cv2_loop(ref32, sec32, chip, search, step)
        best = min(best, time.perf_counter() - t0)
    n = g.ny * g.nx
    base = n / best
    med, p95 = errors(g, dx, dy, tx, ty)
    rows.append(
        dict(
            matcher="cv2.matchTemplate loop + parabola",
            workers=1,
            nodes=n,
            seconds=f"{best:.2f}",
            nodes_per_s=f"{base:,.0f}",
            ratio="1.00",
            median_err_px=f"{med:.3f}",
            p95_err_px=f"{p95:.3f}",
        )
    )
    for workers in sorted({1, 2, os.cpu_count() or 1}):
        settings = MatchSettings(chip_px=chip, search_px=search, step_px=step, workers=workers)
        best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with Executor(workers) as executor:  # worker start-up counts, as it did before
                res = match(ref32, sec32, settings=settings, executor=executor)
            best = min(best, time.perf_counter() - t0)
        med, p95 = errors(res.grid, res.dx_px, res.dy_px, tx, ty)
        rate = n / best
        rows.append(
            dict(
                matcher=f"glacierflow ncc ({settings.dense and 'dense' or 'block FFT'}, lanczos)",
                workers=workers,
                nodes=n,
                seconds=f"{best:.2f}",
                nodes_per_s=f"{rate:,.0f}",
                ratio=f"{rate / base:.2f}",
                median_err_px=f"{med:.3f}",
                p95_err_px=f"{p95:.3f}",
            )
        )
    print(
        f"pair: {args.size} x {args.size} px real texture, chip {chip}, search +/-{search}, "
        f"step {step}; {os.cpu_count()} CPU cores"
    )
    print(
        table(
            rows,
            [
                "matcher",
                "workers",
                "nodes",
                "seconds",
                "nodes_per_s",
                "ratio",
                "median_err_px",
                "p95_err_px",
            ],
        )
    )


def slc_off_table(ref, tx, ty, chip: int, search: int, args) -> None:
    """Landsat 7 SLC-off gaps on both dates: masked NCC per node against the masked dense
    kernel (picked per tile by the cost model), one worker."""
    from glacierflow.synthetic import slc_off_mask

    sec = warp_image(ref, tx[: ref.shape[0], : ref.shape[1]], ty[: ref.shape[0], : ref.shape[1]])
    ref_ok = ~slc_off_mask(ref.shape, phase=0.0)
    sec_ok = ~slc_off_mask(ref.shape, phase=13.0)
    rows = []
    for step in (2, 8):
        rate, err = {}, {}
        for kernel in ("fft", "auto"):
            settings = MatchSettings(
                chip_px=chip, search_px=search, step_px=step, workers=1, ncc_kernel=kernel
            )
            t0 = time.perf_counter()
            res = match(ref, sec, ref_ok, sec_ok, settings=settings)
            rate[kernel] = res.dx_px.size / (time.perf_counter() - t0)
            err[kernel] = errors(res.grid, res.dx_px, res.dy_px, tx, ty)[0]
        rows.append(
            dict(
                step_px=step,
                per_node_nodes_per_s=f"{rate['fft']:,.0f}",
                auto_nodes_per_s=f"{rate['auto']:,.0f}",
                ratio=f"{rate['auto'] / rate['fft']:.2f}",
                median_err_px=f"{err['fft']:.3f} / {err['auto']:.3f}",
            )
        )
    print(
        f"SLC-off gaps on both dates ({(~ref_ok).mean():.0%} of pixels): {ref.shape[0]} x "
        f"{ref.shape[1]} px, chip {chip}, search +/-{search}, 1 worker (median error per node / "
        "auto)"
    )
    print(
        table(
            rows, ["step_px", "per_node_nodes_per_s", "auto_nodes_per_s", "ratio", "median_err_px"]
        )
    )


def kernel_table(ref, tx, ty, chip: int, search: int, args) -> None:
    """Each NCC kernel at several grid densities, one worker: the measured crossover.

    ``ratio`` is the FFT kernel's time over the dense kernel's; ``auto`` is the kernel the cost
    model (:func:`glacierflow.matching.ncc_tiles.kernel_costs_ns`) picks for that step.
    """
    from glacierflow.matching.ncc_tiles import dense_is_faster

    sec = warp_image(ref, tx[: ref.shape[0], : ref.shape[1]], ty[: ref.shape[0], : ref.shape[1]])
    sec = sec.astype(np.float32)
    rows = []
    for step in args.kernel_steps:
        rate, err = {}, {}
        for kernel in ("fft", "dense"):
            settings = MatchSettings(
                chip_px=chip, search_px=search, step_px=step, workers=1, ncc_kernel=kernel
            )
            best = np.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = match(ref, sec, settings=settings)
                best = min(best, time.perf_counter() - t0)
            rate[kernel] = res.dx_px.size / best
            err[kernel] = errors(res.grid, res.dx_px, res.dy_px, tx, ty)[0]
        rows.append(
            dict(
                step_px=step,
                fft_nodes_per_s=f"{rate['fft']:,.0f}",
                dense_nodes_per_s=f"{rate['dense']:,.0f}",
                dense_over_fft=f"{rate['dense'] / rate['fft']:.2f}",
                faster="dense" if rate["dense"] > rate["fft"] else "fft",
                auto="dense" if dense_is_faster(chip, step, search) else "fft",
                median_err_px=f"{err['fft']:.3f} / {err['dense']:.3f}",
            )
        )
    print(
        f"NCC kernels by grid density: {ref.shape[0]} x {ref.shape[1]} px, chip {chip}, "
        f"search +/-{search}, 1 worker (median error fft / dense)"
    )
    print(
        table(
            rows,
            [
                "step_px",
                "fft_nodes_per_s",
                "dense_nodes_per_s",
                "dense_over_fft",
                "faster",
                "auto",
                "median_err_px",
            ],
        )
    )


if __name__ == "__main__":
    main()

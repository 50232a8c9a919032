"""Velocity time series from pair networks: glacierflow's inversion vs TICOI vs plain averaging.

Synthetic pair networks with a known daily truth, 2018-2021: a base speed per pixel (50-300
m/yr) with a summer speed-up of +40 %, and a surge that triples the speed from 2020-04-01 to
2020-08-31. Acquisitions every 5-16 days, none from 15 November to 28 February (polar night
and snow: the winter gap). Pairs between 5 days and 2 years, log-uniform; per-pair noise of
a matcher with a 0.1-0.4 px error at 15 m (1.5-6 m of displacement, so m/yr errors that fall
with the time span), stated correctly; 5 % outlier pairs with 20-60 m of displacement error
that their stated errors do not show.

Methods, each reporting the speed of the mean vector per step:

* glacierflow: :func:`glacierflow.timeseries.inversion.invert_series` (default settings): one
  inversion on monthly base steps gives the monthly and the annual steps,
* TICOI 0.1.2 (Charrier et al. 2025), ``inversion_core`` (IRLS, first-order regularisation,
  coef 100, a-priori weights) plus ``interpolation_core`` to 30-day steps, then averaged over
  the steps; run in its own virtual environment (``--ticoi-python``),
* plain averaging: every pair overlapping a step, weighted by ``overlap fraction / sigma^2``
  (glacierflow's composites).

Truth: the mean of the true daily speed over each step (calendar month or calendar year), for
every method the same steps. glacierflow's annual value is the time-weighted mean of its
monthly base steps over the whole year (January and February, before the first acquisition
of 2018, filled by the regularisation); TICOI's is the mean of its 30-day series over the days
of the year it covers (the share is printed). RMSE against the truth is computed on the
steps that all methods report (common), and each method's share of steps reported is printed
beside it; a method that reports fewer steps is not rewarded for it in the common RMSE.
Time: seconds per 10^5 pixel-series, measured on this machine in this run.

Usage::

    python benchmarks/timeseries.py [--pixels 400] [--ticoi-pixels 40]
        [--ticoi-python /work/wt/ticoi-venv/bin/python]
"""

from __future__ import annotations

import os

# One BLAS thread for every method: the solvers run many small matrices, where threading only
# costs, and TICOI's subprocess gets the same setting.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from glacierflow.timeseries.inversion import (  # noqa: E402
    InversionSettings,
    closure_matrix,
    invert_series,
    time_steps,
)

ORIGIN = np.datetime64("2018-01-01", "D")
END = np.datetime64("2022-01-01", "D")
PIXEL_M = 15.0


def truth_daily(base: float) -> np.ndarray:
    """Daily speed (m/yr) from ORIGIN to END."""
    days = np.arange((END - ORIGIN) / np.timedelta64(1, "D"))
    dates = ORIGIN + days.astype("timedelta64[D]")
    doy = (dates - dates.astype("datetime64[Y]")) / np.timedelta64(1, "D")
    summer = np.exp(-0.5 * ((doy - 190) / 30) ** 2)  # peak in early July
    v = base * (1 + 0.4 * summer)
    surge = (dates >= np.datetime64("2020-04-01")) & (dates < np.datetime64("2020-09-01"))
    return np.where(surge, 3 * v, v)


def network(rng: np.random.Generator, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair start and end days since ORIGIN."""
    total = int((END - ORIGIN) / np.timedelta64(1, "D"))
    acq, d = [], 0
    while d < total:
        when = ORIGIN + np.timedelta64(d, "D")
        md = (when - when.astype("datetime64[Y]")) / np.timedelta64(1, "D")
        if 59 <= md <= 318:  # 1 March to 14 November
            acq.append(d)
        d += int(rng.integers(5, 17))
    acq = np.array(acq)
    t1, t2 = [], []
    while len(t1) < n_pairs:
        i = int(rng.integers(0, acq.size))
        span = float(np.exp(rng.uniform(np.log(5), np.log(730))))
        j = int(np.argmin(np.abs(acq - (acq[i] + span))))
        if acq[j] - acq[i] >= 5:
            t1.append(acq[i])
            t2.append(acq[j])
    pairs = np.unique(np.stack([t1, t2], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def simulate(pixels: int, n_pairs: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    a, b = network(rng, n_pairs)
    dt = (b - a).astype(float)
    base = rng.uniform(50, 300, pixels)
    cum = np.stack([np.concatenate([[0.0], np.cumsum(truth_daily(v))]) for v in base])
    direction = rng.uniform(0, 2 * np.pi, pixels)
    v_true = (cum[:, b] - cum[:, a]) / dt
    sigma_m = PIXEL_M * rng.uniform(0.1, 0.4, (pixels, a.size))
    sigma = sigma_m / (dt / 365.25)
    noise_x = rng.normal(size=sigma.shape) * sigma
    noise_y = rng.normal(size=sigma.shape) * sigma
    outlier = rng.random(sigma.shape) < 0.05
    gross = rng.uniform(20, 60, sigma.shape) / (dt / 365.25) * rng.choice([-1, 1], sigma.shape)
    angle = rng.uniform(0, 2 * np.pi, sigma.shape)
    vx = v_true * np.cos(direction)[:, None] + noise_x + outlier * gross * np.cos(angle)
    vy = v_true * np.sin(direction)[:, None] + noise_y + outlier * gross * np.sin(angle)
    return {"a": a, "b": b, "vx": vx, "vy": vy, "sigma": sigma, "cum": cum, "outlier": outlier}


def step_truth(cum: np.ndarray, edges: np.ndarray) -> np.ndarray:
    e = ((edges - ORIGIN) / np.timedelta64(1, "D")).astype(int)
    return (cum[:, e[1:]] - cum[:, e[:-1]]) / np.diff(e)


def averaging(sim: dict, edges: np.ndarray) -> np.ndarray:
    t1 = ORIGIN + sim["a"].astype("timedelta64[D]")
    t2 = ORIGIN + sim["b"].astype("timedelta64[D]")
    frac = closure_matrix(t1, t2, edges)  # share of each pair inside each step
    w = 1.0 / sim["sigma"] ** 2
    sw = w @ frac
    with np.errstate(invalid="ignore", divide="ignore"):
        vx = (w * sim["vx"]) @ frac / sw
        vy = (w * sim["vy"]) @ frac / sw
    return np.hypot(vx, vy)


def run_ticoi(sim: dict, pixels: int, edges: dict, python: str) -> tuple[dict, float, dict] | None:
    if pixels < 1 or not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(
            src,
            t1=sim["a"],
            t2=sim["b"],
            vx=sim["vx"][:pixels],
            vy=sim["vy"][:pixels],
            ex=sim["sigma"][:pixels],
            ey=sim["sigma"][:pixels],
            origin=str(ORIGIN),
            **{
                f"edges_{k}": ((e - ORIGIN) / np.timedelta64(1, "D")).astype(float)
                for k, e in edges.items()
            },
        )
        runner = Path(__file__).with_name("_ticoi_runner.py")
        done = subprocess.run(
            [python, str(runner), str(src), str(dst)], capture_output=True, text=True
        )
        if done.returncode != 0 or not dst.exists():
            print("TICOI failed:", done.stderr[-2000:], file=sys.stderr)
            return None
        out = np.load(dst)
        cov = {k: out[f"cov_{k}"] for k in edges}
        return {k: out[f"v_{k}"] for k in edges}, float(out["seconds"]) / pixels, cov


def rmse(est: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.mean((est[mask] - truth[mask]) ** 2))) if mask.any() else float("nan")


def _cell(est: np.ndarray, truth: np.ndarray, common: np.ndarray) -> str:
    return f"{rmse(est, truth, common):.2f} ({np.isfinite(est).mean():.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=400)
    parser.add_argument("--ticoi-pixels", type=int, default=40)
    parser.add_argument("--direct-pixels", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--ticoi-python", default="/work/wt/ticoi-venv/bin/python")
    args = parser.parse_args()

    sim = simulate(args.pixels, args.pairs)
    dt = sim["b"] - sim["a"]
    print(
        f"{args.pixels} pixel series, {sim['a'].size} pairs each ({dt.min()}-{dt.max()} days), "
        f"{sim['outlier'].mean():.1%} outlier pairs"
    )
    edges = {
        "monthly": time_steps(ORIGIN, END - 1, "monthly"),
        "annual": time_steps(ORIGIN, END - 1, "annual"),
    }
    t1 = ORIGIN + sim["a"].astype("timedelta64[D]")
    t2 = ORIGIN + sim["b"].astype("timedelta64[D]")
    names = ["glacierflow", "glacierflow (previous solver)", "averaging", "TICOI"]
    est: dict[str, dict[str, np.ndarray]] = {k: {} for k in names}
    secs = dict.fromkeys(names, 0.0)
    nd = min(args.direct_pixels, args.pixels)
    for name, solver, n_px in (
        ("glacierflow", "eigen", args.pixels),
        ("glacierflow (previous solver)", "direct", nd),
    ):
        # One inversion on monthly base steps serves both the monthly and the annual steps.
        start = time.perf_counter()
        r = invert_series(
            sim["vx"][:n_px],
            sim["vy"][:n_px],
            sim["sigma"][:n_px],
            sim["sigma"][:n_px],
            t1,
            t2,
            edges,
            InversionSettings(solver=solver),
        )
        secs[name] += (time.perf_counter() - start) / n_px
        for k in edges:
            est[name][k] = np.hypot(r[k]["vx"], r[k]["vy"])
    for k, e in edges.items():
        start = time.perf_counter()
        est["averaging"][k] = averaging(sim, e)
        secs["averaging"] += (time.perf_counter() - start) / args.pixels
    tic = run_ticoi(sim, args.ticoi_pixels, edges, args.ticoi_python)
    if tic is None:
        names.remove("TICOI")
        print("TICOI: not available (no venv at --ticoi-python or it failed); not compared")
    else:
        est["TICOI"], secs["TICOI"], tic_cov = tic
        print(
            "TICOI's series covers on average "
            + ", ".join(f"{c.mean():.0%} of each {k} step" for k, c in tic_cov.items())
            + " (a step is averaged over the days it covers, reported where it covers >= 50 %)"
        )
    n_cmp = min(args.ticoi_pixels if tic is not None else args.pixels, nd)
    print(
        f"\nRMSE of the speed against the truth (m/yr) on the first {n_cmp} pixel series, on "
        "the steps every method reports; in brackets the share of steps the method reports "
        "(on its own pixels). Time: s per 10^5 pixel-series, monthly + annual, one core each."
    )
    ref = "TICOI" if tic is not None else None
    head = "| method | " + " | ".join(f"RMSE {k}" for k in edges) + " | s / 1e5 series |"
    if ref:
        head += " RMSE / TICOI (monthly, annual) | speed-up vs TICOI |"
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in names:
        cells, ratios = [], []
        for k, e in edges.items():
            truth = step_truth(sim["cum"][:n_cmp], e)
            common = np.ones_like(truth, dtype=bool)
            for other in names:
                common &= np.isfinite(est[other][k][:n_cmp])
            cells.append(_cell(est[name][k][:n_cmp], truth, common))
            if ref:
                r0 = rmse(est[ref][k][:n_cmp], truth, common)
                ratios.append(f"{rmse(est[name][k][:n_cmp], truth, common) / r0:.2f}")
        row = f"| {name} | " + " | ".join(cells) + f" | {secs[name] * 1e5:.0f} |"
        if ref:
            row += f" {', '.join(ratios)} | {secs[ref] / secs[name]:.1f}x |"
        print(row)
    truth_m = step_truth(sim["cum"], edges["monthly"])
    gf = est["glacierflow"]["monthly"]
    own = np.isfinite(gf)
    print(
        f"\nglacierflow monthly on all {args.pixels} series: RMSE {rmse(gf, truth_m, own):.2f} "
        f"m/yr on the {own.mean():.1%} of steps it reports; mean truth {truth_m.mean():.0f} m/yr; "
        f"speed-up over the previous solver {secs[names[1]] / secs['glacierflow']:.1f}x"
    )


if __name__ == "__main__":
    main()

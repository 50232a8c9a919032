"""Run TICOI on pixel series from an .npz file; run with the Python that has ``ticoi``.

Usage: python _ticoi_runner.py IN.npz OUT.npz. Input arrays: ``t1``, ``t2`` (days since
``origin``), ``vx``, ``vy``, ``ex``, ``ey`` (pixels x pairs, m/yr), ``origin`` (str date),
``edges_*`` (days since origin). Output: for every ``edges_*`` the TICOI series averaged over
those steps (time-weighted over its regular 30-day leap-frog intervals, reported where they
cover at least half of the step), ``cov_*`` the share of each step they cover, and
``seconds``.

TICOI 0.1.2 calling conventions that matter (read from ``ticoi/core.py``): ``regu`` is the
string ``"1"`` (an int raises); the values are displacements in m with the errors in m/yr and
the temporal baseline in days; ``apriori_weight=True`` turns the errors into weights
``1 - (e - min e) / (max e - min e)``, NaN when all errors are equal, so it is only asked for
when they differ; ``interpolation_core(..., redundancy=None)`` steps ``interval_output``
samples of ``interval_output`` days (30 x 30 days), so ``redundancy=30`` gives consecutive
30-day intervals, counted from ``first_date_interpol`` (the network's origin).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def main(src: str, dst: str) -> None:
    from ticoi.core import interpolation_core, inversion_core

    data = np.load(src)
    origin = np.datetime64(str(data["origin"]), "D")
    t1 = origin + data["t1"].astype("timedelta64[D]")
    t2 = origin + data["t2"].astype("timedelta64[D]")
    dt = (data["t2"] - data["t1"]).astype(float)
    edge_names = [k for k in data.files if k.startswith("edges_")]
    out = {
        k.replace("edges_", "v_"): np.full((data["vx"].shape[0], data[k].size - 1), np.nan)
        for k in edge_names
    }
    for k in edge_names:  # share of each step inside TICOI's output series
        out[k.replace("edges_", "cov_")] = np.zeros((data["vx"].shape[0], data[k].size - 1))
    start = time.perf_counter()
    for p in range(data["vx"].shape[0]):
        ok = np.isfinite(data["vx"][p])
        dates = np.stack([t1[ok], t2[ok]], axis=1)
        values = np.stack(
            [
                data["vx"][p, ok] * dt[ok] / 365.0,  # displacement, m (TICOI's unit=365)
                data["vy"][p, ok] * dt[ok] / 365.0,
                data["ex"][p, ok],
                data["ey"][p, ok],
                dt[ok],
            ],
            axis=1,
        )
        varied = np.ptp(values[:, 2]) > 0 and np.ptp(values[:, 3]) > 0
        try:
            _, result, _ = inversion_core(
                [dates, values],
                0,
                0,
                solver="LSMR",
                regu="1",
                coef=100,
                apriori_weight=bool(varied),
                unit=365,
                visual=False,
            )
            if result is None:
                continue
            lp = interpolation_core(
                result,
                interval_output=30,
                redundancy=30,
                first_date_interpol=origin,
                unit=365,
            )
        except Exception as exc:  # keep going: a pixel TICOI cannot do stays NaN
            print(f"pixel {p}: {exc}", file=sys.stderr)
            continue
        if len(lp) == 0:
            continue
        a = (lp["date1"].values.astype("datetime64[D]") - origin) / np.timedelta64(1, "D")
        b = (lp["date2"].values.astype("datetime64[D]") - origin) / np.timedelta64(1, "D")
        v = np.hypot(lp["vx"].values, lp["vy"].values)
        for k in edge_names:
            e = data[k]
            ov = np.clip(
                np.minimum(b[:, None], e[None, 1:]) - np.maximum(a[:, None], e[None, :-1]), 0, None
            )
            good = np.isfinite(v)
            w = ov[good]
            s = w.sum(axis=0)
            with np.errstate(invalid="ignore"):
                # Reported only where TICOI's series covers at least half of the step.
                val = (w * v[good, None]).sum(axis=0) / s
            out[k.replace("edges_", "v_")][p] = np.where(s >= 0.5 * np.diff(e), val, np.nan)
            out[k.replace("edges_", "cov_")][p] = s / np.diff(e)
    out["seconds"] = np.array(time.perf_counter() - start)
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

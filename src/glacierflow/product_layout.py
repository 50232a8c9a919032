"""Where a pair product's metadata lives in ``velocity.nc``: the ITS_LIVE image-pair layout.

In memory a velocity product (:func:`glacierflow.velocity.velocity_dataset`) keeps its metadata
as one flat ``attrs`` mapping, which every consumer reads (``ref_time``, ``dt_days``,
``coreg_dx_px``, ``stable_vx_nmad_m_per_yr``, ...). In the NetCDF file the same attributes are
grouped on the variables they describe, as ITS_LIVE version 2 image-pair granules (written by
autoRIFT) group theirs, so that code written for those granules reads ours:

``img_pair_info``
    a scalar variable holding the pair: ITS_LIVE's ``acquisition_date_img1``/``_img2``,
    ``date_center`` (``YYYYmmddTHH:MM:SS.ffffff``, UTC, the format ITS_LIVE writes and its tools
    parse), ``date_dt`` (days), ``mission_img1``, ``satellite_img1``, ``sensor_img1``,
    ``id_img1`` (and ``_img2``), ``time_standard_img1/2``, ``latitude``, ``longitude`` (grid
    centre, degrees) and ``roi_valid_percentage``; and glacierflow's own pair keys
    (:data:`PAIR_KEYS`: ``ref_time``, ``sec_time`` as full ISO 8601, ``dt_days``, sensors,
    files, scene ids).
``processing_info``
    a scalar variable holding how the pair was processed: matching settings, image grid,
    stable-ground choice, ``filter_*`` thresholds and the ``coreg_*`` fit.
``vx``, ``vy``
    CF ``standard_name`` ``land_ice_surface_x_velocity``/``_y_velocity``; ITS_LIVE's ``error``,
    ``error_stationary``, ``error_slow``, ``stable_shift``, ``stable_shift_flag``,
    ``stable_shift_stationary``, ``stable_shift_slow``, ``stable_count_stationary``,
    ``stable_count_slow`` (each with its ``*_description`` where ITS_LIVE has one); and
    glacierflow's ``stable_nodes`` and ``stable_vx_*`` (``stable_vy_*``) statistics.
``v_error``
    the error model: ``v_error_*`` and ``stable_v_error_median_m_per_yr``.
``quality``
    its CF ``flag_masks``/``flag_meanings`` (the product's ``quality_flag_*``).
``mapping``
    the CF grid mapping (``crs_wkt``, ``spatial_epsg``, ``GeoTransform``); written by
    :mod:`glacierflow.products`.

Everything else stays global, beside a short CF/ACDD set (:func:`global_attributes`).
:func:`split_attributes` goes from the flat form to the grouped one and :func:`merge_attributes`
back, exactly: only the attributes of :func:`attribute_homes` move, and the ITS_LIVE
attributes derived from them are recomputed at every write and never read back.

:func:`netcdf_attributes` puts it all together for :func:`glacierflow.products.write_netcdf`.
Nothing here opens files.

References
----------
.. [1] Gardner, A. S., Fahnestock, M. A. and Scambos, T. A. (2019). ITS_LIVE regional glacier
   and ice sheet surface velocities. NASA National Snow and Ice Data Center DAAC.
   doi:10.5067/6II6VW8LLWJ7
.. [2] Lei, Y., Gardner, A. and Agram, P. (2021). Autonomous Repeat Image Feature Tracking
   (autoRIFT) and its application for tracking ice displacement. Remote Sensing 13(4), 749.
   doi:10.3390/rs13040749
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.transform import array_bounds

from glacierflow.summary import dataset_crs, dataset_transform, product_version
from glacierflow.velocity import DAYS_PER_YEAR

__all__ = [
    "GRID_MAPPING",
    "GROUP_VARIABLES",
    "ITSLIVE_DATE_FORMAT",
    "ITSLIVE_PAIR_DATES",
    "LEGACY_GRID_MAPPING",
    "PAIR_INFO",
    "PAIR_KEYS",
    "PROCESSING_INFO",
    "attribute_homes",
    "component_error_attributes",
    "flatten_netcdf",
    "global_attributes",
    "itslive_date",
    "merge_attributes",
    "netcdf_attributes",
    "pair_info_attributes",
    "split_attributes",
]

#: Name of the scalar variable with the pair's metadata (ITS_LIVE's name).
PAIR_INFO = "img_pair_info"
#: Name of the scalar variable with the processing settings and fits.
PROCESSING_INFO = "processing_info"
#: Name of the CF grid-mapping variable (ITS_LIVE's name).
GRID_MAPPING = "mapping"
#: Name of the grid-mapping variable of products written before the ITS_LIVE layout.
LEGACY_GRID_MAPPING = "spatial_ref"
#: The attribute-only variables of the layout.
GROUP_VARIABLES = (PAIR_INFO, PROCESSING_INFO, GRID_MAPPING)

#: ``strftime`` format of ITS_LIVE's acquisition and centre dates (UTC).
ITSLIVE_DATE_FORMAT = "%Y%m%dT%H:%M:%S.%f"

#: Flat attributes describing the pair, kept on :data:`PAIR_INFO`.
PAIR_KEYS = (
    "ref_time",
    "sec_time",
    "dt_days",
    "ref_sensor",
    "sec_sensor",
    "sensor",
    "ref_file",
    "sec_file",
    "ref_scene_id",
    "sec_scene_id",
    "ref_time_source",
    "sec_time_source",
)

#: Flat attributes describing the processing, kept on :data:`PROCESSING_INFO` (with every
#: ``filter_*`` and ``coreg_*`` attribute).
PROCESSING_KEYS = (
    "method",
    "chip_px",
    "search_px",
    "step_px",
    "subpixel",
    "prefilter",
    "pyramid_levels",
    "prior_source",
    "secondary_reprojected",
    "pixel_size_m",
    "image_transform",
    "stable_source",
    "stable_ice_buffer_m",
)
_PROCESSING_PREFIXES = ("filter_", "coreg_")

#: ITS_LIVE's pair dates, derived from ``ref_time``/``sec_time``/``dt_days`` at every write
#: (GeoTIFF tags too); a flat attribute of that name is never filed, and readers leave it out.
ITSLIVE_PAIR_DATES = ("acquisition_date_img1", "acquisition_date_img2", "date_center", "date_dt")

#: Flat copies of the quality layer's CF flag attributes (GeoTIFF tags need them).
_QUALITY_KEYS = {"quality_flag_masks": "flag_masks", "quality_flag_meanings": "flag_meanings"}

_STABLE_SHIFT_FLAG_DESCRIPTION = (
    "flag for applying velocity bias correction: 0 = no correction; 1 = correction from "
    "stable ground given as outlines or a mask (stationary surfaces); 2 = correction from the "
    "slowest quarter of the valid nodes (no stable ground given)"
)


def attribute_homes(key: str) -> tuple[str, ...]:
    """The variables of ``velocity.nc`` a flat product attribute is stored on.

    Parameters
    ----------
    key : str
        A flat attribute name of the in-memory product.

    Returns
    -------
    tuple of str
        Variable names (``stable_nodes`` is on both ``vx`` and ``vy``, as ITS_LIVE keeps its
        stable counts on both); empty for a global attribute. ``crs_wkt``, ``transform`` and
        the ``quality_flag_*`` copies are handled by the writer, not here.
    """
    if key in PAIR_KEYS:
        return (PAIR_INFO,)
    if key in PROCESSING_KEYS or key.startswith(_PROCESSING_PREFIXES):
        return (PROCESSING_INFO,)
    if key == "stable_nodes":
        return ("vx", "vy")
    for comp in ("vx", "vy"):
        if key.startswith(f"stable_{comp}_"):
            return (comp,)
    if key.startswith("v_error_") or key == "stable_v_error_median_m_per_yr":
        return ("v_error",)
    return ()


def split_attributes(
    attrs: Mapping[str, Any], variables: set[str] | frozenset[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Flat product attributes as (global attributes, attributes per variable).

    Parameters
    ----------
    attrs : mapping
        The flat ``attrs`` of a product, without ``crs_wkt`` and ``transform``.
    variables : set of str
        The (y, x) variables the file holds: an attribute whose home is absent stays global.

    Returns
    -------
    globals : dict
        Attributes with no home (``title``, ``history``, ``project``, ...).
    grouped : dict of str to dict
        Attributes by variable, :data:`PAIR_INFO` and :data:`PROCESSING_INFO` included.
    """
    present = set(variables) | {PAIR_INFO, PROCESSING_INFO}
    glob: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {PAIR_INFO: {}, PROCESSING_INFO: {}}
    for key, value in attrs.items():
        if key in _QUALITY_KEYS and "quality" in present:
            continue  # the quality variable's own flag_masks/flag_meanings say it
        homes = [h for h in attribute_homes(key) if h in present]
        if not homes:
            glob[key] = value
        for home in homes:
            grouped.setdefault(home, {})[key] = value
    return glob, grouped


def merge_attributes(grouped: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The flat attributes held by the variables of ``velocity.nc`` (the inverse of the split).

    Parameters
    ----------
    grouped : mapping of str to mapping
        Attributes by variable name, as read from the file.

    Returns
    -------
    dict
        The attributes :func:`attribute_homes` puts on those variables (ITS_LIVE's derived
        attributes are left out), and ``quality_flag_masks``/``quality_flag_meanings`` from
        the quality variable.
    """
    flat: dict[str, Any] = {}
    for name, attrs in grouped.items():
        for key, value in attrs.items():
            if name in attribute_homes(key):
                flat.setdefault(key, value)
    quality = grouped.get("quality", {})
    for key, cf_key in _QUALITY_KEYS.items():
        if cf_key in quality:
            value = quality[cf_key]
            flat[key] = [int(v) for v in np.atleast_1d(value)] if key.endswith("masks") else value
    return flat


# --------------------------------------------------------------------------------------------
# ITS_LIVE attributes derived from the flat ones
# --------------------------------------------------------------------------------------------


def _utc(text: Any) -> _dt.datetime | None:
    """An ISO 8601 time as a naive UTC datetime (naive input taken as UTC), or None."""
    try:
        when = _dt.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC).replace(tzinfo=None)
    return when


def itslive_date(when: _dt.datetime) -> str:
    """A naive UTC datetime in ITS_LIVE's date format, e.g. ``20160718T20:46:12.000000``."""
    return when.strftime(ITSLIVE_DATE_FORMAT)


def _float(attrs: Mapping[str, Any], key: str) -> float:
    try:
        return float(attrs.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan


def _mission(sensor: Any, scene_id: Any) -> tuple[str, str, str]:
    """ITS_LIVE's (mission, satellite, sensor) codes of one image.

    Landsat: ``("L", "8", "C")`` with the sensor letter of the scene id (``LC8...``, ``LC08_...``:
    C = OLI/TIRS, O = OLI, E = ETM+, T = TM); Sentinel-2: ``("S", "2A", "MSI")``; otherwise the
    first letter of the sensor name, its number and the name itself.
    """
    text, sid = str(sensor or ""), str(scene_id or "")
    low = text.lower()
    number = re.search(r"(\d+)", text)
    if "landsat" in low or re.match(r"L[COETM]0?\d", sid):
        sat = number.group(1) if number else ""
        m = re.match(r"L([COETM])0?(\d)", sid)
        if m:
            return "L", sat or m.group(2), m.group(1)
        return "L", sat, text.split()[-1] if len(text.split()) > 2 else ""
    if "sentinel" in low or re.match(r"S2[AB]", sid):
        m = re.search(r"sentinel[- ]?(\d)([ab]?)", low) or re.match(r"s(2)([ab])", sid.lower())
        sat = (m.group(1) + m.group(2).upper()) if m else ""
        return "S", sat, "MSI" if sat.startswith("2") else text
    return text[:1].upper(), number.group(1) if number else "", text


def pair_info_attributes(
    attrs: Mapping[str, Any],
    *,
    crs: CRS | None,
    transform: Affine | None,
    shape: tuple[int, int],
    valid_fraction: float | None = None,
) -> dict[str, Any]:
    """ITS_LIVE's ``img_pair_info`` attributes of a product.

    Parameters
    ----------
    attrs : mapping
        Flat product attributes (``ref_time``, ``sec_time`` ISO 8601; ``dt_days``;
        ``ref_sensor``, ``sec_sensor``, ``ref_scene_id``, ``sec_scene_id``).
    crs : pyproj.CRS or None
        The map CRS, for the grid centre's ``latitude``/``longitude`` (degrees).
    transform : affine.Affine or None
        The node grid's geotransform.
    shape : tuple of int
        Grid shape ``(ny, nx)``.
    valid_fraction : float, optional
        Fraction of nodes with a speed, for ``roi_valid_percentage``.

    Returns
    -------
    dict
        ``standard_name``, dates (when the times parse), ``date_dt`` (days), mission,
        satellite, sensor and id of each image, ``time_standard_img1/2``, ``latitude``,
        ``longitude`` and ``roi_valid_percentage``.
    """
    out: dict[str, Any] = {"standard_name": "image_pair_information"}
    t1, t2 = _utc(attrs.get("ref_time")), _utc(attrs.get("sec_time"))
    if t1 is not None and t2 is not None:
        out["acquisition_date_img1"] = itslive_date(t1)
        out["acquisition_date_img2"] = itslive_date(t2)
        out["date_center"] = itslive_date(t1 + (t2 - t1) / 2)
        out["date_dt"] = (t2 - t1).total_seconds() / 86400.0
    if math.isfinite(_float(attrs, "dt_days")):
        out["date_dt"] = _float(attrs, "dt_days")  # the one the velocities were computed with
    for k, side in (("1", "ref"), ("2", "sec")):
        mission, sat, sensor = _mission(attrs.get(f"{side}_sensor"), attrs.get(f"{side}_scene_id"))
        out[f"mission_img{k}"] = mission
        out[f"satellite_img{k}"] = sat
        out[f"sensor_img{k}"] = sensor
        if attrs.get(f"{side}_scene_id"):
            out[f"id_img{k}"] = str(attrs[f"{side}_scene_id"])
        out[f"time_standard_img{k}"] = "UTC"
    if crs is not None and transform is not None:
        x, y = transform @ (shape[1] / 2.0, shape[0] / 2.0)
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
        out["latitude"] = round(float(lat), 5)
        out["longitude"] = round(float(lon), 5)
    if valid_fraction is not None:
        out["roi_valid_percentage"] = round(100.0 * float(valid_fraction), 2)
    return out


def component_error_attributes(attrs: Mapping[str, Any], comp: str) -> dict[str, Any]:
    """ITS_LIVE's error and stable-shift attributes of ``vx`` or ``vy`` (m/yr).

    ``error`` is the RMSE of the component over the stable nodes after co-registration
    (``stable_<comp>_rmse_m_per_yr``), ITS_LIVE's ``error_stationary`` when the stable ground
    came from outlines or a mask and ``error_slow`` when it is the slowest quarter of the
    nodes. ``stable_shift`` is the co-registration correction at the grid centre
    (``coreg_dx_px``, ``coreg_dy_px``) as velocity along the component: subtracted from the
    measured velocities, as ITS_LIVE subtracts its shift; ``stable_count_*`` the nodes it was
    fitted on (``coreg_nodes``).

    Parameters
    ----------
    attrs : mapping
        Flat product attributes.
    comp : {"vx", "vy"}
        The component.

    Returns
    -------
    dict
        ITS_LIVE attribute names and values (NaN where unknown, counts 0).
    """
    rmse = _float(attrs, f"stable_{comp}_rmse_m_per_yr")
    # The nodes the shift was fitted on; without a co-registration, those of the statistics.
    nodes = _float(attrs, "coreg_nodes" if "coreg_nodes" in attrs else "stable_nodes")
    nodes = int(nodes) if math.isfinite(nodes) else 0
    slow = str(attrs.get("stable_source", "")).startswith("slowest")
    method = str(attrs.get("coreg_method", "none"))
    dt_days = _float(attrs, "dt_days")
    shift = math.nan
    image = attrs.get("image_transform")
    if method == "none":
        shift = 0.0
    elif image is not None and dt_days > 0:
        a, b, _, d, e, _ = (float(c) for c in np.asarray(image, dtype=float)[[1, 2, 0, 4, 5, 3]])
        dx_px, dy_px = _float(attrs, "coreg_dx_px"), _float(attrs, "coreg_dy_px")
        metres = a * dx_px + b * dy_px if comp == "vx" else d * dx_px + e * dy_px
        shift = metres * DAYS_PER_YEAR / dt_days
    flag = 0 if method == "none" or not math.isfinite(shift) else (2 if slow else 1)
    count_stationary = 0 if slow else nodes
    count_slow = nodes if slow else 0
    return {
        "error": rmse,
        "error_description": (
            f"best estimate of the {comp} error, m/yr: RMSE of {comp} over the stable nodes after "
            "co-registration (error_stationary or error_slow, as stable_shift_flag says); the "
            "per-node one-sigma error is the v_error variable"
        ),
        "error_stationary": rmse if count_stationary else math.nan,
        "error_stationary_description": (
            "RMSE over stable ground given as outlines or a mask (m/yr)"
        ),
        "error_slow": rmse if count_slow else math.nan,
        "error_slow_description": "RMSE over the slowest quarter of the valid nodes (m/yr)",
        "stable_shift": shift,
        "stable_shift_flag": flag,
        "stable_shift_flag_description": _STABLE_SHIFT_FLAG_DESCRIPTION,
        "stable_shift_stationary": shift if flag == 1 else math.nan,
        "stable_count_stationary": count_stationary,
        "stable_shift_slow": shift if flag == 2 else math.nan,
        "stable_count_slow": count_slow,
    }


def _duration(seconds: float) -> str:
    """An ISO 8601 duration such as ``P16DT0H0M6S``."""
    days, rest = divmod(int(round(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"P{days}DT{hours}H{minutes}M{secs}S"


def global_attributes(
    attrs: Mapping[str, Any],
    *,
    version: str,
    crs: CRS | None,
    bounds: tuple[float, float, float, float] | None,
) -> dict[str, Any]:
    """The CF/ACDD global attributes of a pair product, derived from its flat attributes.

    Parameters
    ----------
    attrs : mapping
        Flat product attributes (``ref_time``, ``sec_time``, ``ref_sensor``, ``method``,
        ``history``).
    version : str
        The glacierflow version that made the product.
    crs : pyproj.CRS or None
        The map CRS, for the geographic bounds.
    bounds : tuple of 4 float or None
        ``(left, bottom, right, top)`` of the grid in map metres.

    Returns
    -------
    dict
        ``Conventions``, ``title``, ``summary``, ``source``, ``history``, ``references``,
        ``date_created``, ``glacierflow_version``, ITS_LIVE's ``scene_pair_type``,
        ``motion_detection_method`` and ``motion_coordinates``, and where known
        ``time_coverage_start``/``_end``/``_duration`` and ``geospatial_lat/lon_min/max``.
    """
    ref, sec = attrs.get("ref_time", "?"), attrs.get("sec_time", "?")
    sensor = attrs.get("ref_sensor") or attrs.get("sensor") or "optical"
    method = attrs.get("method", "unknown")
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = f"{now}: written by glacierflow {version}"
    if attrs.get("history"):
        history = f"{history}\n{attrs['history']}"
    out: dict[str, Any] = {
        "Conventions": "CF-1.8, ACDD-1.3",
        "title": f"Glacier surface velocity from {sensor} images {ref} to {sec}",
        "summary": (
            "Glacier surface velocity (vx, vy, v in m/yr) from feature tracking between two "
            "optical images, with per-node errors (v_error) and quality flags. The pair is "
            "described by img_pair_info (ITS_LIVE's attributes), the processing by "
            "processing_info, stable-ground statistics and ITS_LIVE's error and stable_shift "
            "attributes are on vx and vy, the error model on v_error."
        ),
        "source": f"glacierflow {version} feature tracking ({method})",
        "history": history,
        "references": (
            "Per-node error model: Altena, B., Kaab, A. and Wouters, B. (2022), The Cryosphere "
            "16, 2285-2300, doi:10.5194/tc-16-2285-2022. Layout after ITS_LIVE image-pair "
            "granules (Gardner et al., NSIDC, doi:10.5067/6II6VW8LLWJ7)."
        ),
        "date_created": now,
        "glacierflow_version": version,
        "scene_pair_type": "optical",
        "motion_detection_method": f"feature tracking ({method})",
        "motion_coordinates": "map",
    }
    t1, t2 = _utc(ref), _utc(sec)
    if t1 is not None and t2 is not None:
        out["time_coverage_start"] = t1.strftime("%Y-%m-%dT%H:%M:%SZ")
        out["time_coverage_end"] = t2.strftime("%Y-%m-%dT%H:%M:%SZ")
        out["time_coverage_duration"] = _duration((t2 - t1).total_seconds())
    if crs is not None and bounds is not None:
        to_geo = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        west, south, east, north = to_geo.transform_bounds(*bounds, densify_pts=21)
        out.update(
            geospatial_lat_min=float(south),
            geospatial_lat_max=float(north),
            geospatial_lon_min=float(west),
            geospatial_lon_max=float(east),
            geospatial_lat_units="degrees_north",
            geospatial_lon_units="degrees_east",
        )
    return out


def netcdf_attributes(
    ds: xr.Dataset, names: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Global attributes and attributes per variable of a pair product's NetCDF file.

    Parameters
    ----------
    ds : xarray.Dataset
        A velocity product with flat ``attrs`` (``transform`` required, ``crs_wkt`` optional).
    names : list of str
        The (y, x) variables the file holds.

    Returns
    -------
    globals : dict
        :func:`global_attributes` and the flat attributes that have no home.
    grouped : dict of str to dict
        Attributes by variable: :data:`PAIR_INFO` (:func:`pair_info_attributes` and
        :data:`PAIR_KEYS`), :data:`PROCESSING_INFO` (with ``transform`` when there is no CRS
        and so no grid mapping to hold it), ``vx``/``vy`` (:func:`component_error_attributes`
        and their statistics, ``ancillary_variables``), ``v`` and ``v_error``.
    """
    crs = dataset_crs(ds)
    transform = dataset_transform(ds)
    shape = (int(ds.sizes["y"]), int(ds.sizes["x"]))
    flat = {
        str(k): v
        for k, v in ds.attrs.items()
        if v is not None
        and not str(k).startswith("_")
        and k not in ("crs_wkt", "transform", *ITSLIVE_PAIR_DATES)
    }
    extra, grouped = split_attributes(flat, set(names))
    if crs is None:
        grouped[PROCESSING_INFO]["transform"] = list(transform.to_gdal())
    v = np.asarray(ds["v"].values) if "v" in ds.data_vars else np.zeros(0)
    valid = float(np.isfinite(v).mean()) if v.size else None
    pair = pair_info_attributes(
        ds.attrs, crs=crs, transform=transform, shape=shape, valid_fraction=valid
    )
    grouped[PAIR_INFO] = {**pair, **grouped[PAIR_INFO]}
    grouped[PROCESSING_INFO] = {
        "long_name": "processing settings: matching, filter and co-registration",
        **grouped[PROCESSING_INFO],
    }
    for comp in ("vx", "vy"):
        if comp in names:
            grouped[comp] = {**component_error_attributes(ds.attrs, comp), **grouped.get(comp, {})}
    for name in ("vx", "vy", "v"):
        own = (f"{name}_error",) if name != "v" else ()
        ancillary = " ".join(n for n in (*own, "v_error", "quality") if n in names)
        if name in names and ancillary:
            grouped.setdefault(name, {})["ancillary_variables"] = ancillary
    west, south, east, north = array_bounds(shape[0], shape[1], transform)
    glob = global_attributes(
        ds.attrs, version=product_version(ds), crs=crs, bounds=(west, south, east, north)
    )
    glob.update({k: val for k, val in extra.items() if k not in glob})
    return glob, grouped


def flatten_netcdf(nc: xr.Dataset) -> xr.Dataset:
    """A ``velocity.nc`` opened with xarray, in the in-memory form of a velocity product.

    The attributes filed on variables (:func:`merge_attributes`) come back to one flat
    ``attrs`` and leave the variables, as :func:`glacierflow.velocity.velocity_dataset` made
    them (ITS_LIVE's derived ``error``/``stable_shift`` attributes stay on ``vx``/``vy``);
    ``crs_wkt`` and ``transform`` come from the grid mapping (``mapping``, or ``spatial_ref``
    in files written before this layout, whose metadata is all global) or, without a CRS,
    from ``processing_info``; the group and grid-mapping variables are dropped.

    Parameters
    ----------
    nc : xarray.Dataset
        The file's content (loaded or lazy).

    Returns
    -------
    xarray.Dataset
        A new Dataset; ``nc`` is not changed.
    """
    gm = GRID_MAPPING if GRID_MAPPING in nc.variables else LEGACY_GRID_MAPPING
    grid_mapping = dict(nc[gm].attrs) if gm in nc.variables else {}
    grouped = {str(k): dict(nc[k].attrs) for k in nc.variables}
    processing = grouped.get(PROCESSING_INFO, {})
    ds = nc.copy(deep=False).drop_vars([*GROUP_VARIABLES, LEGACY_GRID_MAPPING], errors="ignore")
    for name in ds.data_vars:
        ds[name].attrs = {
            k: v
            for k, v in ds[name].attrs.items()
            if k not in ("grid_mapping", "ancillary_variables") and name not in attribute_homes(k)
        }
    attrs = {**nc.attrs, **merge_attributes(grouped)}
    if not attrs.get("crs_wkt") and grid_mapping:
        wkt = grid_mapping.get("crs_wkt")
        attrs["crs_wkt"] = str(wkt) if wkt else CRS.from_cf(grid_mapping).to_wkt()
    attrs.setdefault("crs_wkt", "")
    if "transform" not in attrs and "transform" in processing:
        attrs["transform"] = [float(c) for c in np.atleast_1d(processing["transform"])]
    if "transform" not in attrs and "GeoTransform" in grid_mapping:
        attrs["transform"] = [float(c) for c in str(grid_mapping["GeoTransform"]).split()]
    ds.attrs = attrs
    return ds

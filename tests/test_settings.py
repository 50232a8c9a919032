"""The settings tree: defaults written once, validation into errors that name the setting."""

from __future__ import annotations

import pickle

import pydantic
import pytest

from glacierflow.errors import SettingsError, render
from glacierflow.filters import METHOD_THRESHOLDS
from glacierflow.matching import MatchSettings
from glacierflow.settings import LEAVES, SHORTCUTS, TrackSettings


def test_defaults_come_from_the_stage_settings():
    s = TrackSettings()
    assert s.matching == MatchSettings()
    assert (s.matching.chip_px, s.matching.search_px, s.matching.step_px) == (32, 16, 8)
    assert s.coreg.method == "constant" and s.prefilter.method == "none"
    assert LEAVES["matching.chip_px"].default == 32
    with pytest.raises(pydantic.ValidationError):
        s.coreg.method = "none"  # frozen


def test_shortcuts_map_into_the_tree():
    s = TrackSettings().updated(
        chip_px=48, coreg="none", prefilter_sigma_px=2.0, prior_vx="a", prior_vy="b"
    )
    assert s.matching.chip_px == 48 and s.coreg.method == "none"
    assert s.prefilter.highpass_sigma_px == 2.0
    assert str(s.prior.vx) == "a" and str(s.prior.vy) == "b"
    assert SHORTCUTS["coreg"] == "coreg.method" and SHORTCUTS["prior_vx"] == "prior.vx"
    assert s.updated({"matching.step_px": 4}).matching.step_px == 4


@pytest.mark.parametrize("method", list(METHOD_THRESHOLDS))
def test_filter_thresholds_default_per_correlator(method):
    subpixel = "dft" if method == "phase" else "lanczos"
    f = TrackSettings().updated(method=method, subpixel=subpixel).filter_settings()
    assert (f.min_corr, f.min_snr) == METHOD_THRESHOLDS[method]
    assert f.min_cluster_nodes == 16
    given = TrackSettings().updated(method=method, subpixel=subpixel, min_corr=0.5)
    assert given.filter_settings().min_corr == 0.5


@pytest.mark.parametrize(
    ("change", "key", "phrase"),
    [
        ({"chip_px": 0}, "matching.chip_px", "must be a positive whole number, got 0"),
        ({"chip_px": 2}, "matching.chip_px", "at least 4"),
        ({"min_corr": 1.5}, "filtering.min_corr", "must be at most 1"),
        ({"coreg": "rubber"}, "coreg.method", "must be one of constant, affine, poly2, none"),
        ({"prior_vx": "a.tif"}, "prior.vy", "must be given with prior.vx"),
        ({"prefilter": "orientation", "tile_nodes": 9}, "tiling", "tiled processing"),
        ({"chip_pz": 3}, "chip_pz", "did you mean 'chip_px'?"),
    ],
)
def test_bad_settings_name_their_key(change, key, phrase):
    with pytest.raises(SettingsError) as info:
        TrackSettings().updated(**change)
    assert info.value.key == key
    assert str(info.value).startswith(key) and phrase in str(info.value)


def test_a_nested_mapping_validates_with_did_you_mean():
    s = TrackSettings.from_mapping({"matching": {"chip_px": 64}, "coreg": {"method": "affine"}})
    assert s.matching.chip_px == 64 and s.coreg.method == "affine"
    with pytest.raises(
        SettingsError, match=r"^filtering.min_snrr is not a setting; did you mean 'min_snr'"
    ):
        TrackSettings.from_mapping({"filtering": {"min_snrr": 2}})
    with pytest.raises(
        SettingsError, match=r"^filtring is not a setting; did you mean 'filtering'"
    ):
        TrackSettings.from_mapping({"filtring": {}})
    with pytest.raises(SettingsError) as info:
        TrackSettings.from_mapping({"prefilter": {"method": "sobel"}})
    assert info.value.allowed == ("none", "highpass", "wallis", "orientation")


def test_each_door_names_a_setting_its_own_way():
    with pytest.raises(SettingsError) as info:
        TrackSettings().updated(search_px=-1)
    exc = pickle.loads(pickle.dumps(info.value))  # as sent back from a worker process
    assert exc.key == "matching.search_px"
    cli = render(exc, lambda k: "--" + LEAVES[k].short.replace("_", "-"))
    assert cli == "--search-px must be a positive whole number, got -1"
    table = render(exc, lambda k: "[{}] {}".format(*k.split(".")))
    assert table == "[matching] search_px must be a positive whole number, got -1"

"""Tuned settings: read_settings refuses a bad file naming it and the fix; command-line flags win over the
file, the file over the defaults; `package --config` ships it as submission/config.json, which the unpacked
submission reads by default and checks against its manifest."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

import timebox.config as config_module
from timebox.cli import _settings, build_parser
from timebox.config import OnlineConfig, read_settings
from timebox.errors import UsageError
from timebox.manifest import check_unpacked
from timebox.package import build_zip, safe_extract

ONLINE = ["online", "--train-dir", "t", "--out", "o", "--budget", "1m"]


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_a_valid_file_gives_its_settings_and_they_build_a_config(tmp_path):
    tuned = {"backbone": "efficientnet-lite1", "size": 192, "val_fraction": 0.1, "finetune": False, "margin_s": 12}
    settings = read_settings(_write(tmp_path / "tuned.json", tuned))
    assert settings == tuned
    assert OnlineConfig("t", None, "o", 60.0, **settings).size == 192


@pytest.mark.parametrize("content, message", [
    ('{"size": 224', "not a readable JSON file"),
    ('[1, 2]', "holds a JSON list"),
    ('{"epochs": 3}', "unknown setting(s) epochs; known: backbone"),
    ('{"size": "224"}', 'setting size is "224"; it must be int or null'),
    ('{"finetune": 1}', "setting finetune is 1; it must be bool"),
    ('{"seed": true}', "setting seed is true; it must be int"),
    ('{"latency_ms": 0}', "latency_ms is 0; it must be above 0"),
    ('{"zoom_share": 1.5}', "zoom_share is 1.5; it must be between 0 and 1"),
    ('{"finetune_lr": 0}', "finetune_lr is 0; it must be above 0 and at most 1"),
])
def test_a_bad_file_is_refused_naming_it_and_what_to_write(tmp_path, content, message):
    path = tmp_path / "tuned.json"
    path.write_text(content)
    with pytest.raises(UsageError) as exc:
        read_settings(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


@pytest.mark.parametrize("flags, message", [
    (["--latency-ms", "0"], "latency_ms is 0; it must be above 0"),
    (["--latency-ms", "-5"], "latency_ms is -5; it must be above 0"),
    (["--zoom-share", "2"], "zoom_share is 2; it must be between 0 and 1"),
    (["--finetune-lr", "3"], "finetune_lr is 3; it must be above 0 and at most 1"),
])
def test_out_of_range_flags_exit_2_saying_the_range(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*ONLINE, *flags])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_zoom_share_flag_reaches_the_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "SHIPPED_CONFIG", tmp_path / "absent.json")
    assert _settings(build_parser().parse_args([*ONLINE, "--zoom-share", "0"])) == (None, {"zoom_share": 0.0})


def test_finetune_lr_flag_reaches_the_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "SHIPPED_CONFIG", tmp_path / "absent.json")
    assert _settings(build_parser().parse_args([*ONLINE, "--finetune-lr", "1e-4"])) == (None, {"finetune_lr": 1e-4})


def test_second_backbone_flag_reaches_the_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "SHIPPED_CONFIG", tmp_path / "absent.json")
    args = build_parser().parse_args([*ONLINE, "--second-backbone", "none"])
    assert _settings(args) == (None, {"second_backbone": "none"})


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        read_settings(tmp_path / "nope.json")


def test_flags_win_over_the_file_and_the_file_over_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "SHIPPED_CONFIG", tmp_path / "absent.json")
    path = _write(tmp_path / "tuned.json", {"size": 192, "seed": 4, "keep": 5})
    args = build_parser().parse_args([*ONLINE, "--config", str(path), "--seed", "7", "--margin", "20s"])
    assert _settings(args) == (path, {"size": 192, "seed": 7, "keep": 5, "margin_s": 20.0})
    assert _settings(build_parser().parse_args(ONLINE)) == (None, {})


def test_without_config_the_shipped_file_is_read(tmp_path, monkeypatch):
    shipped = _write(tmp_path / "config.json", {"val_fraction": 0.2})
    monkeypatch.setattr(config_module, "SHIPPED_CONFIG", shipped)
    assert _settings(build_parser().parse_args(ONLINE)) == (shipped, {"val_fraction": 0.2})


def test_package_ships_the_config_and_the_unpacked_submission_reads_it(tmp_path):
    tuned = _write(tmp_path / "tuned.json", {"size": 160, "keep": 2})
    zip_path = build_zip(tmp_path / "s.zip", config=tuned)
    with zipfile.ZipFile(zip_path) as zf:
        assert json.loads(zf.read("submission/config.json")) == {"size": 160, "keep": 2}
    unpacked = tmp_path / "unpacked"
    safe_extract(zip_path, unpacked)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TIMEBOX_START")}
    env["PYTHONPATH"] = str(unpacked / "submission")
    code = ("from timebox.cli import _settings, build_parser; "
            f"print(_settings(build_parser().parse_args({ONLINE!r}))[1])")
    out = subprocess.run([sys.executable, "-c", code], cwd=unpacked, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "{'size': 160, 'keep': 2}"
    (unpacked / "submission" / "config.json").write_text('{"size": 224, "keep": 9}')  # same size, other settings
    with pytest.raises(UsageError, match="submission/config.json"):
        check_unpacked(unpacked)


def test_package_refuses_a_broken_config_before_writing_a_zip(tmp_path):
    bad = tmp_path / "tuned.json"
    bad.write_text('{"sise": 160}')
    with pytest.raises(UsageError, match="unknown setting"):
        build_zip(tmp_path / "s.zip", config=bad)
    assert not (tmp_path / "s.zip").exists()

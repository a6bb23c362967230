"""Settings are written once (timebox.settings) and the rest derives from them: the config's fields, the
settings a --config file may hold and their checks, the flags, and the table of docs/settings.md."""

import json
from dataclasses import fields
from pathlib import Path

import pytest

from timebox.cli import build_parser
from timebox.config import OnlineConfig, read_settings
from timebox.errors import UsageError
from timebox.settings import SETTINGS, markdown_table

SETTINGS_DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_the_settings_doc_table_is_the_one_the_settings_generate():
    text = SETTINGS_DOC.read_text(encoding="utf-8")
    table = text.split("<!-- settings:begin -->\n", 1)[1].split("\n<!-- settings:end -->", 1)[0]
    assert table == markdown_table(), "regenerate docs/settings.md's table from timebox.settings.markdown_table()"


def test_every_setting_is_a_config_field_with_its_default():
    cfg = OnlineConfig(Path("t"), None, Path("o"), 60.0)
    names = {f.name for f in fields(OnlineConfig)}
    for s in SETTINGS:
        assert s.name in names and getattr(cfg, s.name) == s.default, s.name


def test_a_config_file_takes_every_setting_at_its_default(tmp_path):
    path = tmp_path / "all.json"
    path.write_text(json.dumps({s.name: s.default for s in SETTINGS}))
    assert read_settings(path) == {s.name: s.default for s in SETTINGS}


def test_a_planning_setting_out_of_range_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text('{"ensemble_max_share": 1.5}')
    with pytest.raises(UsageError, match=r"tuned.json: ensemble_max_share is 1.5; it must be between 0 and 1"):
        read_settings(path)


def test_every_flag_comes_from_its_setting_and_says_its_default():
    online = build_parser()._subparsers._group_actions[0].choices["online"]
    helps = {opt: action.help for action in online._actions for opt in action.option_strings}
    for s in SETTINGS:
        if s.flag is None:
            continue
        assert s.flag in helps, s.flag
        assert helps[s.flag].startswith(s.help.replace("%", "%%")), s.flag  # argparse %-formats help
        if s.kind is not bool:
            assert "default:" in helps[s.flag], s.flag

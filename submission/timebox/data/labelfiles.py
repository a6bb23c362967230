"""Parsers for label files; every error names the file (and line) and the expected form."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from timebox.data.files import is_image
from timebox.errors import UsageError

_ID = re.compile(r"([0-9]+)(?:\.0*)?")  # a class id: ASCII digits, optionally with a zero fraction ("3.0")
_MODELARTS_LINE = re.compile(r"(.+?)\s*,\s*([0-9]+(?:\.0*)?)")


def parse_id(text: str) -> int | None:
    """The class id an integer-valued label stands for ("3", "3.0", " 1.0 " -> 3, 3, 1); None for a name."""
    match = _ID.fullmatch(text.strip())
    return int(match.group(1)) if match else None


def label_ids(path: Path, rows: list[tuple[int, str]]) -> list[int] | None:
    """The class ids of (line, label) rows when every label is an id, None when every label is a name;
    a file mixing the two is refused at the first row whose kind differs from the first row's."""
    ids = [parse_id(label) for _, label in rows]
    first_is_id = bool(ids) and ids[0] is not None
    for (lineno, label), class_id in zip(rows, ids):
        if (class_id is not None) != first_is_id:
            kinds = ("id", "name") if class_id is not None else ("name", "id")
            raise UsageError(
                f"{path}:{lineno}: label {label!r} is a class {kinds[0]} but line {rows[0][0]} has the class "
                f"{kinds[1]} {rows[0][1]!r}; a label file must not mix ids and names: write one kind throughout"
            )
    return [i for i in ids if i is not None] if first_is_id else None


def read_text(path: Path) -> str:
    """Whole file as UTF-8 (a leading BOM is dropped)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}; check that it exists and is readable") from exc


def read_class_index(path: Path) -> dict[str, int]:
    """Parse class_index.txt lines `name id`; the name may contain spaces (split on the last whitespace)."""
    ids: dict[str, int] = {}
    for lineno, raw in enumerate(read_text(path).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        class_id = parse_id(parts[1]) if len(parts) == 2 else None
        if class_id is None:
            raise UsageError(
                f"{path}:{lineno}: expected 'class_name class_id' (e.g. 'daisy 0'), got {line!r}; "
                "fix or delete this line"
            )
        name = parts[0].strip()
        if name in ids:
            raise UsageError(f"{path}:{lineno}: class {name!r} is listed twice; keep one line per class")
        if class_id in ids.values():
            raise UsageError(f"{path}:{lineno}: class id {class_id} is used twice; give every class its own id")
        ids[name] = class_id
    if not ids:
        raise UsageError(f"{path} lists no classes; write one 'class_name class_id' line per class")
    return ids


def read_rule_json(path: Path) -> dict[int, str]:
    """Parse garbage_classify_rule.json: {"0": "class name", ...} -> {0: "class name", ...}."""
    expected = 'expected a JSON object like {"0": "class name", "1": "other name"}'
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); {expected}") from exc
    if not isinstance(data, dict) or not data:
        raise UsageError(f"{path}: {expected}")
    rule: dict[int, str] = {}
    for key, name in data.items():
        class_id = parse_id(key)
        if class_id is None or not isinstance(name, str):
            raise UsageError(f"{path}: bad entry {key!r}: {name!r}; {expected}")
        if class_id in rule:
            raise UsageError(f"{path}: class id {class_id} is given twice ({key!r}); keep one entry per id")
        rule[class_id] = name
    return rule


def read_modelarts_txt(path: Path) -> tuple[str, int]:
    """Parse a ModelArts label file containing `img_N.jpg, K` -> ("img_N.jpg", K)."""
    text = read_text(path).strip()
    match = _MODELARTS_LINE.fullmatch(text)
    if match is None:
        raise UsageError(
            f"{path}:1: expected 'img_N.jpg, K' (image file name, comma, integer class id), got {text[:80]!r}; "
            "fix the line or delete the file"
        )
    return match.group(1), parse_id(match.group(2))


def read_label_csv(path: Path) -> list[tuple[int, str, str]]:
    """Rows of a `filename,label` CSV as (line number, filename, label); an optional header row is skipped."""
    rows: list[tuple[int, str, str]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            first = True
            for row in reader:
                fields = [field.strip() for field in row]
                if not any(fields):
                    continue
                if first and _is_header(fields):
                    first = False
                    continue
                first = False
                if len(fields) != 2 or not fields[0] or not fields[1]:
                    raise UsageError(
                        f"{path}:{reader.line_num}: expected 'filename,label', got {','.join(row)!r}; "
                        "fix or delete this row"
                    )
                rows.append((reader.line_num, fields[0], fields[1]))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason}); re-save it as UTF-8") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}; check that it exists and is readable") from exc
    except csv.Error as exc:
        raise UsageError(f"{path}: malformed CSV ({exc}); expected 'filename,label' rows") from exc
    return rows


def _is_header(fields: list[str]) -> bool:
    """A first row such as `filename,label`: the label is not an id and the name is not an image file name."""
    return len(fields) == 2 and parse_id(fields[1]) is None and not is_image(Path(fields[0]))

"""Import rows → value tuples in record field order: the columns of each table (from its record), type
checks and coercion (JSON types, CSV text), MOR's "no limit" spellings, and the parsing of a JSON or CSV
file. Split from ``collector.refdata.importer`` (which validates and writes) so each stays small.

Why tuples: the validation and the write work on 125,000 rows; a tuple per row, built at C speed for
the common row, costs a fraction of a record or a dict.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from operator import itemgetter
from pathlib import Path
from typing import Any

from collector.refdata.errors import ImportValidationError
from collector.refdata.store import REF_TABLES

__all__ = ["SPECS", "TABLE_COLS", "Col", "Row", "Spec", "parse_file", "parse_rows"]

_CSV_INT = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class Col:
    name: str
    kind: type  # int | str
    required: bool
    limit: bool = False  # ``int | None`` (call_limit): null, 0 or negative = no limit, stored as None


def _table_columns(cls: type) -> dict[str, Col]:
    out = {}
    for f in fields(cls):
        limit = f.type in ("int | None", int | None)
        kind = int if limit or f.type in ("int", int) else str
        out[f.name] = Col(f.name, kind, f.default is MISSING and f.default_factory is MISSING, limit)
    return out


TABLE_COLS: dict[str, dict[str, Col]] = {t: _table_columns(c) for t, c in REF_TABLES.items()}


class _RowError(Exception):
    pass


def _coerce(col: Col, value: Any, from_csv: bool) -> Any:
    if col.kind is int:
        if from_csv and isinstance(value, str):
            text = value.strip()
            if not _CSV_INT.fullmatch(text):
                raise _RowError(f"{col.name}: expected an integer, got {value!r}")
            number = int(text)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise _RowError(f"{col.name}: expected an integer, got {type(value).__name__} {value!r}")
        else:
            number = value
        return None if col.limit and number <= 0 else number
    if not isinstance(value, str):
        hint = " (quote numbers to keep leading zeros)" if isinstance(value, (int, float)) else ""
        raise _RowError(f"{col.name}: expected a string, got {type(value).__name__} {value!r}{hint}")
    return value


def _build_record(table: str, raw: Any, from_csv: bool) -> Any:
    if not isinstance(raw, Mapping):
        raise _RowError(f"expected an object with column names, got {type(raw).__name__}")
    cols = TABLE_COLS[table]
    if None in raw:  # csv.DictReader: more cells than header columns
        raise _RowError("more cells than columns in the header")
    unknown = [k for k in raw if k not in cols]
    if unknown:
        raise _RowError(f"unknown column {unknown[0]!r} (known: {', '.join(cols)})")
    values: dict[str, Any] = {}
    for name, col in cols.items():
        value = raw.get(name)
        if value is None or (from_csv and value == ""):
            if col.required:
                raise _RowError(f"missing required column {name!r}")
            continue
        values[name] = _coerce(col, value, from_csv)
    return REF_TABLES[table](**values)


def parse_file(file: Path) -> tuple[dict[str, list[Any]], bool]:
    """(rows by table, from_csv) of a JSON ``{table: [rows]}`` file or a CSV named after its table."""
    source = file.name
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportValidationError("", None, f"not UTF-8 text: {exc}", source=source) from None
    if file.suffix.lower() == ".csv":
        table = file.stem
        if table not in REF_TABLES:
            raise ImportValidationError("", None, f"CSV file name must name a table "
                                        f"({', '.join(REF_TABLES)}), got {table!r}", source=source)
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if not reader.fieldnames:
                raise ImportValidationError(table, None, "empty file: no header line", source=source)
            rows: list[Any] = list(reader)
        except csv.Error as exc:
            raise ImportValidationError(table, None, f"bad CSV: {exc}", source=source) from None
        return {table: rows}, True
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportValidationError("", None, f"not valid JSON: {exc}", source=source) from None
    return data, False


@dataclass(frozen=True, slots=True)
class Spec:
    """A table's columns prepared once: what a row tuple is (record field order) and how it is written."""

    names: tuple[str, ...]
    index: dict[str, int]
    colset: frozenset[str]
    defaults: dict[str, Any]  # optional columns only
    types: tuple[type, ...]
    limits: tuple[int, ...]  # positions of the ``int | None`` limit columns (None or an int)
    limit_types: frozenset[tuple[type, ...]]  # ``types`` with each combination of limits None
    getter: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    select_sql: str
    insert_sql: str


def _spec(table: str, cls: type) -> Spec:
    names = tuple(f.name for f in fields(cls))
    assert len(names) >= 2 and names[0] == "id"  # itemgetter of 2+ names returns a tuple
    defaults = {f.name: (f.default if f.default is not MISSING else f.default_factory())  # type: ignore[operator]
                for f in fields(cls) if f.default is not MISSING or f.default_factory is not MISSING}
    cols = ", ".join(f'"{c}"' for c in names)
    types = tuple(TABLE_COLS[table][n].kind for n in names)
    limits = tuple(i for i, n in enumerate(names) if TABLE_COLS[table][n].limit)
    limit_types = {types}
    for i in limits:
        limit_types |= {t[:i] + (type(None),) + t[i + 1:] for t in limit_types}
    return Spec(names, {n: i for i, n in enumerate(names)}, frozenset(names), defaults,
                 types, limits, frozenset(limit_types), itemgetter(*names),
                 f'SELECT {cols} FROM "{table}" ORDER BY id',
                 f'INSERT OR REPLACE INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(names))})')


SPECS: dict[str, Spec] = {t: _spec(t, c) for t, c in REF_TABLES.items()}

Row = tuple[Any, ...]


def parse_rows(table: str, rows: list[Any], from_csv: bool, source: str) -> list[Row]:
    """The rows as value tuples in record field order. Fast path (C-level key and type checks) for the
    common row that has exact ``int``/``str`` values; anything else goes through ``_build_record``,
    which either accepts it the same way or raises the row's error."""
    spec = SPECS[table]
    getter, types, colset, defaults, names = spec.getter, spec.types, spec.colset, spec.defaults, spec.names
    limits, limit_types = spec.limits, spec.limit_types
    n = len(names)
    out: list[Row] = []
    append = out.append
    for i, raw in enumerate(rows, 1):
        if not from_csv and type(raw) is dict and raw.keys() <= colset:
            try:
                values = getter(raw if len(raw) == n else {**defaults, **raw})
            except KeyError:  # a required column missing: the slow path names it
                pass
            else:
                kinds = tuple(map(type, values))
                if kinds == types and not limits:
                    append(values)
                    continue
                # a limit column: None or a positive int as is; 0 / negative → the slow path's None
                if kinds in limit_types and all(values[j] is None or values[j] > 0 for j in limits):
                    append(values)
                    continue
        try:
            record = _build_record(table, raw, from_csv)
        except _RowError as exc:
            raise ImportValidationError(table, i, str(exc), source=source) from None
        except TypeError as exc:  # pragma: no cover - records reject nothing _build_record allows
            raise ImportValidationError(table, i, str(exc), source=source) from None
        append(tuple(getattr(record, c) for c in names))
    return out

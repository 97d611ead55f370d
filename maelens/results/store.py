"""One results format for every analysis: a long table plus named arrays, schema-versioned.

A results directory holds
    results.json   {"schema_version", "meta", "rows": [...], "arrays": {name: [shape, dtype]}}
    results.csv    the same rows, one per line (COLUMNS), for spreadsheets and pandas
    arrays.npz     the named arrays (float32/float64/int64), uncompressed
Figures and the report read these files alone: re-rendering never needs a model.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maelens.analyses.base import AnalysisResult
from maelens.errors import MaelensError
from maelens.results.io import atomic_write

SCHEMA_VERSION = 2
COLUMNS = ("analysis", "model", "condition", "level", "layer", "head", "metric", "value", "unit",
           "ci_low", "ci_high", "extra")


@dataclass
class ResultSet:
    """Rows (dicts keyed by COLUMNS) and arrays named "model/analysis/condition/name"."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, result: AnalysisResult, model: str = "", condition: str = "",
            level: str | None = None) -> None:
        """Append one analysis result under (model, condition); `level` labels the rows that
        carry none of their own (e.g. the condition's level)."""
        for row in result.rows:
            self.rows.append({
                "analysis": result.name, "model": model, "condition": condition,
                "level": row.level if row.level is not None else level, "layer": row.layer,
                "head": row.head, "metric": row.metric,
                "value": _finite_or_none(row.value), "unit": row.unit,
                "ci_low": _finite_or_none(row.ci_low), "ci_high": _finite_or_none(row.ci_high),
                "extra": row.extra or None})
        for name, array in result.arrays.items():
            self.arrays[array_key(model, result.name, condition, name)] = np.asarray(array)
        if result.meta:
            self.meta.setdefault("analyses", {})[array_key(model, result.name, condition)] = (
                result.meta)

    def select(self, **where: Any) -> list[dict[str, Any]]:
        """Rows whose columns equal every `where` value (e.g. analysis="accuracy")."""
        return [r for r in self.rows if all(r.get(k) == v for k, v in where.items())]

    def where(self, model: str) -> ResultSet:
        """The rows and arrays of one model, e.g. to draw its figures alone; its meta is the
        shared meta updated with `meta["model_meta"][model]` (what only that model ran)."""
        prefix = array_key(model, "x", "x").rsplit("/", 2)[0] + "/"
        meta = {**self.meta, **self.meta.get("model_meta", {}).get(model, {})}
        return ResultSet([r for r in self.rows if r["model"] == model],
                         {k: v for k, v in self.arrays.items() if k.startswith(prefix)}, meta)

    def array(self, model: str, analysis: str, condition: str, name: str) -> np.ndarray:
        key = array_key(model, analysis, condition, name)
        if key not in self.arrays:
            raise MaelensError(f"results hold no array {key!r}; present: "
                               f"{', '.join(sorted(self.arrays)) or 'none'}.")
        return self.arrays[key]


def array_key(model: str, analysis: str, condition: str, name: str = "") -> str:
    return "/".join(part or "-" for part in (model, analysis, condition, name)).rstrip("/-")


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None if math.isnan(value) else value


def write_results(out_dir: str | os.PathLike, results: ResultSet) -> Path:
    """Write results.json, results.csv and arrays.npz atomically into `out_dir`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MaelensError(f"results folder {out} is a file; give a folder.")
    out.mkdir(parents=True, exist_ok=True)
    index = {k: [list(v.shape), str(v.dtype)] for k, v in results.arrays.items()}
    record = {"schema_version": SCHEMA_VERSION, "meta": results.meta, "rows": results.rows,
              "arrays": index}
    text = json.dumps(record, indent=1, default=_json_default, allow_nan=True)

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{k.replace("/", "|"): v for k, v in results.arrays.items()})

    atomic_write(out / "arrays.npz", write_npz)
    atomic_write(out / "results.csv", lambda tmp: tmp.write_text(rows_csv(results.rows)))
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(text + "\n"))
    return out / "results.json"


def rows_csv(rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        extra = row.get("extra")
        writer.writerow({**row, "extra": json.dumps(extra, sort_keys=True) if extra else ""})
    return buffer.getvalue()


def read_results(out_dir: str | os.PathLike) -> ResultSet:
    """Read a results folder written by `write_results` (schema version checked)."""
    path = Path(out_dir) / "results.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise MaelensError(f"no results.json in {Path(out_dir)}; run an analysis first.") from None
    except json.JSONDecodeError as exc:
        raise MaelensError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    if not isinstance(record, dict) or record.get("schema_version") != SCHEMA_VERSION:
        got = record.get("schema_version") if isinstance(record, dict) else None
        raise MaelensError(f"{path} has results schema {got!r}; this maelens reads "
                           f"{SCHEMA_VERSION}. Re-run the analysis with this version.")
    arrays: dict[str, np.ndarray] = {}
    npz = Path(out_dir) / "arrays.npz"
    if record.get("arrays"):
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k.replace("|", "/"): data[k] for k in data.files}
    return ResultSet(rows=record["rows"], arrays=arrays, meta=record.get("meta", {}))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)

"""Input validation shared by the analytics modules.

Every check raises ``ValueError`` with a message that names the offending field, so that the
command line and the API can hand the message to the user unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["UNIT_FACTORS_TO_MM", "as_float_array", "as_matrix", "to_mm"]

# Keys are what users actually type; "µ" (U+00B5, micro sign) and "μ" (U+03BC, Greek mu) both occur.
UNIT_FACTORS_TO_MM: dict[str, float] = {
    "mm": 1.0,
    "um": 1e-3,
    "µm": 1e-3,
    "μm": 1e-3,
    "micron": 1e-3,
    "microns": 1e-3,
}


def to_mm(units: object, field: str = "units") -> float:
    """Return the factor that converts values in ``units`` to millimetres.

    Raises ValueError naming ``field`` for anything but mm and micrometres.
    """
    if not isinstance(units, str) or units.strip() not in UNIT_FACTORS_TO_MM:
        allowed = ", ".join(repr(u) for u in ("mm", "um", "µm"))
        raise ValueError(f"{field}: unknown units {units!r}; expected one of {allowed}")
    return UNIT_FACTORS_TO_MM[units.strip()]


def _first_bad(arr: NDArray[np.float64]) -> tuple[int, ...]:
    bad = np.argwhere(~np.isfinite(arr))
    return tuple(int(i) for i in bad[0])


def _word(x: float) -> str:
    return "NaN" if np.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _index(field: str, idx: tuple[int, ...]) -> str:
    return field + "".join(f"[{i}]" for i in idx)


def _reject_non_numbers(value: Any, field: str) -> None:
    # np.asarray turns None into an object array and strings into '<U' arrays; walk the input
    # once to name the exact element that is not a number.
    stack: list[tuple[Any, tuple[int, ...]]] = [(value, ())]
    while stack:
        item, idx = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend((sub, (*idx, k)) for k, sub in enumerate(item))
        elif item is None:
            raise ValueError(
                f"{_index(field, idx)} is null (a missing value); remove it or fill it"
            )
        elif isinstance(item, bool) or not isinstance(item, (int, float, np.number)):
            raise ValueError(f"{_index(field, idx)} is {item!r}, not a number")


def as_float_array(value: Any, field: str, *, min_len: int = 1) -> NDArray[np.float64]:
    """Convert a 1-D sequence of numbers to a finite float64 array (n,), n >= ``min_len``."""
    if isinstance(value, np.ndarray):
        arr = np.asarray(value, dtype=np.float64)
    else:
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise ValueError(f"{field} must be a list of numbers, got {type(value).__name__}")
        _reject_non_numbers(value, field)
        try:
            arr = np.asarray(value, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{field} must be a flat list of numbers") from exc
    if arr.ndim != 1:
        raise ValueError(f"{field} must be a flat list of numbers, got {arr.ndim} dimensions")
    if arr.shape[0] < min_len:
        raise ValueError(f"{field} needs at least {min_len} values, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        idx = _first_bad(arr)
        raise ValueError(f"{_index(field, idx)} is {_word(arr[idx])}; every value must be finite")
    return arr


def as_matrix(
    value: Any,
    field: str,
    *,
    columns: int | None = None,
    min_rows: int = 1,
    row_name: str = "row",
    column_hint: str = "",
) -> NDArray[np.float64]:
    """Convert a list of equally long lists of numbers to a finite float64 array (rows, columns).

    ``columns`` fixes the row length; ragged input is rejected naming the first bad row.
    """
    if isinstance(value, np.ndarray):
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"{field} must be a list of lists, got {arr.ndim} dimensions")
    else:
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise ValueError(f"{field} must be a list of lists, got {type(value).__name__}")
        rows = list(value)
        for k, row in enumerate(rows):
            if not isinstance(row, Sequence) or isinstance(row, (str, bytes)):
                raise ValueError(
                    f"{field}[{k}] must be a list of numbers, got {type(row).__name__}"
                )
        width = columns if columns is not None else (len(rows[0]) if rows else 0)
        for k, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(
                    f"{field}[{k}] has {len(row)} values, expected {width}{column_hint}"
                )
        _reject_non_numbers(rows, field)
        arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    if columns is not None and arr.shape[1] != columns:
        raise ValueError(
            f"{field} rows have {arr.shape[1]} values, expected {columns}{column_hint}"
        )
    if arr.shape[0] < min_rows:
        raise ValueError(f"{field} needs at least {min_rows} {row_name}s, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        idx = _first_bad(arr)
        raise ValueError(f"{_index(field, idx)} is {_word(arr[idx])}; every value must be finite")
    return arr

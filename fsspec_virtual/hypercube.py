"""Where each file sits in a collection: variable sets, concat dimensions, N-D positions.

Pure planning, as ``xr.combine_by_coords`` / ``combine_nested`` do it: files are grouped
by the set of data variables they hold; within a group, the dimensions along which files
differ are those whose coordinate values differ (or the ones named); each file's position
along a dimension is the rank of its first coordinate value (or of its natural file-name
order, or of a value parsed from its path); the positions must fill a hypercube.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from .coords import check_calendars, decode_many
from .errors import IncompatibleSourcesError
from .manifest import Manifest

__all__ = [
    "CombineOptions",
    "SharedPlaceError",
    "PathValue",
    "data_variables",
    "coordinate_variables",
    "group_by_variables",
    "infer_concat_dims",
    "place",
    "natural_key",
    "sortable",
    "direction",
    "value_from_path",
]

#: A way to find a file's coordinate in its path: a regex with one group, or a callable.
PathValue = str | Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class CombineOptions:
    """How the files of a collection are combined (as ``xr.open_mfdataset``'s options).

    Attributes
    ----------
    combine
        ``"by_coords"``: positions from coordinate values; ``"nested"``: from natural
        file-name order where there are none.
    concat_dims
        The dimensions to concatenate along; None: inferred (``by_coords``).
    join
        ``"outer"``: variables missing from some files are served missing there;
        ``"exact"``: refused.
    coords_from_path
        Dimension -> where its coordinate value is in a file's path.
    """

    combine: Literal["by_coords", "nested"] = "by_coords"
    concat_dims: tuple[str, ...] | None = None
    join: Literal["outer", "exact"] = "outer"
    coords_from_path: tuple[tuple[str, PathValue], ...] = ()

    @property
    def runs_code(self) -> bool:
        """Whether a coordinate comes from a callable: what it returns may depend on more
        than its own code (globals, helpers, files), which no identity can capture, so a
        snapshot combined with it is never reused by another store, nor kept in or taken
        from the persistent scan cache (each file's scan still is)."""
        return any(not isinstance(where, str) for _, where in self.coords_from_path)

    @classmethod
    def from_arguments(
        cls,
        concat_dim: str | Sequence[str] | None = None,
        combine: str = "by_coords",
        join: str = "outer",
        coords_from_path: dict[str, PathValue] | None = None,
    ) -> CombineOptions:
        """Validate and normalise the filesystem's arguments."""
        if combine not in ("by_coords", "nested"):
            raise ValueError(f"combine must be 'by_coords' or 'nested', not {combine!r}")
        if join not in ("outer", "exact"):
            raise ValueError(f"join must be 'outer' or 'exact', not {join!r}")
        dims = (concat_dim,) if isinstance(concat_dim, str) else concat_dim
        dims = tuple(dims) if dims is not None else None
        if dims is not None and (not dims or not all(isinstance(d, str) and d for d in dims)):
            raise ValueError(f"concat_dim must be a name or a list of names, not {concat_dim!r}")
        from_path = tuple(sorted((coords_from_path or {}).items()))
        for dim, where in from_path:
            if isinstance(where, str):
                if re.compile(where).groups != 1:
                    raise ValueError(
                        f"coords_from_path[{dim!r}] = {where!r} must have exactly one group"
                    )
            elif not callable(where):
                raise ValueError(f"coords_from_path[{dim!r}] must be a regex or a callable")
        if combine == "nested" and dims is None:
            raise ValueError("combine='nested' needs concat_dim (a name or a list of names)")
        return cls(combine, dims, join, from_path)  # type: ignore[arg-type]

    def identity(self, callables: bool = True) -> list[Any]:
        """A JSON-able form that is the same in every process: callables by name and a
        digest of their code, or (``callables=False``) only as being callables, for an
        identity that digests what they return instead (a snapshot's: the code of a
        callable pickled to another process does not digest alike)."""
        return [
            self.combine,
            list(self.concat_dims) if self.concat_dims is not None else None,
            self.join,
            [
                [d, w if isinstance(w, str) else _callable_name(w) if callables else "callable"]
                for d, w in self.coords_from_path
            ],
        ]


def _callable_name(function: Callable[..., Any]) -> str:
    """A callable's identity: its name and a digest of what it does (its code, defaults
    and closure), so that an edited function is another collection, in every process."""
    import hashlib
    import marshal

    name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"
    code = getattr(function, "__code__", None)
    if code is None:
        return f"{name}:{function!r}"
    cells = [c.cell_contents for c in (getattr(function, "__closure__", None) or ())]
    parts = [marshal.dumps(code), repr(getattr(function, "__defaults__", None)).encode()]
    parts.append(repr(cells).encode())
    return f"{name}:{hashlib.sha256(b'|'.join(parts)).hexdigest()[:16]}"


class _Scanned(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def manifest(self) -> Manifest: ...

    @property
    def coords(self) -> dict[str, np.ndarray]: ...


class SharedPlaceError(IncompatibleSourcesError):
    """Two files at one place of a hypercube (duplicates, overlaps, or files of two
    variable sets that the combine then merges)."""


def natural_key(path: str) -> list[Any]:
    """A path's natural sort key: digit runs compare as numbers (1, 2, 10)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", path)]


def _leaf(path: str) -> str:
    return path.rpartition("/")[2]


def coordinate_variables(manifest: Manifest) -> set[str]:
    """Array paths that xarray decodes as coordinates: dimension coordinates, and the
    variables a ``coordinates`` attribute names (in the same group)."""
    out = set()
    for path, array in manifest.arrays.items():
        group = path.rpartition("/")[0]
        if array.meta.dimensions == (_leaf(path),):
            out.add(path)
        named = array.meta.attrs.get("coordinates")
        if isinstance(named, str):
            for name in named.split():
                out.add(f"{group}/{name}" if group else name)
    return out & set(manifest.arrays)


def data_variables(manifest: Manifest) -> frozenset[str]:
    """The data variables of a file (its arrays that are no coordinates)."""
    return frozenset(set(manifest.arrays) - coordinate_variables(manifest) - set(manifest.skipped))


def group_by_variables(files: Sequence[_Scanned]) -> list[list[_Scanned]]:
    """Files grouped by their set of data variables, groups in the order of their sorted
    variable names (the first group's attributes win, as in xarray)."""
    groups: dict[frozenset[str], list[_Scanned]] = {}
    for f in files:
        groups.setdefault(data_variables(f.manifest), []).append(f)
    # as combine_by_coords orders them: by their variables' sorted names
    return [groups[key] for key in sorted(groups, key=lambda names: sorted(names))]


def _values(f: _Scanned, dim: str) -> np.ndarray | None:
    if dim in f.coords and f.manifest.arrays.get(dim) is not None:
        return decode_many([f.coords[dim]], [f.manifest.arrays[dim].meta.attrs])[0]
    return None


def _all_values(files: Sequence[_Scanned], dim: str) -> list[np.ndarray | None]:
    """Every file's decoded values of ``dim``'s coordinate (None where it has none), in
    one decode per distinct encoding."""
    having = [i for i, f in enumerate(files) if dim in f.coords and dim in f.manifest.arrays]
    check_calendars(
        dim,
        [files[i].path for i in having],
        [files[i].manifest.arrays[dim].meta.attrs for i in having],
    )
    decoded = decode_many(
        [files[i].coords[dim] for i in having],
        [files[i].manifest.arrays[dim].meta.attrs for i in having],
    )
    out: list[np.ndarray | None] = [None] * len(files)
    for i, values in zip(having, decoded):
        out[i] = values
    return out


def _encoding(f: _Scanned, dim: str) -> tuple[Any, ...]:
    attrs = f.manifest.arrays[dim].meta.attrs
    return (attrs.get("units"), attrs.get("calendar"), f.coords[dim].dtype.str)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    try:
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    except TypeError:
        return bool(np.array_equal(a, b))


def infer_concat_dims(files: Sequence[_Scanned]) -> list[str]:
    """The dimensions along which files differ: those of the root group's dimension
    coordinates whose values are not the same in every file (as ``combine_by_coords``)."""
    first = files[0]
    dims = []
    for path in first.manifest.arrays:
        if "/" in path or first.manifest.arrays[path].meta.dimensions != (path,):
            continue
        if not all(path in f.coords and path in f.manifest.arrays for f in files):
            continue
        encoding = _encoding(first, path)
        if all(_encoding(f, path) == encoding for f in files):
            # one encoding: raw values equal exactly when the values are
            raw = first.coords[path]
            if not all(_same(raw, f.coords[path]) for f in files[1:]):
                dims.append(path)
            continue
        values = _all_values(files, path)
        if not all(_same(values[0], v) for v in values[1:]):  # type: ignore[arg-type]
            dims.append(path)
    return dims


def value_from_path(path: str, dim: str, where: PathValue) -> Any:
    """A file's coordinate value along ``dim``, found in its path: an int, a float, an
    ISO date (as ``datetime64``) or else the text the regex's group matched."""
    if callable(where):
        return _called(where, path, dim)
    match = re.search(where, path)
    if match is None:
        raise IncompatibleSourcesError(
            f"coords_from_path[{dim!r}] = {where!r} matches nothing in {path}"
        )
    text = match.group(1)
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    try:
        return np.datetime64(text)
    except ValueError:
        return text


def _called(function: Callable[[str], Any], path: str, dim: str) -> Any:
    """``function(path)``: one value (dates as ``datetime64``, as a regex gives them), or
    an error naming the file and the dimension."""
    try:
        value = function(path)
    except Exception as e:
        raise IncompatibleSourcesError(
            f"coords_from_path[{dim!r}] raised {type(e).__name__} for {path}: {e}"
        ) from e
    if isinstance(value, datetime.date):  # datetime, date, pandas Timestamp
        value = np.datetime64(value)
    if np.ndim(value) != 0 or np.asarray(value).dtype.kind == "O":
        raise IncompatibleSourcesError(
            f"coords_from_path[{dim!r}] returned {value!r} for {path}: it must return one "
            "number, string or date"
        )
    return value


def place(
    files: Sequence[_Scanned],
    dims: Sequence[str],
    nested: bool,
    from_path: dict[str, list[Any]] | None = None,
) -> list[tuple[int, ...]]:
    """Each file's position along ``dims``, checked to fill a hypercube.

    A file's position along a dimension is the rank of its first coordinate value among
    the files' (from the file, else from ``from_path``); a dimension without values in
    any file (or in some, with ``nested``) is ordered by natural file-name order within
    the files that share every other position.

    Raises
    ------
    IncompatibleSourcesError
        If positions collide, leave a hole, or a dimension cannot be ordered.
    """
    from_path = from_path or {}
    n = len(files)
    keys: list[list[Any]] = []
    unordered = []
    descending = set()
    for dim in dims:
        if dim in from_path:
            keys.append(list(from_path[dim]))
            continue
        values = _all_values(files, dim)
        if all(v is not None and v.size for v in values):
            if direction(files, dim, values) < 0:  # type: ignore[arg-type]
                descending.add(dim)
            keys.append([v[0] for v in values])  # type: ignore[index]
        elif nested or all(v is None for v in values):  # no file has it: by name
            keys.append([None] * n)
            unordered.append(dim)
        else:
            lacking = next(f for f, v in zip(files, values) if v is None or not v.size)
            raise IncompatibleSourcesError(
                f"no coordinate {dim!r} in {lacking.path} to place it along {dim!r}: give "
                f"its value with coords_from_path={{{dim!r}: r'...'}} (a regex on the file "
                "name), or combine='nested' to order such files by name"
            )
    if len(unordered) > 1:
        raise IncompatibleSourcesError(
            f"dimensions {unordered} have no coordinate values to order files by: give "
            "all but one with coords_from_path= (a regex on the file name)"
        )
    ranks: list[list[int]] = []
    for dim, key in zip(dims, keys):
        if dim in unordered:
            ranks.append([0] * n)
            continue
        ordered = sorted(set(key), key=_sortable, reverse=dim in descending)
        order = {k: rank for rank, k in enumerate(ordered)}
        ranks.append([order[k] for k in key])
    if unordered:
        axis = list(dims).index(unordered[0])
        rows: dict[tuple[int, ...], list[int]] = {}
        for i in range(n):
            rows.setdefault(tuple(r[i] for r in ranks), []).append(i)
        for members in rows.values():
            for rank, i in enumerate(sorted(members, key=lambda i: natural_key(files[i].path))):
                ranks[axis][i] = rank
    positions = [tuple(r[i] for r in ranks) for i in range(n)]
    _check_hypercube(files, dims, positions, keys)
    return positions


def sortable(value: Any) -> Any:
    """A sort key putting numbers and dates in order, and text in natural order."""
    return _sortable(value)


def _sortable(value: Any) -> Any:
    if isinstance(value, str):
        return (1, natural_key(value))
    if isinstance(value, np.generic) and value.dtype.kind in "iufmM":
        value = value.item()  # Python numbers compare faster than numpy scalars
    return (0, value)


def direction(files: Sequence[_Scanned], dim: str, values: Sequence[np.ndarray]) -> int:
    """+1 if every file's ``dim`` values increase, -1 if they all decrease (files of one
    value follow the others).

    Raises
    ------
    IncompatibleSourcesError
        If a file's values are not monotonic the way the others' are, naming it.
    """
    kinds = []
    for v in values:
        if v.size < 2:
            kinds.append(0)
            continue
        increasing = bool(np.all(v[1:] > v[:-1]))  # numbers, dates, cftime, text
        decreasing = bool(np.all(v[1:] < v[:-1]))
        kinds.append(1 if increasing else -1 if decreasing else 2)
    known = [k for k in kinds if k]
    if not known:
        return 1
    majority = max((1, -1), key=known.count)
    for f, k in zip(files, kinds):
        if k and k != majority:
            way = "increase" if majority > 0 else "decrease"
            raise IncompatibleSourcesError(
                f"coordinate {dim!r} of {f.path} does not {way} as in the other files: a "
                f"file's values along a concat dimension must be strictly monotonic, all "
                "the same way"
            )
    return majority


def _check_hypercube(
    files: Sequence[_Scanned],
    dims: Sequence[str],
    positions: list[tuple[int, ...]],
    keys: list[list[Any]],
) -> None:
    seen: dict[tuple[int, ...], _Scanned] = {}
    for f, position in zip(files, positions):
        if position in seen:
            raise SharedPlaceError(
                f"{seen[position].path} and {f.path} sit at the same place along {list(dims)} "
                "(the same first coordinate values): they overlap or duplicate each other"
            )
        seen[position] = f
    sizes = [max(p[i] for p in positions) + 1 for i in range(len(dims))]
    expected = int(np.prod(sizes))
    if expected == len(files):
        return
    for hole in np.ndindex(*sizes):
        if hole not in seen:
            where = ", ".join(
                f"{dim}={_label(keys[i], positions, i, hole[i])}" for i, dim in enumerate(dims)
            )
            raise IncompatibleSourcesError(
                f"the files do not fill a hypercube along {list(dims)}: no file at {where} "
                f"({len(files)} files for {' x '.join(map(str, sizes))} places)"
            )


def _label(key: list[Any], positions: list[tuple[int, ...]], axis: int, rank: int) -> str:
    for k, p in zip(key, positions):
        if p[axis] == rank and k is not None:
            return repr(k.item() if hasattr(k, "item") else k)
    return f"#{rank}"

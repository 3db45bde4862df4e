"""Quick-look images: one 2-D slice of a variable as a colour map, as PNG bytes.

A variable's last two dimensions are the image's rows and columns; every dimension before
them is fixed at one index (the first by default), chosen in the query by index
(``?time=3``, negative from the end) or by coordinate value (``?time=2001-01-05``,
``?level=value:500``). Values are read through the store as xarray decodes them (fill
values masked, packed values unpacked), from a store pinned to the snapshot the request
is answered from. Rendering uses matplotlib's Agg backend on a :class:`~matplotlib.figure.Figure`
of its own (never pyplot's global state). Everything here blocks: the server runs it in
a thread.
"""

from __future__ import annotations

import importlib.util
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .landing import has_quicklook

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from ..filesystem import VirtualZarrFileSystem
    from ..manifest import ArrayMeta

__all__ = [
    "MAX_PIXELS",
    "DatasetCache",
    "QuickLookError",
    "available",
    "Slice",
    "check_variable",
    "parse_selection",
    "quicklook_png",
    "render_png",
]

#: An image axis longer than this is shown at every n-th point (the title says so).
MAX_PIXELS = 800
#: Width and height of the image, in pixels.
IMAGE_SIZE = (640, 480)
#: A selection by coordinate value may be spelled ``value:...`` (for an integer value,
#: which would otherwise be read as an index).
VALUE_PREFIX = "value:"

# Agg renders one figure at a time: matplotlib's text and font caches are shared
_RENDER_LOCK = threading.Lock()


def available() -> bool:
    """Whether quick-looks can be drawn: matplotlib is installed (``fsspec-virtual[serve]``)."""
    return importlib.util.find_spec("matplotlib") is not None


#: What a server without matplotlib answers for a quick-look.
UNAVAILABLE = "quick-look images need matplotlib: pip install 'fsspec-virtual[serve]'"


class QuickLookError(Exception):
    """A quick-look cannot be made; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_variable(
    arrays: Mapping[str, ArrayMeta], skipped: Mapping[str, str], path: str
) -> ArrayMeta:
    """The metadata of the variable at ``path``, if a quick-look of it can be made.

    Raises
    ------
    QuickLookError
        404: no such variable, a variable left out of the store, one of fewer than two
        dimensions, one whose values are not numbers, or one without values.
    """
    meta = arrays.get(path)
    if meta is None:
        if path in skipped:
            raise QuickLookError(
                404, f"variable {path!r} is left out of the store: {skipped[path]}"
            )
        raise QuickLookError(404, f"no variable {path!r} in the store")
    if not has_quicklook(meta):
        if len(meta.shape) < 2:
            why = f"it has {len(meta.shape)} dimension(s), an image needs 2 or more"
        elif 0 in meta.shape:
            why = f"it holds no values (shape {meta.shape})"
        else:
            why = f"its values ({meta.numpy_dtype}) are not numbers"
        raise QuickLookError(404, f"no quick-look image of {path!r}: {why}")
    return meta


@dataclass(frozen=True, slots=True)
class Slice:
    """Where a leading dimension is fixed: its index, and the coordinate value there."""

    dim: str
    index: int
    size: int
    value: Any = None

    def describe(self) -> str:
        """``"time = 2001-01-03 (index 2 of 10)"``, or ``"member index 2 of 10"``."""
        where = f"index {self.index} of {self.size}"
        if self.value is None:
            return f"{self.dim} {where}"
        return f"{self.dim} = {_value_text(self.value)} ({where})"


def _value_text(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s")).replace("T00:00:00", "")
    if hasattr(value, "isoformat"):  # datetime, pandas Timestamp, cftime
        return str(value.isoformat()).replace("T00:00:00", "")
    if isinstance(value, float | np.floating):
        return f"{value:g}"
    return str(value)


def _index_of(dim: str, raw: str, index: pd.Index | None, size: int) -> int:
    """The position ``raw`` names along ``dim``: an integer is an index, anything else a
    coordinate value (exact, or a date that names one step)."""
    text = raw.strip()
    if not text.startswith(VALUE_PREFIX):
        try:
            position = int(text)
        except ValueError:
            pass
        else:
            if not -size <= position < size:
                raise QuickLookError(
                    400, f"index {position} is out of range for dimension {dim!r} of size {size}"
                )
            return position % size
    text = text.removeprefix(VALUE_PREFIX)
    if index is None:
        raise QuickLookError(
            400,
            f"dimension {dim!r} has no coordinate: select it by an integer index "
            f"(0 to {size - 1}), not {raw!r}",
        )
    key: Any = text
    if index.dtype.kind in "iuf":
        try:
            key = float(text)
        except ValueError:
            raise QuickLookError(
                400, f"{raw!r} is not a number: dimension {dim!r} has numeric coordinates"
            ) from None
    try:
        found = index.get_loc(key)
    except (KeyError, ValueError, TypeError):
        first, last = _value_text(index[0]), _value_text(index[-1])
        raise QuickLookError(
            400,
            f"no coordinate value {text!r} along dimension {dim!r} "
            f"(its {len(index)} values run from {first} to {last})",
        ) from None
    if isinstance(found, slice):
        positions = list(range(*found.indices(len(index))))
    elif isinstance(found, np.ndarray):
        positions = list(np.flatnonzero(found))
    else:
        positions = [int(found)]
    if len(positions) != 1:
        raise QuickLookError(
            400,
            f"{text!r} matches {len(positions)} values along dimension {dim!r}: "
            "give one value exactly, or an integer index",
        )
    return int(positions[0])


def parse_selection(
    dims: tuple[str, ...],
    shape: tuple[int, ...],
    query: Mapping[str, str],
    indexes: Mapping[str, pd.Index],
) -> list[Slice]:
    """Where each leading dimension (all but the last two) is fixed, from a query.

    Parameters
    ----------
    dims, shape
        The variable's dimensions and shape.
    query
        Dimension -> index or coordinate value, as the URL gives them (each at most once).
    indexes
        The coordinate of each dimension that has one.

    Raises
    ------
    QuickLookError
        400, naming the problem: an unknown dimension, one of the image's two axes, an
        index out of range, a value that is not a coordinate value.
    """
    leading = dims[:-2]
    for name in query:
        if name in dims[-2:]:
            raise QuickLookError(
                400, f"dimension {name!r} is an axis of the image: it cannot be selected"
            )
        if name not in leading:
            known = ", ".join(leading) or "none"
            raise QuickLookError(
                400, f"{name!r} is not a dimension of the variable (selectable: {known})"
            )
    slices = []
    for dim, size in zip(leading, shape):
        if size == 0:
            raise QuickLookError(400, f"dimension {dim!r} is empty: there is no slice to show")
        index = indexes.get(dim)
        raw = query.get(dim)
        position = 0 if raw is None else _index_of(dim, raw, index, size)
        value = index[position] if index is not None else None
        slices.append(Slice(dim, position, size, value))
    return slices


def _axis(dim: str, coords: Mapping[Any, Any], step: int) -> tuple[np.ndarray | None, str]:
    """An image axis: its coordinate values where they are numbers and monotonic, and
    its label."""
    coord = coords.get(dim)
    label = dim
    if coord is None or coord.ndim != 1:
        return None, label
    units = coord.attrs.get("units")
    if units:
        label = f"{dim} [{units}]"
    values = np.asarray(coord.values)[::step]
    if values.dtype.kind not in "iuf" or values.size < 2:
        return None, label
    as_float = values.astype("f8")
    with np.errstate(over="ignore", invalid="ignore"):
        diffs = np.diff(as_float)
        if not (np.all(diffs > 0) or np.all(diffs < 0)):
            return None, label
        # the cells' edges (midpoints, half a step past the ends) and the axis' span must be
        # finite numbers for the image to be drawn (near the float64 limit they are not)
        edges = np.concatenate(
            [
                as_float[:1] - diffs[:1] / 2,
                as_float[:-1] + diffs / 2,
                as_float[-1:] + diffs[-1:] / 2,
            ]
        )
        if not (np.isfinite(diffs).all() and np.isfinite(edges).all()):
            return None, label
        if not np.isfinite((edges.max() - edges.min()) * 4):
            return None, label
    return values, label


def render_png(
    values: np.ndarray,
    *,
    title: str,
    units: str,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    xlabel: str = "",
    ylabel: str = "",
) -> bytes:
    """A colour map of a 2-D array with a colour bar, as PNG bytes.

    Missing values (NaN) are left blank; ``x``/``y`` are the columns' and rows'
    coordinates (index positions when None).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    data = np.ma.masked_invalid(np.asarray(values, dtype="f8"))
    rows, cols = data.shape
    xs = np.arange(cols) if x is None else x
    ys = np.arange(rows) if y is None else y
    width, height = IMAGE_SIZE
    with _RENDER_LOCK:
        figure = Figure(figsize=(width / 100, height / 100), dpi=100, layout="constrained")
        axes = figure.add_subplot()
        mesh = axes.pcolormesh(xs, ys, data, shading="nearest", cmap="viridis")
        bar = figure.colorbar(mesh, ax=axes)
        # names and units come from the files: "$...$" in them is text, not mathtext
        bar.set_label(units, parse_math=False)
        axes.set_title(title, fontsize=9, parse_math=False)
        axes.set_xlabel(xlabel, parse_math=False)
        axes.set_ylabel(ylabel, parse_math=False)
        for axis, coordinate in ((axes.xaxis, x), (axes.yaxis, y)):
            if coordinate is None:  # index positions: whole numbers only
                axis.set_major_locator(MaxNLocator(integer=True))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


class DatasetCache:
    """The datasets quick-looks read, per snapshot and group (at most ``size``)."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._datasets: OrderedDict[tuple[str, str], xr.Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fs: VirtualZarrFileSystem, snapshot: str, group: str) -> xr.Dataset:
        """The group's dataset, read through ``fs`` (a blocking store pinned to the
        snapshot whose identity is ``snapshot``)."""
        key = (snapshot, group)
        with self._lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key]
        dataset = open_group(fs, group)
        with self._lock:
            self._datasets[key] = dataset
            while len(self._datasets) > self._size:
                self._datasets.popitem(last=False)[1].close()
        return dataset


def open_group(fs: VirtualZarrFileSystem, group: str) -> xr.Dataset:
    """One group of a store as xarray decodes it (lazily)."""
    import xarray as xr
    from zarr.storage import FsspecStore

    store = FsspecStore.from_mapper(fs.get_mapper(""), read_only=True)
    # the store always has consolidated metadata (.zmetadata, or inline in v3's root)
    return xr.open_dataset(
        store,  # type: ignore[arg-type]  # xarray's zarr backend takes zarr stores
        engine="zarr",
        group=group or None,
        consolidated=True,
        chunks=None,
    )


def quicklook_png(
    datasets: DatasetCache,
    fs: VirtualZarrFileSystem,
    snapshot: str,
    path: str,
    meta: ArrayMeta,
    query: Mapping[str, str],
) -> bytes:
    """The quick-look image of the variable at ``path`` (checked by :func:`check_variable`)
    in ``snapshot`` (the one ``fs`` is pinned to), with the leading dimensions fixed as
    ``query`` says.

    Raises
    ------
    QuickLookError
        400 for a bad selection.
    StaleSourceError, SourceReadError
        A source file changed or could not be read.
    """
    group, _, name = path.rpartition("/")
    dataset = datasets.get(fs, snapshot, group)
    array = dataset[name]
    indexes = {str(d): dataset.indexes[d] for d in array.dims[:-2] if d in dataset.indexes}
    slices = parse_selection(tuple(map(str, array.dims)), array.shape, query, indexes)
    row_dim, col_dim = (str(d) for d in array.dims[-2:])
    steps = {d: max(1, math.ceil(array.sizes[d] / MAX_PIXELS)) for d in (row_dim, col_dim)}
    selected = array.isel(
        {s.dim: s.index for s in slices} | {d: slice(None, None, n) for d, n in steps.items()}
    )
    values = np.asarray(selected.values)
    if values.dtype.kind not in "biuf":
        raise QuickLookError(404, f"no quick-look image of {path!r}: its values are {values.dtype}")
    coords = dataset.coords
    x, xlabel = _axis(col_dim, coords, steps[col_dim])
    y, ylabel = _axis(row_dim, coords, steps[row_dim])
    long_name = array.attrs.get("long_name")
    lines = [f"{path}: {long_name}" if long_name else path]
    where = [s.describe() for s in slices]
    where += [f"1 in {n} points along {d}" for d, n in steps.items() if n > 1]
    if where:
        lines.append(", ".join(where))
    if not np.isfinite(values.astype("f8")).any():
        lines.append("(all values missing)")
    units = str(array.attrs.get("units", ""))
    if units:
        lines[0] += f" [{units}]"
    return render_png(
        values, title="\n".join(lines), units=units, x=x, y=y, xlabel=xlabel, ylabel=ylabel
    )

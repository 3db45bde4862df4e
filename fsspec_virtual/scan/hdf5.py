"""Scan an HDF5 / NetCDF4 file with kerchunk, then correct what kerchunk gets wrong.

kerchunk's ``SingleHdf5ToZarr`` finds the byte range of every chunk. Its output is then
checked against the file itself, dataset by dataset:

- a dataset kerchunk dropped (unsupported filter, odd type) is recorded as skipped, with
  kerchunk's reason, never served as fill values;
- compact datasets (which kerchunk reads back as fill values) are inlined from h5py;
- variable-length strings are inlined from h5py (kerchunk turns scalars into ``''``);
- the Zarr ``fill_value`` is the source's ``_FillValue`` only (xarray masks whatever
  ``fill_value`` says); chunks never written get the HDF5 fill value by an inline chunk
  where zarr's own fill would differ;
- object references are served as the referenced objects' paths, region references as
  the path plus the selection (``/data[0:3, 2:5]``), opaque types as their raw bytes, HDF5
  array types with their axes after the dataset's (read through h5py);
- types we cannot serve correctly yet (compound types with nested or array fields, vlen
  sequences) and names holding a backslash are skipped with a reason;
- external links to datasets of other HDF5 files on the same filesystem are followed
  (:class:`LinkResolver`): the target file is scanned, and the dataset served from its
  byte ranges, at the target's version (``Manifest.linked``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import posixpath
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, NamedTuple
from urllib.parse import quote, urljoin

import h5py
import numcodecs
import numpy as np
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from ..access import FileVersion, adapter_for
from ..coords import Labels, labels_difference
from ..manifest import (
    ArrayMeta,
    ChunkGrid,
    ComputePlan,
    Manifest,
    SourcePart,
    VirtualArray,
    dtype_spelling,
)
from .attributes import attribute_dtypes, fill_value_problem, json_attributes
from .fill import UnservableError, apply_fill_semantics
from .translate import manifest_from_references

__all__ = ["scan_hdf5", "LinkResolver"]

_NETCDF_DIMENSION_ONLY = "This is a netCDF dimension but not a netCDF variable"


#: Serialises in-process translations: h5py holds a global lock anyway, and the garbage
#: collector must stay off for the whole of each one (see :func:`_kerchunk_section`).
_TRANSLATION_LOCK = threading.Lock()


@contextmanager
def _kerchunk_section() -> Iterator[None]:
    """One translation at a time, with the garbage collector off.

    kerchunk's translator can deadlock under zarr 3 when gc runs inside it (kerchunk#588);
    its constructor already calls zarr. Holding a lock keeps overlapping scans in threads
    from re-enabling gc under each other.
    """
    with _TRANSLATION_LOCK:
        enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if enabled:
                gc.enable()


#: Attributes of netCDF's and HDF5's own bookkeeping, never shown to users (as h5netcdf).
_HIDDEN_ATTRS = frozenset(
    {
        "REFERENCE_LIST",
        "CLASS",
        "DIMENSION_LIST",
        "NAME",
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_nc3_strict",
        "_NCProperties",
    }
)


class _Attributes(Mapping[str, Any]):
    """An h5py object's attributes, each read from the file at most once.

    A scan asks for a dataset's attributes many times over (kerchunk's translator, the
    netCDF conventions checks, the fill rules, the attributes served), and each h5py read
    opens the attribute and converts its type anew. Names are looked up as h5py lists
    them; a read that fails fails the same way each time it is asked again.
    """

    def __init__(self, manager: h5py.AttributeManager) -> None:
        self._manager = manager
        self._names = list(manager)
        self._known = frozenset(self._names)
        self._read: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self._read:
            value = self._read[name]
        elif name not in self._known:
            raise KeyError(f"no attribute {name!r}")
        else:
            try:
                value = self._manager[name]
            except Exception as e:  # kept, to fail again the same way
                value = _FailedRead(e)
            self._read[name] = value
        if isinstance(value, _FailedRead):
            raise value.error
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass(frozen=True, slots=True)
class _FailedRead:
    error: Exception


class _ScannedDataset(h5py.Dataset):
    """A dataset whose attributes are read once during its scan (see :class:`_Attributes`)."""

    @functools.cached_property
    def attrs(self) -> _Attributes:  # type: ignore[override]
        return _Attributes(h5py.AttributeManager(self))


def _scanned(obj: Any) -> Any:
    """``obj``, if it is a dataset, as a :class:`_ScannedDataset`."""
    if type(obj) is h5py.Dataset:
        return _ScannedDataset(obj.id, readonly=True)
    return obj


class _MetadataOnlyArray:
    """What kerchunk gets back from :class:`_MetadataOnlyRoot`: a path, and no data."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setitem__(self, key: Any, value: Any) -> None:
        # kerchunk hands data only for datasets it would inline (variable-length strings
        # here); the scan serves those from h5py itself
        pass


class _MetadataOnlyRoot:
    """Stands in for kerchunk's zarr root group: writes the ``.zgroup``/``.zarray``/
    ``.zattrs`` documents zarr would write straight into kerchunk's reference dict.

    Through zarr each array and group costs round-trips to zarr's event-loop thread: a
    quarter of a file's scan time. Fill values are encoded by kerchunk's own encoder.
    """

    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store

    def require_group(self, name: str, **kwargs: Any) -> _MetadataOnlyRoot:
        self.store[f"{name}/.zgroup"] = json.dumps({"zarr_format": 2}).encode()
        return self

    def require_array(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: Any,
        chunks: tuple[int, ...],
        fill_value: Any = None,
        attributes: dict[str, Any] | None = None,
        compressor: Any = None,
        filters: Any = None,
        **kwargs: Any,
    ) -> _MetadataOnlyArray:
        from kerchunk.utils import encode_fill_value

        numpy_type = (
            np.dtype("O") if isinstance(dtype, str) and dtype == "string" else np.dtype(dtype)
        )
        zarray = {
            "zarr_format": 2,
            "shape": list(shape),
            "chunks": list(chunks),
            "dtype": dtype_spelling(numpy_type) if numpy_type.names else numpy_type.str,
            "compressor": compressor.get_config() if compressor is not None else None,
            "filters": [f.get_config() for f in filters] if filters else None,
            "fill_value": encode_fill_value(fill_value, numpy_type),
            "order": "C",
            "dimension_separator": ".",
        }
        self.store[f"{name}/.zarray"] = json.dumps(zarray).encode()
        self.store[f"{name}/.zattrs"] = json.dumps(attributes or {}).encode()
        return _MetadataOnlyArray(name)


def _array_dims(dset: h5py.Dataset) -> list[str]:
    """kerchunk's ``_get_array_dims``, through h5py's low-level calls: the HDF5 path
    (without its leading ``/``) of the one dimension scale attached to each axis, the
    dataset's own for an unattached axis of a scale, else ``phony_dim_<axis>``.

    h5py's ``dims`` builds a proxy per axis and a ``Dataset`` per scale: per file, more
    than the rest of kerchunk's work on a dataset.

    Raises
    ------
    kerchunk.hdf.Hdf5FeatureNotSupported
        If an axis has more than one scale attached.
    """
    from kerchunk.hdf import Hdf5FeatureNotSupported

    dims = []
    dsid = dset.id
    for axis in range(len(dset.shape)):
        count = h5py.h5ds.get_num_scales(dsid, axis)
        if count == 1:
            scales: list[Any] = []
            h5py.h5ds.iterate(dsid, axis, scales.append, 0)
            dims.append(dset._d(h5py.h5i.get_name(scales[0]))[1:])
        elif h5py.h5ds.is_scale(dsid):
            dims.append(dset.name[1:])
        elif count > 1:
            raise Hdf5FeatureNotSupported(
                f"{dset.name}: {count} dimension scales attached to dimension #{axis}"
            )
        else:
            dims.append(f"phony_dim_{axis}")
    return dims


@functools.cache
def _recording_translator() -> type:
    """kerchunk's translator, also recording every dataset it visits and the raw
    attributes of every object, which it does not copy into zarr: kerchunk's copy costs
    two zarr round-trips per object and mangles values (NetCDF numbers, empty text)."""
    from kerchunk.hdf import SingleHdf5ToZarr

    class RecordingTranslator(SingleHdf5ToZarr):  # type: ignore[misc]
        visited: dict[str, h5py.Dataset]
        attributes: dict[str, dict[str, Any]]

        def __init__(self, file_obj: Any, url: str) -> None:
            # kerchunk's own constructor, for a file object and the options _translate
            # gives, without the zarr group it makes: _MetadataOnlyRoot stands in for it
            self._closers = contextlib.ExitStack()
            self.input_file = file_obj
            self._h5f = self._closers.enter_context(h5py.File(file_obj, mode="r"))
            self.spec = 0
            self.inline = 0
            self.vlen = "embed"
            # the root group's documents, as zarr writes them for kerchunk
            self.store_dict: dict[str, Any] = {".zgroup": b'{"zarr_format": 2}', ".zattrs": b"{}"}
            self.store = self.store_dict
            self._zroot = _MetadataOnlyRoot(self.store_dict)
            self._uri = url
            self.error = "warn"
            self.unsupported_inline_threshold = 0
            self.visited = {}
            self.attributes = {}

        def _translator(self, name: str, h5obj: Any) -> None:
            h5obj = _scanned(h5obj)
            if isinstance(h5obj, h5py.Dataset):
                self.visited[name] = h5obj
            super()._translator(name, h5obj)

        def _get_array_dims(self, dset: h5py.Dataset) -> list[str]:
            return _array_dims(dset)

        def _transfer_attrs(self, h5obj: Any, zobj: Any) -> None:
            names = [n for n in h5obj.attrs if n not in _HIDDEN_ATTRS]
            self.attributes[h5obj.name] = _raw_attributes(h5obj, names)

    return RecordingTranslator


def _translate(file_obj: Any, url: str) -> tuple[Any, dict[str, Any], list[str]]:
    """Run kerchunk over every dataset of the file, under every name that links to it.

    Must run inside :func:`_kerchunk_section`. Returns the translator (its ``_h5f`` is the
    open file; close the translator when done), the datasets by path (external links as
    ``h5py.ExternalLink``) and kerchunk's warning messages.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Given the file object (not a path or an h5py.File), kerchunk reads through the
        # source filesystem's file and does not open the URL a second time itself.
        # inline_threshold=0, unsupported_inline_threshold=0 (see RecordingTranslator):
        # kerchunk would otherwise inline small datasets with filters it cannot reference;
        # our h5py path serves (and reports) them all
        translator = _recording_translator()(file_obj, url)
        h5 = translator._h5f
        translator.translate()
        # visititems sees an object once; other names (hard and soft links) get their own
        # translation, which kerchunk's preserve_linked_dsets would do by translating twice
        links: dict[str, Any] = {}

        def record(name: str, link: Any) -> None:  # returning a value would stop the visit
            links[name] = link

        h5.visititems_links(record)
        found: dict[str, Any] = dict(translator.visited)
        for name, link in links.items():
            if name in found:
                continue
            if isinstance(link, h5py.ExternalLink):
                found[name] = link
                continue
            obj = _scanned(h5.get(name))
            if isinstance(obj, h5py.Dataset):
                translator._translator(name, obj)
                found[name] = obj
    return translator, found, [str(w.message) for w in caught]


def _raw_attributes(source: Any, names: list[str]) -> dict[str, Any]:
    """The named attributes of an h5py object that exist, each read once."""
    raw = {}
    for name in names:
        try:
            raw[name] = source.attrs[name]
        except (KeyError, OSError):
            continue
    return raw


def _object_attributes(recorded: dict[str, dict[str, Any]], obj: Any) -> dict[str, Any]:
    """An object's raw attributes, as recorded during translation or read now (a dataset
    reached through a second link is recorded under its first name)."""
    raw = recorded.get(obj.name)
    if raw is None:
        raw = _raw_attributes(obj, [n for n in obj.attrs if n not in _HIDDEN_ATTRS])
    return raw


def _with_source_attributes(
    manifest: Manifest,
    h5: h5py.File,
    recorded: dict[str, dict[str, Any]],
    datasets: dict[str, Any],
) -> Manifest:
    """The manifest with attributes from the source (kerchunk left them out); ``datasets``
    are the file's datasets as translated, by path."""
    groups = {}
    for path, attrs in manifest.groups.items():
        group = h5[path] if path else h5
        if isinstance(group, h5py.Group):
            attrs = {**attrs, **json_attributes(_object_attributes(recorded, group))}
        groups[path] = attrs
    arrays = {}
    for path, array in manifest.arrays.items():
        dset = datasets.get(path)
        if not isinstance(dset, h5py.Dataset):
            dset = h5.get(path)
        if isinstance(dset, h5py.Dataset):
            raw = _object_attributes(recorded, dset)
            shown = {k: v for k, v in raw.items() if k != "_FillValue"}
            attrs = {**array.meta.attrs, **json_attributes(shown)}
            types = attribute_dtypes(raw, raw)
            array = replace(array, meta=replace(array.meta, attrs=attrs, attr_dtypes=types))
        arrays[path] = array
    return replace(manifest, groups=groups, arrays=arrays)


def _with_phony_dimensions(arrays: dict[str, VirtualArray]) -> dict[str, VirtualArray]:
    """Name the axes of datasets without dimension scales as netCDF-C does.

    kerchunk calls axis ``i`` of every such dataset ``phony_dim_i``, whatever its length,
    so xarray sees one dimension with conflicting sizes. netCDF-C instead gives each
    group one phony dimension per distinct length (two when a dataset has two axes of
    that length), numbered in the order netCDF-C meets them.
    """
    by_group: dict[str, list[tuple[str, int]]] = {}  # the group's phony dims: (name, length)
    counter = 0
    out = {}
    # netCDF-C numbers them group by group, child groups before their parent
    last = chr(0x10FFFF)
    for path in sorted(arrays, key=lambda p: (*p.split("/")[:-1], last, p.rsplit("/", 1)[-1])):
        array = arrays[path]
        meta = array.meta
        phony = [name == f"phony_dim_{axis}" for axis, name in enumerate(meta.dimensions)]
        if not any(phony):
            out[path] = array
            continue
        known = by_group.setdefault(path.rpartition("/")[0], [])
        names = list(meta.dimensions)
        taken = {name for name, is_phony in zip(names, phony) if not is_phony}
        for axis, length in enumerate(meta.shape):
            if not phony[axis]:
                continue
            free = [name for name, n in known if n == length and name not in taken]
            if free:
                names[axis] = free[0]
            else:
                names[axis] = f"phony_dim_{counter}"
                known.append((names[axis], length))
                counter += 1
            taken.add(names[axis])
        out[path] = replace(array, meta=replace(meta, dimensions=tuple(names)))
    return out


def _raw_dimensions(store: dict[str, Any]) -> dict[str, list[str]]:
    """kerchunk's ``_ARRAY_DIMENSIONS`` per array: HDF5 paths of dimension scales."""
    out = {}
    for key, value in store.items():
        if key.endswith("/.zattrs"):
            raw = value.to_bytes() if hasattr(value, "to_bytes") else value
            dims = json.loads(raw).get("_ARRAY_DIMENSIONS")
            if dims:
                out[key[: -len("/.zattrs")]] = [str(d) for d in dims]
    return out


def _is_dimension_only(dset: h5py.Dataset) -> bool:
    name = dset.attrs.get("NAME", b"")
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return isinstance(name, str) and name.startswith(_NETCDF_DIMENSION_ONLY)


def _dimension_lengths(datasets: dict[str, Any], dims: dict[str, list[str]]) -> dict[str, int]:
    """The netCDF length of each dimension scale: the largest extent along it.

    In a NetCDF4 file a variable along an unlimited dimension may hold fewer records
    than the dimension (it was written less often); netCDF reads the rest as fill.
    """
    lengths: dict[str, int] = {}
    for path, names in dims.items():
        dset = datasets.get(path)
        if not isinstance(dset, h5py.Dataset) or len(names) != dset.ndim:
            continue
        for extent, scale in zip(dset.shape, names):
            if isinstance(datasets.get(scale), h5py.Dataset):
                lengths[scale] = max(lengths.get(scale, 0), extent)
    for scale in lengths:
        if datasets[scale].ndim == 1:
            lengths[scale] = max(lengths[scale], datasets[scale].shape[0])
    return lengths


def _unsupported_type(dtype: np.dtype) -> str | None:
    """Why a dataset's type cannot be served yet, or None."""
    if h5py.check_ref_dtype(dtype) is not None:
        return None
    if dtype.names is not None and _packed_compound(dtype) is None:
        return "compound HDF5 types with nested, variable-length or array fields are not supported"
    if dtype.kind == "O" and h5py.check_string_dtype(dtype) is None:
        return "variable-length sequences are not supported yet"
    if dtype.subdtype is not None and dtype.base.kind not in "biufcS":
        return f"HDF5 array types of {dtype.base} elements are not supported"
    return None


def _string_array(translator: Any, dset: h5py.Dataset) -> VirtualArray:
    """A variable-length string dataset, read through h5py and held inline.

    Its ``_FillValue`` (netCDF's, or xarray's ``""``) is the Zarr ``fill_value``, as
    xarray masks it in a direct read.
    """
    data = np.asarray(dset.asstr()[()], dtype=object)
    meta = replace(
        _h5py_meta(translator, dset, np.dtype("O")),
        chunks=dset.shape,
        filters=({"id": "vlen-utf8"},),
    )
    if data.size == 0:
        return VirtualArray(meta, ChunkGrid.empty(meta.grid_shape))
    encoded = numcodecs.VLenUTF8().encode(data.reshape(-1))
    return VirtualArray(meta, ChunkGrid.single_inline(encoded, dset.ndim))


def _block_text(block: np.ndarray) -> str:
    """One hyperslab block, HDF5's inclusive ``(start, end)`` corners, as numpy slices."""
    return ", ".join(f"{int(a)}:{int(b) + 1}" for a, b in zip(block[0], block[1]))


def _selection_texts(space: h5py.h5s.SpaceID) -> list[str]:
    """A dataspace's selection as the indexes that select it (see :func:`_region_text`)."""
    kind = space.get_select_type()
    if kind == h5py.h5s.SEL_NONE or space.get_select_npoints() == 0:
        return ["[]"]
    if space.get_simple_extent_ndims() == 0:
        return ["[()]"]
    if kind == h5py.h5s.SEL_ALL:
        return ["[...]"]
    if kind == h5py.h5s.SEL_POINTS:
        points = space.get_select_elem_pointlist()
        return ["{" + ", ".join(repr(tuple(int(i) for i in p)) for p in points) + "}"]
    if kind == h5py.h5s.SEL_HYPERSLABS:
        return [f"[{_block_text(b)}]" for b in space.get_select_hyper_blocklist()]
    raise ValueError(f"a region reference holds an unknown HDF5 selection type ({kind})")


def _region_text(h5: h5py.File, ref: h5py.RegionReference) -> str:
    """A region reference as text: the referenced dataset's path and its selection.

    - a hyperslab block: ``/data[0:10, 2:5]`` (numpy slices, end exclusive);
    - several blocks (a strided or combined hyperslab): each block spelled so, joined
      with `` | `` (``/data[0:1, 0:2] | /data[2:3, 0:2]``);
    - points: ``/data{(1, 2), (3, 4)}``, in the reference's order (as h5py reads them);
    - the whole dataset: ``/data[...]``; a rank-0 dataset: ``/data[()]``;
    - nothing selected: ``/data[]``; a null reference: ``""``.

    ``h5py.File(...)[path][selection]`` reads the values the reference selects: for
    several blocks, the union of the blocks (HDF5 reads it in row-major order).
    """
    if not ref:
        return ""
    target = h5[ref]
    if not target.name:
        raise ValueError("a region reference names a dataset no longer linked in the file")
    space = h5py.h5r.get_region(ref, h5.id)
    if space.shape != target.shape:  # h5py refuses a selection on another extent too
        raise ValueError(
            f"a region reference into {target.name} was made on shape {space.shape}, "
            f"the dataset's shape is now {target.shape}"
        )
    return " | ".join(target.name + text for text in _selection_texts(space))


def _object_text(h5: h5py.File, ref: h5py.Reference) -> str:
    """An object reference as text: the object's path (``f[ref].name``), ``""`` if null."""
    return (h5[ref].name or "") if ref else ""


def _reference_array(translator: Any, dset: h5py.Dataset) -> VirtualArray:
    """A reference dataset, held inline as text: an object reference as the path of the
    object it names, a region reference as the path and selection (:func:`_region_text`)."""
    h5 = dset.file
    refs = np.asarray(dset[()], dtype=object)
    region = h5py.check_ref_dtype(dset.dtype) is h5py.RegionReference
    spell = _region_text if region else _object_text
    texts = [spell(h5, ref) for ref in refs.reshape(-1)]
    meta = replace(
        _h5py_meta(translator, dset, np.dtype("O")),
        chunks=dset.shape,
        filters=({"id": "vlen-utf8"},),
    )
    if not texts:
        return VirtualArray(meta, ChunkGrid.empty(meta.grid_shape))
    encoded = numcodecs.VLenUTF8().encode(np.array(texts, dtype=object))
    return VirtualArray(meta, ChunkGrid.single_inline(encoded, dset.ndim))


def _element_dimensions(path: str, count: int, taken: set[str]) -> tuple[str, ...]:
    """Names for the trailing axes of an HDF5 array type: ``<name>_dim_<k>``, made unique
    against the file's names; never ``phony_dim_*``, whose numbering follows netCDF-C."""
    leaf = path.rsplit("/", 1)[-1]
    names = []
    for k in range(count):
        name = f"{leaf}_dim_{k}"
        while name in taken:
            name += "_"
        taken.add(name)
        names.append(name)
    return tuple(names)


def _compact_array(dset: h5py.Dataset, base: VirtualArray) -> VirtualArray:
    """A compact dataset (its data lives in the object header), held inline."""
    meta = replace(base.meta, chunks=dset.shape, compressor=None, filters=None)
    data = np.asarray(dset[()], dtype=meta.numpy_dtype)
    if data.size == 0:
        return VirtualArray(meta, ChunkGrid.empty(meta.grid_shape))
    return VirtualArray(meta, ChunkGrid.single_inline(data.tobytes(), dset.ndim))


#: Target chunks of datasets read through h5py hold about this many bytes when the source
#: has no chunks of its own.
_H5PY_CHUNK_BYTES = 4 * 2**20


def _packed_compound(dtype: np.dtype) -> np.dtype | None:
    """A compound type as a packed structured dtype of scalar numeric (complex included)
    or fixed-string fields (what Zarr v2 and xarray read), or None if it has other fields
    (zarr cannot read structured types with array fields)."""
    fields = []
    for name, spec in (dtype.fields or {}).items():
        field = spec[0]
        if field.names is not None or field.shape or field.kind not in "biufcS":
            return None
        # little-endian fields: xarray cannot cast structured arrays with big-endian ones
        fields.append((name, field.newbyteorder("<").str if field.kind != "S" else field.str))
    return np.dtype(fields)


def _served_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a dataset is served with: an enum's base type, booleans as ``bool``,
    a compound type packed, an array type's element type (its axes become the array's)."""
    if dtype.subdtype is not None:
        return dtype.base
    if dtype.names is not None:
        packed = _packed_compound(dtype)
        assert packed is not None  # refused by _unsupported_type
        return packed
    mapping = h5py.check_enum_dtype(dtype)
    if mapping is not None and set(mapping) == {"FALSE", "TRUE"}:
        return np.dtype(bool)
    return np.dtype(dtype.str)  # drops h5py's enum metadata


def _enum_attrs(dtype: np.dtype) -> dict[str, Any]:
    """CF flag attributes for an enumerated type (none for booleans)."""
    mapping = h5py.check_enum_dtype(dtype)
    if mapping is None or set(mapping) == {"FALSE", "TRUE"}:
        return {}
    items = sorted(mapping.items(), key=lambda kv: kv[1])
    return {
        "flag_values": [int(v) for _, v in items],
        "flag_meanings": " ".join(str(k) for k, _ in items),
    }


def _with_enum(dset: h5py.Dataset, array: VirtualArray) -> VirtualArray:
    """An enumerated dataset as its base integers (or bools) with the names in attributes."""
    if h5py.check_enum_dtype(dset.dtype) is None:
        return array
    meta = array.meta
    meta = replace(
        meta, dtype=_served_dtype(dset.dtype).str, attrs={**meta.attrs, **_enum_attrs(dset.dtype)}
    )
    return replace(array, meta=meta)


@functools.cache
def load_filter_plugins() -> bool:
    """Register hdf5plugin's filters with h5py, if it is installed."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        return False
    return True


def _unavailable_filters(dset: h5py.Dataset) -> str:
    """Why h5py cannot decode ``dset`` (a filter it lacks), or ``""``."""
    plist = dset.id.get_create_plist()
    lacking = []
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code) and not (
            load_filter_plugins() and h5py.h5z.filter_avail(code)
        ):
            label = name.decode(errors="replace").split(";")[0] if name else "unnamed"
            lacking.append(f"{label} (filter id {code})")
    if not lacking:
        return ""
    return (
        f"HDF5 filter {', '.join(lacking)} has no numcodecs codec and is not available to "
        "h5py (pip install hdf5plugin)"
    )


def _target_chunks(dset: h5py.Dataset) -> tuple[int, ...]:
    if dset.chunks is not None:
        return tuple(dset.chunks)
    if not dset.shape:
        return ()
    row = max(1, int(np.prod(dset.shape[1:])) * dset.dtype.itemsize)
    return (max(1, min(dset.shape[0], _H5PY_CHUNK_BYTES // row)), *dset.shape[1:])


def _h5py_meta(translator: Any, dset: h5py.Dataset, dtype: np.dtype) -> ArrayMeta:
    """The array description of a dataset served from h5py's reads, not byte ranges."""
    from .attributes import zarr_fill_value

    names = [n for n in dset.attrs if n not in _HIDDEN_ATTRS and n != "_FillValue"]
    attrs = {**json_attributes(dset.attrs, names), **_enum_attrs(dset.dtype)}
    fill = None
    if "_FillValue" in dset.attrs and dtype.names is None and dset.dtype.subdtype is None:
        fill = zarr_fill_value(dset.attrs["_FillValue"], dtype)
    dims = tuple(str(d).rsplit("/", 1)[-1] for d in translator._get_array_dims(dset))
    return ArrayMeta(
        shape=tuple(dset.shape),
        chunks=_target_chunks(dset),
        dtype=dtype_spelling(dtype),
        compressor=None,
        filters=None,
        fill_value=fill,
        dimensions=dims,
        attrs=attrs,
        attr_dtypes=attribute_dtypes(dset.attrs, [*names, "_FillValue"]),
    )


def _read_through_h5py(
    translator: Any, dset: h5py.Dataset, path: str, why: str, taken: set[str] | None = None
) -> VirtualArray:
    """A dataset no byte range can serve (its filter has no numcodecs codec, or its fill
    semantics do not fit): computed by reading through h5py on the source file object.

    An HDF5 array type's axes follow the dataset's, named apart from ``taken`` names.
    """
    meta = _h5py_meta(translator, dset, _served_dtype(dset.dtype))
    extra = dset.dtype.shape
    if extra:
        meta = replace(
            meta,
            shape=(*meta.shape, *extra),
            chunks=(*meta.chunks, *extra),
            dimensions=(*meta.dimensions, *_element_dimensions(path, len(extra), taken or set())),
        )
    reason = f"read through h5py: {why}" if why else "read through h5py"
    part = SourcePart(0, meta, None, 0, path.lstrip("/"))
    return VirtualArray(
        meta, ChunkGrid.computed(meta.grid_shape), ComputePlan((part,), None, reason)
    )


def _reason_for(path: str, messages: list[str]) -> str:
    for message in messages:
        if f"/{path} " in message or f"/{path}:" in message or f"{path} uses" in message:
            lines = [line for line in message.splitlines() if line.strip()]
            return lines[1] if len(lines) > 1 else message
    return "kerchunk produced no reference for it"


def _serve_dataset(
    translator: Any,
    path: str,
    dset: Any,
    base: VirtualArray | None,
    messages: list[str],
    dims: dict[str, list[str]],
    dim_lengths: dict[str, int],
    netcdf: bool,
    taken: set[str],
) -> VirtualArray | str | None:
    """How one dataset is served: its array, the reason it is left out, or None (a
    netCDF dimension without a variable). ``taken``: names new dimensions must avoid."""
    if isinstance(dset, h5py.ExternalLink):
        return "HDF5 external links are not followed without the source filesystem"
    try:
        dtype = dset.dtype
    except TypeError as e:  # an HDF5 type numpy has no equivalent of (H5T_TIME, ...)
        return f"its HDF5 type cannot be read by h5py: {e}"
    reason = _unsupported_type(dtype)
    if reason is not None:
        return reason
    if dset.shape is None:  # h5py.Empty: a null dataspace holds no value at all
        return "null dataspace (no value: h5py reads it as h5py.Empty)"
    external = _external_storage(dset)
    if external:
        return (
            f"its raw data is stored outside the HDF5 file (external storage in "
            f"{', '.join(external)}), which is not supported"
        )
    if dset.is_virtual:
        outside = sorted({s.file_name for s in dset.virtual_sources() if s.file_name != "."})
        if outside:
            return (
                "HDF5 virtual dataset mapping data of other files "
                f"({', '.join(outside)}) is not supported"
            )
        return _read_through_h5py(translator, dset, path, "virtual dataset")
    if dtype.names is not None:  # kerchunk's compound handling is not ours
        return _read_through_h5py(translator, dset, path, "compound type")
    ref = h5py.check_ref_dtype(dtype)
    if ref is not None:
        try:
            return _reference_array(translator, dset)
        except (OSError, KeyError, ValueError) as e:  # a reference to an unlinked object
            kind = "a region" if ref is h5py.RegionReference else "an object"
            return f"{kind} reference in it could not be dereferenced: {e}"
    if dtype.subdtype is not None:
        return _read_through_h5py(translator, dset, path, "HDF5 array type", taken)
    if dtype.kind == "V":  # opaque: the stored bytes, as h5py reads them
        return _read_through_h5py(translator, dset, path, "HDF5 opaque type")
    odd_fill = _odd_fill_value(dset, dtype)
    if odd_fill is not None:
        return odd_fill
    if base is None and _is_dimension_only(dset):
        return None
    if h5py.check_string_dtype(dtype) is not None and dtype.kind == "O":
        return _string_array(translator, dset)
    if base is None:
        missing = _unavailable_filters(dset)
        if missing:
            return missing
        return _read_through_h5py(translator, dset, path, _reason_for(path, messages))
    if _padded_string(dset):
        return _read_through_h5py(translator, dset, path, "space-padded or null-terminated text")
    pipeline = _pipeline_problem(translator, dset, base)
    if pipeline:
        return _read_through_h5py(translator, dset, path, pipeline)
    if dset.id.get_create_plist().get_layout() == h5py.h5d.COMPACT:
        base = _compact_array(dset, base)
    names = dims.get(path, [])
    shape = tuple(
        max(n, dim_lengths.get(name, 0)) if len(names) == dset.ndim else n
        for n, name in zip(base.meta.shape, names or [""] * dset.ndim)
    )
    try:
        return _with_enum(dset, apply_fill_semantics(dset, base, shape, netcdf))
    except UnservableError as e:
        return _read_through_h5py(translator, dset, path, str(e))


def _external_storage(dset: h5py.Dataset) -> list[str]:
    """The files holding a dataset's raw data when HDF5 stores it outside the file
    (``H5Pset_external``: the dataset has no address of its own, which kerchunk reads as
    never written)."""
    plist = dset.id.get_create_plist()
    names = [plist.get_external(i)[0] for i in range(plist.get_external_count())]
    return sorted({n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in names})


def _pipeline_problem(translator: Any, dset: h5py.Dataset, base: VirtualArray) -> str:
    """Why kerchunk's codecs for ``dset`` may not decode its chunks as HDF5 does, or "".

    kerchunk always lists shuffle first, whatever the pipeline's order; and for chunks
    written with filters skipped (a nonzero filter mask, as ``H5Dwrite_chunk`` allows) it
    drops codecs from its list by the mask's bits, which it matches against its own order
    and truncates: a chunk then decodes to other values of the same size, silently.
    """
    plist = dset.id.get_create_plist()
    codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if h5py.h5z.FILTER_SHUFFLE in codes[1:]:
        return "its filter pipeline applies shuffle after another filter"
    meta = base.meta
    declared = len(meta.filters or ()) + (meta.compressor is not None)
    if declared != len(translator._decode_filters(dset)):
        return "chunks written with some of its filters skipped (an HDF5 filter mask)"
    return ""


def _odd_fill_value(dset: Any, dtype: np.dtype) -> str | None:
    """Why a numeric dataset's ``_FillValue`` cannot be its Zarr ``fill_value``, if so."""
    if dtype.kind not in "biufc" or "_FillValue" not in dset.attrs:
        return None
    try:
        value = dset.attrs["_FillValue"]
    except (OSError, TypeError) as e:
        return f"its _FillValue attribute cannot be read by h5py: {e}"
    return fill_value_problem(value, dtype)


def _padded_string(dset: h5py.Dataset) -> bool:
    """Whether a fixed-length text dataset's stored bytes differ from what h5py reads:
    HDF5 converts space padding, and whatever follows a null terminator, to nulls."""
    if dset.dtype.kind != "S":
        return False
    pad = dset.id.get_type().get_strpad()
    if pad == h5py.h5t.STR_SPACEPAD:
        return True
    return pad == h5py.h5t.STR_NULLTERM and dset.dtype.itemsize > 1


#: Names no Zarr (v2) node may have: they are metadata keys of their parent.
_METADATA_NAMES = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata"})


def _invalid_name(path: str) -> str | None:
    """The first part of ``path`` that is no valid Zarr node name, or None.

    A store key made of ``.`` or ``..`` parts (``../../x/0``) escapes its store for any
    client that normalises paths, and zarr refuses it; a part named like a metadata key
    would replace its parent's document. Such objects are left out, not renamed: a
    renamed variable would be one no other reader of the file shows.
    """
    for part in path.split("/"):
        if not part or set(part) == {"."} or part in _METADATA_NAMES or "\\" in part:
            return part
    return None


def _without_invalid_names(
    groups: dict[str, dict[str, Any]], arrays: dict[str, VirtualArray]
) -> tuple[dict[str, dict[str, Any]], dict[str, VirtualArray], dict[str, str]]:
    """Groups and arrays without those whose path is no valid Zarr key, and the reason
    each such array is left out."""
    kept_groups = {p: a for p, a in groups.items() if not p or _invalid_name(p) is None}
    kept, skipped = {}, {}
    for path, array in arrays.items():
        part = _invalid_name(path)
        if part is None:
            kept[path] = array
        else:
            skipped[path] = f"its HDF5 path holds {part!r}, which is not a valid Zarr node name"
            if "\\" in part:  # zarr-python reads a backslash in a key as "/"
                skipped[path] += " (zarr reads a backslash as a path separator)"
    return kept_groups, kept, skipped


#: netCDF-C stores a variable named like a dimension whose coordinate it is not (a 2-D
#: ``c`` on dimensions ``(time, c)``) under this prefix, and takes it off when it reads.
NON_COORDINATE_PREFIX = "_nc4_non_coord_"


def _shown_name(path: str) -> str | None:
    """The name netCDF shows for a variable stored under :data:`NON_COORDINATE_PREFIX`,
    or None for any other path."""
    parent, _, name = path.rpartition("/")
    plain = name.removeprefix(NON_COORDINATE_PREFIX)
    if not plain or plain == name:
        return None
    return f"{parent}/{plain}" if parent else plain


def _occupied_names(arrays: dict[str, VirtualArray], datasets: dict[str, Any]) -> set[str]:
    """The names :func:`_with_netcdf_names` would take that an HDF5 dataset of the file
    holds, other than the netCDF dimension the variable is named after (served, left out
    or not: a variable of its own, which the renamed one must not replace)."""
    out: set[str] = set()
    for path in arrays:
        shown = _shown_name(path)
        dset = datasets.get(shown) if shown is not None else None
        if shown is None or dset is None:
            continue
        if isinstance(dset, h5py.ExternalLink) or not _is_dimension_only(dset):
            out.add(shown)
    return out


def _with_netcdf_names(
    arrays: dict[str, VirtualArray], occupied: set[str]
) -> dict[str, VirtualArray]:
    """``arrays`` with each variable netCDF-C stored under :data:`NON_COORDINATE_PREFIX`
    at the name netCDF shows, in the same order, unless that name is an array, a group or
    an ``occupied`` dataset's (see :func:`_occupied_names`)."""
    out: dict[str, VirtualArray] = {}
    for path, array in arrays.items():
        shown = _shown_name(path)
        if shown is not None and shown not in arrays and shown not in occupied:
            path = shown
        out[path] = array
    return out


def _stored_prefix(dset: h5py.Dataset, index: tuple[int, ...], n: int) -> bytes | None:
    """The first ``n`` stored bytes of chunk ``index`` as HDF5 itself reads them, or None
    where that cannot be told without decoding."""
    if dset.chunks is not None:
        start = tuple(i * c for i, c in zip(index, dset.chunks))
        return bytes(dset.id.read_direct_chunk(start)[1][:n])
    if dset.dtype.kind not in "biufcS" or dset.size == 0:
        return None
    if not dset.shape:
        return np.asarray(dset[()], dtype=dset.dtype).tobytes()[:n]
    row = dset[(0,) * (dset.ndim - 1)] if dset.ndim > 1 else dset
    count = max(1, min(dset.shape[-1], -(-n // dset.dtype.itemsize)))
    return np.asarray(row[:count], dtype=dset.dtype).tobytes()[:n]


def _read_at(file_obj: Any, offset: int, n: int) -> bytes:
    file_obj.seek(offset)
    return bytes(file_obj.read(n))


def _shifted(grid: ChunkGrid, by: int) -> ChunkGrid:
    in_file = grid.file_id >= 0
    offset = np.where(in_file, grid.offset + np.uint64(by), grid.offset).astype(np.uint64)
    return ChunkGrid(np.array(grid.file_id), offset, np.array(grid.length), grid.inline)


def _with_verified_offsets(
    arrays: dict[str, VirtualArray], h5: h5py.File, file_obj: Any, translator: Any
) -> dict[str, VirtualArray]:
    """In a file with a user block, byte ranges checked against HDF5's own reads.

    HDF5 addresses count from the end of the user block (the base address); some HDF5
    versions report chunk addresses without adding it. One chunk per dataset is compared
    with what HDF5 reads there: ranges found one user block early are moved, ranges
    that match neither way are replaced by reads through h5py.
    """
    userblock = int(h5.userblock_size)
    if not userblock:
        return arrays
    out = dict(arrays)
    for path, array in arrays.items():
        grid = array.grid
        written = np.argwhere(grid.file_id >= 0)
        dset = h5.get(path)
        if not len(written) or not isinstance(dset, h5py.Dataset):
            continue
        index = tuple(int(i) for i in written[0])
        n = min(64, int(grid.length[index]))
        expected = _stored_prefix(dset, index, n)
        offset = int(grid.offset[index])
        if expected is not None and _read_at(file_obj, offset, n) == expected:
            continue
        if expected is not None and _read_at(file_obj, offset + userblock, n) == expected:
            out[path] = replace(array, grid=_shifted(grid, userblock))
        else:
            why = "its byte offsets could not be checked in a file with a user block"
            out[path] = _read_through_h5py(translator, dset, path, why)
    return out


# -- external links -------------------------------------------------------------------------


class _LinkRefused(Exception):
    """Why an external link is not followed (the variable is left out with it)."""


def _target_url(fs: AbstractFileSystem, linking: str, filename: str) -> str:
    """The target file of an external link written in ``linking``, as HDF5 resolves it
    there: a relative name from the linking file's directory, an absolute one as it is
    (local files only: elsewhere it names no file of the source).

    Raises
    ------
    _LinkRefused
        If the name points at another filesystem or cannot be resolved on this one.
    """
    if not filename:
        raise _LinkRefused("the link names no file")
    if "://" in filename:
        raise _LinkRefused(
            f"its target {filename} is on another filesystem (only files of the linking "
            "file's own filesystem are followed)"
        )
    if "://" in linking:  # HTTP(S): relative to the linking URL, on the same server
        if filename.startswith("/"):
            raise _LinkRefused(
                f"its target {filename} is an absolute path, which names no file of the "
                "server the linking file is on"
            )
        # the name is a file name, not a URL: '%41.h5', 'a#b.h5', 'a?b.h5' name files
        return urljoin(linking, quote(filename))
    if filename.startswith("/"):
        if not isinstance(fs, LocalFileSystem):
            raise _LinkRefused(
                f"its target {filename} is an absolute path, which names no file of the "
                "source filesystem (only local files follow absolute links)"
            )
        return os.path.realpath(filename)
    if isinstance(fs, LocalFileSystem):
        # as the OS opens it: symbolic links followed before '..' ('lnk/../a.h5', where
        # lnk leads elsewhere, is not 'a.h5'); the real path is the target's identity
        return os.path.realpath(posixpath.join(posixpath.dirname(linking), filename))
    return posixpath.normpath(posixpath.join(posixpath.dirname(linking), filename))


def _object_path(name: str) -> str:
    """The path of an external link's object in its target file, as HDF5 looks it up:
    ``.`` is the group it is in and empty components are skipped, but ``..`` is not the
    parent group (HDF5 looks for an object of that name, and h5py finds none).

    Raises
    ------
    _LinkRefused
        If the path has a ``..`` component.
    """
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _LinkRefused(
            f"its object path {name} has a '..' component, which HDF5 does not read as "
            "the parent group (h5py cannot open it either)"
        )
    return "/".join(parts)


def _starts_like_hdf5(f: Any, size: int) -> bool:
    from ..source import HDF5_SIGNATURE, hdf5_signature_offsets

    return any(
        _read_at(f, at, len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
        for at in hdf5_signature_offsets(size)
    )


class LinkResolver:
    """Follows the HDF5 external links met during one file's scan, to files of the same
    filesystem: each target file is scanned once (its own links followed too), at a
    version looked up before its scan and again after it.

    Parameters
    ----------
    fs
        The source filesystem.
    open_options
        Options of ``fs.open`` for the target files (the scan's own, without a size).
    """

    def __init__(self, fs: AbstractFileSystem, open_options: dict[str, Any] | None = None):
        self.fs = fs
        self.open_options = {k: v for k, v in (open_options or {}).items() if k != "size"}
        self._scanning: list[str] = []  # the files whose scan is under way, outermost first
        self._scans: dict[str, tuple[Manifest, FileVersion] | str] = {}

    @contextmanager
    def scanning(self, url: str) -> Iterator[None]:
        """Mark ``url`` as being scanned (a link back into it is a cycle)."""
        self._scanning.append(url)
        try:
            yield
        finally:
            self._scanning.pop()

    def target(self, url: str, link: h5py.ExternalLink) -> VirtualArray:
        """The dataset that ``link`` leads to in its target file ``url`` (see
        :func:`_target_url`), as that file's scan serves it (file ids index the target
        manifest's URLs).

        Raises
        ------
        _LinkRefused
            If the link is not followed, with why.
        """
        path = _object_path(link.path)
        manifest, _ = self.scan(url)
        if path in manifest.arrays:
            return manifest.arrays[path]
        if path in manifest.skipped:
            raise _LinkRefused(f"{link.path} is left out of {url} too: {manifest.skipped[path]}")
        if path in manifest.groups:
            raise _LinkRefused(
                f"it links to the group {link.path} of {url} (only links to datasets are followed)"
            )
        raise _LinkRefused(f"{url} holds no dataset {link.path} that could be served")

    def scan(self, url: str) -> tuple[Manifest, FileVersion]:
        """The scan of the target file ``url`` and the version it describes.

        Raises
        ------
        _LinkRefused
            If it is missing, not HDF5, being scanned already (a cycle), changed during
            its scan, or fails to scan.
        """
        if url in self._scanning:
            raise _LinkRefused(
                f"its target {url} is a file whose scan this link is part of (a link cycle, "
                "or links both ways between two files: not followed)"
            )
        done = self._scans.get(url)
        if done is None:
            try:
                done = self._scan_now(url)
            except _LinkRefused as e:
                done = str(e)
            except Exception as e:  # the scan of one variable's target: never the file's
                done = f"its target {url} could not be scanned ({type(e).__name__}: {e})"
            self._scans[url] = done
        if isinstance(done, str):
            raise _LinkRefused(done)
        return done

    def _scan_now(self, url: str) -> tuple[Manifest, FileVersion]:
        from ..source import speaks_http

        adapter = adapter_for(self.fs)
        try:
            before = adapter.current_version(url)
        except FileNotFoundError:
            raise _LinkRefused(f"its target {url} does not exist") from None
        options = dict(self.open_options)
        if speaks_http(self.fs) and before.size:
            options["size"] = before.size
        with adapter.open_for_scan(url, before, **options) as f:
            if not _starts_like_hdf5(f, before.size):
                raise _LinkRefused(f"its target {url} is not an HDF5 file")
            with self.scanning(url):
                manifest, _ = scan_hdf5(f, url, self)
        try:
            after = adapter.current_version(url)
        except FileNotFoundError:
            raise _LinkRefused(f"its target {url} vanished while it was scanned") from None
        if after != before:
            raise _LinkRefused(f"its target {url} changed while it was scanned")
        return manifest, before


def _as_own_phony(array: VirtualArray) -> VirtualArray:
    """A linked array whose phony dimensions are numbered again in the linking file."""
    meta = array.meta
    names = tuple(
        f"phony_dim_{axis}" if name.startswith("phony_dim_") else name
        for axis, name in enumerate(meta.dimensions)
    )
    return replace(array, meta=replace(meta, dimensions=names))


def _moved(array: VirtualArray, shift: int) -> VirtualArray:
    """An array of a target manifest with its file ids moved to where that manifest's
    URLs begin in the linking file's table."""
    plan = array.plan
    if plan is not None:
        plan = replace(plan, parts=tuple(part.shifted(shift, 0) for part in plan.parts))
    return replace(array, grid=array.grid.with_file_ids_shifted(shift), plan=plan)


def _named_dimensions(array: VirtualArray) -> Iterator[tuple[str, int]]:
    """The dimensions of ``array`` that have names of their own (not phony), and their
    lengths."""
    for axis, (name, n) in enumerate(zip(array.meta.dimensions, array.meta.shape)):
        if name != f"phony_dim_{axis}":
            yield name, n


def _in_scope(group: str, name: str) -> Iterator[tuple[str, str]]:
    """Where a dimension ``name`` used in ``group`` may be defined, nearest first: the
    group, then each of its parents (netCDF's scoping)."""
    while True:
        yield group, f"{group}/{name}" if group else name
        if not group:
            return
        group = group.rpartition("/")[0]


def _coordinate_of(
    arrays: dict[str, VirtualArray], group: str, name: str
) -> tuple[str, VirtualArray] | None:
    """The coordinate variable of the dimension ``name`` seen from ``group``."""
    for _, path in _in_scope(group, name):
        array = arrays.get(path)
        if array is not None and array.meta.dimensions == (name,):
            return path, array
    return None


class _LinkTable(NamedTuple):
    """A linking file's URL table, to read the values of its datasets and its targets'."""

    links: LinkResolver
    url: str  # the linking file
    urls: tuple[str, ...]
    linked: dict[str, FileVersion]  # the targets' versions: the reads must find them
    where: dict[str, int]  # target file -> where its URLs begin in ``urls``

    def labels(self, path: str, array: VirtualArray, source: str) -> Labels:
        """The values of ``array`` (file ids in this table), as ``source``'s."""
        from ..materialize import read_array

        manifest = Manifest(self.urls, {path.rpartition("/")[0]: {}}, {path: array})
        values = read_array(self.links.fs, manifest, path, self.linked)
        return Labels(source, values, dict(array.meta.attrs))

    def target_coordinate(
        self, target: str, group: str, name: str
    ) -> tuple[str, VirtualArray] | None:
        """The coordinate variable of the dimension ``name`` seen from ``group`` in the
        (scanned) target file, with file ids in this table."""
        manifest, _ = self.links.scan(target)
        found = _coordinate_of(manifest.arrays, group, name)
        if found is None:
            return None
        return found[0], _moved(found[1], self.where[target])


def _labels_difference(
    name: str,
    path: str,
    linked: _LinkedArray,
    served: dict[str, tuple[VirtualArray, str]],
    table: _LinkTable,
) -> str | None:
    """How the linking file's coordinate of the dimension ``name`` differs from the one
    the target of the linked dataset ``path`` has; None if either has none."""
    mine = _coordinate_of({p: a for p, (a, _) in served.items()}, path.rpartition("/")[0], name)
    theirs = table.target_coordinate(linked.target, linked.group, name)
    if mine is None or theirs is None:
        return None
    try:
        first = table.labels(mine[0], mine[1], served[mine[0]][1])
        other = table.labels(theirs[0], theirs[1], linked.target)
    except Exception as e:  # unread labels are never taken for equal ones
        return f"its coordinate {name!r} could not be read to compare ({type(e).__name__}: {e})"
    return labels_difference(name, first, other)


def _dimension_clash(
    path: str,
    linked: _LinkedArray,
    dims: dict[tuple[str, str], tuple[int, str]],
    served: dict[str, tuple[VirtualArray, str]],
    table: _LinkTable,
) -> str | None:
    """Why a dimension name of the linked dataset ``path`` cannot mean in the linking
    file what it means in the target (``dims``: (group, name) -> length and file, for
    the dimensions in use); None if each can."""
    group = path.rpartition("/")[0]
    for name, n in _named_dimensions(linked.array):
        known = next((dims[g, name] for g, _ in _in_scope(group, name) if (g, name) in dims), None)
        if known is None or known[1] == linked.target:
            continue
        length, origin = known
        if length != n:
            return (
                f"its dimension {name!r} is {n} long in {linked.target}, but {length} long "
                f"in {origin}: one name cannot stand for both"
            )
        difference = _labels_difference(name, path, linked, served, table)
        if difference is not None:
            return (
                f"its dimension {name!r} would carry the labels of another file "
                f"({linked.target} vs {origin}): {difference}"
            )
    return None


def _without_dimension_clashes(
    found: dict[str, _LinkedArray],
    own: dict[str, VirtualArray],
    table: _LinkTable,
    reasons: dict[str, str],
) -> dict[str, VirtualArray]:
    """The linked datasets whose dimension names can be kept; the others' reasons are
    added to ``reasons``.

    A linked dataset keeps its target's dimension names. Where the linking file (or a
    link to another file) uses a name already, it must be the same dimension: the same
    length, and equal coordinate values if both files have a coordinate variable for
    it. Else one name would label two axes, or one file's labels another file's rows.
    Linked coordinate variables are taken first.
    """
    dims: dict[tuple[str, str], tuple[int, str]] = {}
    served = {path: (array, table.url) for path, array in own.items()}
    for path, array in own.items():
        for name, n in _named_dimensions(array):
            dims.setdefault((path.rpartition("/")[0], name), (n, table.url))
    kept: set[str] = set()
    coordinates_first = sorted(
        found, key=lambda p: (found[p].array.meta.dimensions != (p.rpartition("/")[2],), p)
    )
    for path in coordinates_first:
        linked = found[path]
        clash = _dimension_clash(path, linked, dims, served, table)
        if clash is not None:
            reasons[path] = f"{linked.head}: {clash}"
            continue
        kept.add(path)
        served[path] = (linked.array, linked.target)
        for name, n in _named_dimensions(linked.array):
            dims.setdefault((path.rpartition("/")[0], name), (n, linked.target))
    return {path: found[path].array for path in found if path in kept}


class _Followed(NamedTuple):
    """What the external links of one file lead to (see :func:`_followed_links`)."""

    arrays: dict[str, VirtualArray]
    reasons: dict[str, str]
    urls: tuple[str, ...]
    linked: dict[str, FileVersion]
    targets: tuple[str, ...]


class _LinkedArray(NamedTuple):
    """A dataset an external link leads to, as the linking file will serve it."""

    array: VirtualArray  # file ids index the linking file's URL table
    target: str  # the target file
    group: str  # the dataset's group in the target file
    head: str  # the link, for messages


def _followed_links(
    external: dict[str, h5py.ExternalLink],
    url: str,
    links: LinkResolver,
    own: dict[str, VirtualArray],
) -> _Followed:
    """The datasets that ``external`` links of the file ``url`` lead to, the reasons of
    those not followed, the file's URL table (its own, then each target's), the
    versions of the target files read, and every file the links named (followed or
    not). ``own`` are the file's own datasets: a linked one whose dimension would clash
    with theirs is left out (see :func:`_dimension_clash`)."""
    found: dict[str, _LinkedArray] = {}
    reasons: dict[str, str] = {}
    urls = [url]
    linked: dict[str, FileVersion] = {}
    named: dict[str, None] = {}  # the target files named, in order
    where: dict[str, int] = {}  # target file -> where its URLs begin in ``urls``
    with links.scanning(url):
        for path, link in external.items():
            head = f"HDF5 external link to {link.filename}:{link.path}"
            try:
                target = _target_url(links.fs, url, link.filename)
                named[target] = None
                array = links.target(target, link)
            except _LinkRefused as e:
                reasons[path] = f"{head}: {e}"
                continue
            manifest, version = links.scan(target)
            named.update(dict.fromkeys(manifest.link_targets))
            if target not in where:
                where[target] = len(urls)
                urls.extend(manifest.urls)
                linked.update(manifest.linked)
                linked[target] = version
            group = _object_path(link.path).rpartition("/")[0]
            moved = _as_own_phony(_moved(array, where[target]))
            found[path] = _LinkedArray(moved, target, group, head)
    table = _LinkTable(links, url, tuple(urls), linked, where)
    arrays = _without_dimension_clashes(found, own, table, reasons)
    return _Followed(arrays, reasons, tuple(urls), linked, tuple(named))


def scan_hdf5(
    file_obj: Any, url: str, links: LinkResolver | None = None
) -> tuple[Manifest, list[str]]:
    """Scan one HDF5 file.

    Parameters
    ----------
    file_obj
        An open, seekable binary file object of the file.
    url
        The file's path on the source filesystem (recorded in the manifest).
    links
        Follows external links to other files of the source filesystem (without it they
        are left out).

    Returns
    -------
    manifest, warnings
        The file's manifest (datasets that cannot be served are in ``skipped``) and a
        message for each skipped dataset.
    """
    with _kerchunk_section():
        translator, datasets, messages = _translate(file_obj, url)
    with contextlib.closing(translator):
        h5 = translator._h5f
        manifest = manifest_from_references(translator.store_dict, url)
        manifest = _with_source_attributes(manifest, h5, translator.attributes, datasets)
        arrays = dict(manifest.arrays)
        skipped: dict[str, str] = {}
        dims = _raw_dimensions(translator.store_dict)
        dim_lengths = _dimension_lengths(datasets, dims)
        netcdf = "_NCProperties" in h5.attrs or bool(dim_lengths)
        taken = {p.rsplit("/", 1)[-1] for p in datasets}
        taken.update(d for meta in (a.meta for a in arrays.values()) for d in meta.dimensions)
        external: dict[str, h5py.ExternalLink] = {}
        for path, dset in datasets.items():
            if links is not None and isinstance(dset, h5py.ExternalLink):
                external[path] = dset
                continue
            served = _serve_dataset(
                translator, path, dset, arrays.get(path), messages, dims, dim_lengths, netcdf, taken
            )
            if isinstance(served, str):
                arrays.pop(path, None)
                skipped[path] = served
            elif served is not None:
                arrays[path] = served
        arrays = _with_verified_offsets(arrays, h5, file_obj, translator)
        occupied = _occupied_names(arrays, datasets) if netcdf else set()
    # linked datasets never through this file's h5py handle: HDF5 would resolve the
    # link by its own rules (its working directory first), not from this filesystem
    urls, linked, targets = manifest.urls, manifest.linked, manifest.link_targets
    if links is not None and external:
        followed = _followed_links(external, url, links, arrays)
        arrays.update(followed.arrays)
        skipped.update(followed.reasons)
        urls, linked, targets = followed.urls, followed.linked, followed.targets
    if netcdf:
        arrays = _with_netcdf_names(arrays, occupied | set(manifest.groups))
    groups, arrays, invalid = _without_invalid_names(manifest.groups, arrays)
    skipped.update(invalid)
    arrays = _with_phony_dimensions(arrays)
    warnings_out = [f"{url}: variable {path!r} left out: {why}" for path, why in skipped.items()]
    return (
        replace(
            manifest,
            urls=urls,
            groups=groups,
            arrays=arrays,
            skipped=skipped,
            linked=linked,
            link_targets=targets,
        ),
        warnings_out,
    )

"""Scans of HDF5 files whose structure repeats a file scanned before.

The files of a collection are usually written by one program: the same objects, types,
attributes and chunk layout, only the chunks' places and sizes differ. Once a file has been
scanned in full (:func:`~fsspec_virtual.scan.hdf5.scan_hdf5`), its structure is kept as a
:class:`Template` (:func:`learn`); a later file whose structure is *proved* equal reuses the
template's manifest with its own byte ranges (:func:`rescan`), instead of kerchunk's walk.

What is compared, for every object the file links to (and the root group):

- the links (names, order, link types, character sets, creation order) and each object's
  type and reference count, as HDF5 reports them;
- every message of each object header, byte for byte (read from the file, after HDF5
  opened the object and checked its checksums): datatype, dataspace, fill value, filter
  pipeline, layout, attributes, link and group messages. Only these fields may differ,
  all of them addresses of other structures: a hard link's target, a layout's data or
  chunk index, a continuation block, dense link or attribute storage; and modification
  times (which no scan records). Null (free space) and continuation messages are left out;
- attributes whose value lies outside the header (variable-length data in the global heap,
  attributes in dense storage) are read through h5py and compared by value; the dimension
  scale bookkeeping (``DIMENSION_LIST``, ``REFERENCE_LIST``) by the dimension names
  derived from it, as the scan derives them;
- each chunk's place in the grid and filter mask, as HDF5's chunk index reports them.

A message of a kind not listed, a shared message, a file with a user block, an object
linked twice, a soft or external link, or anything else not understood: no template, or
no match, and the file is scanned in full. A template is only kept when it rebuilds its
own file's scan exactly. :func:`rescan` returns what :func:`scan_hdf5` would.
"""

from __future__ import annotations

import itertools
import os
import pickle
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import h5py
import numpy as np

from ..manifest import MISSING, ChunkGrid, Manifest, VirtualArray

__all__ = ["Template", "Look", "learn", "rescan", "forget"]

#: Templates kept per process (the most recently used first to be tried).
_KEPT = 4

#: Object header messages this module understands (HDF5 file format spec, IV.A.2).
_NIL, _DATASPACE, _LINK_INFO, _DATATYPE, _FILL_OLD, _FILL = 0x0, 0x1, 0x2, 0x3, 0x4, 0x5
_LINK, _LAYOUT, _GROUP_INFO, _FILTERS, _ATTRIBUTE = 0x6, 0x8, 0xA, 0xB, 0xC
_CONTINUATION, _SYMBOL_TABLE, _MTIME, _ATTRIBUTE_INFO, _REFCOUNT = 0x10, 0x11, 0x12, 0x15, 0x16
_MTIME_OLD = 0xE
_COMPARED = frozenset(
    {_DATASPACE, _LINK_INFO, _DATATYPE, _FILL_OLD, _FILL, _LINK, _LAYOUT, _GROUP_INFO}
    | {_FILTERS, _ATTRIBUTE, _ATTRIBUTE_INFO, _REFCOUNT, _SYMBOL_TABLE}
)
_IGNORED = frozenset({_NIL, _CONTINUATION, _MTIME, _MTIME_OLD})
_MESSAGE_HEAD = struct.Struct("<BHB")  # version 2 headers: type, size, flags
_ATTRIBUTE_HEAD = struct.Struct("<BBHHH")  # version, flags, name, datatype, dataspace sizes
#: Message flag bit 1: the message is stored elsewhere (shared): its bytes are a pointer.
_SHARED = 0x2
#: Datatype classes whose values are plain bytes (no heap IDs, no object addresses).
_PLAIN_CLASSES = frozenset({0, 1, 2, 3, 4, 5, 8})
#: Attributes the scan uses only through HDF5's dimension scale calls.
_SCALE_BOOKKEEPING = frozenset({b"DIMENSION_LIST", b"REFERENCE_LIST"})


class _Differs(Exception):
    """The file is not (provably) structured like the template, or cannot be compared."""


@dataclass(frozen=True)
class _Chunks:
    """One dataset's chunks as HDF5's index reports them."""

    keys: tuple[tuple[tuple[int, ...], int], ...]  # (grid index, filter mask) per chunk
    places: tuple[tuple[int, int], ...]  # (byte offset, size) per chunk


@dataclass(frozen=True)
class _Structure:
    """What is compared (``signature``) and the per-file facts (``chunks``)."""

    signature: tuple[Any, ...]
    chunks: dict[str, _Chunks]
    scales: dict[str, tuple[tuple[bytes, ...], ...]]  # DIMENSION_LISTs read from the heap


@dataclass(frozen=True)
class Template:
    """A file's structure and its full scan's manifest (URL table of that file only)."""

    signature: tuple[Any, ...]
    manifest: Manifest


_templates: OrderedDict[tuple[Any, ...], Template] = OrderedDict()
_lock = threading.Lock()


def forget() -> None:
    """Drop every template of this process."""
    with _lock:
        _templates.clear()
        _parsed.clear()
        _parsed_bytes[0] = 0


# -- reading the file's own bytes ------------------------------------------------------------


def _read(f: Any, offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset`` of the file: ``f`` is its open file object, or its bytes."""
    if isinstance(f, bytes):
        data = f[offset : offset + n]
    else:
        f.seek(offset)
        data = bytes(f.read(n))
    if len(data) != n:
        raise _Differs("short read")
    return data


#: Files at most this large are read whole, and HDF5 opens them from memory (a file
#: image): no read through Python per piece of metadata.
_IMAGE_BYTES = 1 << 20
_images = itertools.count()


def _opened(f: Any, size: int | None) -> tuple[h5py.File, Any]:
    """The HDF5 file open as ``f`` opened by h5py, and what to read its bytes from: for
    a small file, its bytes (an in-memory image under a name of its own: HDF5 takes two
    open files of one name for the same file)."""
    if size is None or size > _IMAGE_BYTES:
        return h5py.File(f, mode="r"), f
    f.seek(0)
    data = bytes(f.read(size + 1))
    if len(data) != size:
        raise _Differs("the file's size is not the size listed")
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fapl_core(backing_store=False)
    fapl.set_file_image(data)
    name = f"fsspec-virtual-image-{os.getpid()}-{next(_images)}".encode()
    return h5py.File(h5py.h5f.open(name, h5py.h5f.ACC_RDONLY, fapl=fapl)), data


def _uint(data: bytes, at: int, n: int) -> int:
    return int.from_bytes(data[at : at + n], "little")


def _undefined(value: int, n: int) -> bool:
    return value == (1 << (8 * n)) - 1


class _Sizes:
    """The file's sizes of offsets and lengths (from its superblock)."""

    def __init__(self, offsets: int, lengths: int) -> None:
        self.o = offsets
        self.l = lengths


def _superblock(f: Any) -> tuple[bytes, _Sizes]:
    """The superblock's compared bytes (all but the end-of-file address and checksum)
    and the file's sizes. Only a superblock at byte 0 with base address 0 is taken (a
    user block moves everything)."""
    head = _read(f, 0, 16)
    if head[:8] != b"\x89HDF\r\n\x1a\n":
        raise _Differs("no HDF5 signature at byte 0")
    version = head[8]
    if version in (2, 3):
        o, n = head[9], head[10]
        data = _read(f, 0, 12 + 4 * o + 4)
        base = _uint(data, 12, o)
        if base != 0:
            raise _Differs("base address")
        # end-of-file address (12 + 2o) and checksum left out: HDF5 checks both at open
        return data[: 12 + 2 * o] + data[12 + 3 * o : 12 + 4 * o], _Sizes(o, n)
    if version in (0, 1):
        o, n = head[13], head[14]
        fixed = 24 if version == 0 else 28
        data = _read(f, 0, fixed + 4 * o + 2 * o + 8 + 16)
        if _uint(data, fixed, o) != 0:
            raise _Differs("base address")
        end = fixed + 2 * o  # base, free-space info; then end of file (left out)
        rest = fixed + 3 * o  # driver info, then the root group's symbol table entry
        entry = rest + o
        # the entry: link name offset, object header address (left out), cache type,
        # reserved, scratch pad (B-tree and heap addresses: left out)
        return (
            data[:end] + data[rest : entry + o] + data[entry + 2 * o : entry + 2 * o + 8],
            _Sizes(o, n),
        )
    raise _Differs(f"superblock version {version}")


def _messages_v2(track: bool, data: bytes, start: int, end: int) -> list:
    """The messages ``(type, flags, creation order, data)`` of one version 2 chunk."""
    out = []
    pos = start
    head = 6 if track else 4
    while pos + head <= end:
        kind, size, flags = _MESSAGE_HEAD.unpack_from(data, pos)
        order = data[pos + 4 : pos + head]
        pos += head
        if pos + size > end:
            raise _Differs("message beyond its chunk")
        out.append((kind, flags, order, data[pos : pos + size]))
        pos += size
    return out


#: Parses of header chunks and of whole headers, by their bytes (the files of a collection
#: repeat most of them): a pure function of the bytes, kept for the process, bounded.
_parsed: dict[Any, Any] = {}
_PARSED_KEPT = 4096
#: Header bytes kept as keys, at most (a header may hold large attributes).
_PARSED_BYTES = 16 * 2**20
_parsed_bytes = [0]


def _memoized(key: tuple[Any, ...], parse: Any, *args: Any) -> Any:
    """``parse(*args)``, which ``key`` (ending with the bytes parsed) determines."""
    found = _parsed.get(key)
    if found is None:
        found = parse(*args)
        raw = key[-1]
        size = len(raw) if isinstance(raw, bytes) else sum(map(len, raw))
        if len(_parsed) >= _PARSED_KEPT or _parsed_bytes[0] + size > _PARSED_BYTES:
            _parsed.clear()
            _parsed_bytes[0] = 0
        _parsed[key] = found
        _parsed_bytes[0] += size
    return found


def _header(f: Any, addr: int, sizes: _Sizes) -> tuple[tuple[Any, ...], list, tuple[bytes, ...]]:
    """An object header's prefix facts, its messages ``(type, flags, creation order,
    data)`` from every chunk (continuation blocks followed), and the bytes of its chunks."""
    first = _read(f, addr, 16)
    messages: list = []
    if first[:4] == b"OHDR":
        if first[4] != 2:
            raise _Differs("object header version")
        flags = first[5]
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 0x3)
        size = _uint(_read(f, addr + pos, width), 0, width)
        start = pos + width
        data = _read(f, addr, start + size + 4)
        track = bool(flags & 0x4)
        prefix: tuple[Any, ...] = (2, flags & ~0x20, data[6 + (16 if flags & 0x20 else 0) : pos])
        chunks = [data]
        pending = list(
            _memoized(("v2", track, start, data), _messages_v2, track, data, start, start + size)
        )
        while pending:
            message = pending.pop(0)
            messages.append(message)
            if message[0] == _CONTINUATION:
                body = message[3]
                where, length = _uint(body, 0, sizes.o), _uint(body, sizes.o, sizes.l)
                block = _read(f, where, length)
                if block[:4] != b"OCHK":
                    raise _Differs("continuation block signature")
                chunks.append(block)
                pending.extend(
                    _memoized(("v2", track, 4, block), _messages_v2, track, block, 4, length - 4)
                )
        return prefix, messages, tuple(chunks)
    if first[0] != 1:
        raise _Differs("object header version")
    count, size = _uint(first, 2, 2), _uint(first, 8, 4)
    blocks = [(addr + 16, size)]
    prefix = (1, first[:8])  # version, reserved, message count, reference count
    read = []
    while blocks:
        where, length = blocks.pop(0)
        data = _read(f, where, length)
        read.append(data)
        pos = 0
        while pos + 8 <= length:
            kind, msize, mflags = _uint(data, pos, 2), _uint(data, pos + 2, 2), data[pos + 4]
            body = data[pos + 8 : pos + 8 + msize]
            if len(body) != msize:
                raise _Differs("message beyond its block")
            messages.append((kind, mflags, b"", body))
            if kind == _CONTINUATION:
                blocks.append((_uint(body, 0, sizes.o), _uint(body, sizes.o, sizes.l)))
            pos += 8 + msize
    if len(messages) != count:
        raise _Differs("object header message count")
    return prefix, messages, tuple(read)


def _masked(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """``data`` without the byte ranges ``spans`` (each kept as its length)."""
    out = bytearray(data)
    for start, end in spans:
        if end > len(out):
            raise _Differs("message shorter than its fields")
        out[start:end] = bytes(end - start)
    return bytes(out)


def _link_key(data: bytes, sizes: _Sizes) -> bytes:
    version, flags = data[0], data[1]
    if version != 1:
        raise _Differs("link message version")
    pos = 2
    kind = 0
    if flags & 0x8:
        kind = data[pos]
        pos += 1
    if flags & 0x4:
        pos += 8
    if flags & 0x10:
        pos += 1
    width = 1 << (flags & 0x3)
    pos += width + _uint(data, pos, width)
    if kind == 0:  # hard link: the target's address
        return _masked(data, [(pos, pos + sizes.o)])
    return data


@dataclass(frozen=True)
class _Layout:
    """A dataset's layout message, as far as its chunks' grid needs it."""

    chunked: bool
    chunks: tuple[int, ...]  # chunk dimensions (chunked only)


def _layout_key(data: bytes, sizes: _Sizes) -> tuple[bytes, _Layout]:
    version, kind = data[0], data[1]
    o = sizes.o
    if version not in (3, 4):
        raise _Differs("layout message version")
    if kind == 1:  # contiguous: address, size
        return _masked(data, [(2, 2 + o)]), _Layout(False, ())
    if kind == 2 and version == 3:  # chunked: rank + 1, B-tree address, dimensions
        rank = data[2] - 1
        dims = tuple(_uint(data, 3 + o + 4 * i, 4) for i in range(rank))
        return _masked(data, [(3, 3 + o)]), _Layout(True, dims)
    if kind == 2:
        flags, rank, width = data[2], data[3] - 1, data[4]
        dims = tuple(_uint(data, 5 + width * i, width) for i in range(rank))
        pos = 5 + (rank + 1) * width
        index = data[pos]
        pos += 1
        if index == 1:  # single chunk: filtered size and filter mask, then its address
            spans = [(pos, pos + sizes.l)] if flags & 0x2 else []
            pos += sizes.l + 4 if flags & 0x2 else 0
            return _masked(data, [*spans, (pos, pos + o)]), _Layout(True, dims)
        skip = {2: 0, 3: 1, 4: 5, 5: 6}.get(index)
        if skip is None:
            raise _Differs("chunk index type")
        pos += skip
        return _masked(data, [(pos, pos + o)]), _Layout(True, dims)
    raise _Differs("layout class")  # compact (data in the header) or virtual


def _storage_key(data: bytes, sizes: _Sizes, kind: int) -> tuple[bytes, bool]:
    """A link info or attribute info message without its addresses, and whether it
    points at dense storage."""
    flags = data[1]
    pos = 2 + ((8 if kind == _LINK_INFO else 2) if flags & 0x1 else 0)
    count = 3 if flags & 0x2 else 2
    spans = [(pos + i * sizes.o, pos + (i + 1) * sizes.o) for i in range(count)]
    dense = not _undefined(_uint(data, pos, sizes.o), sizes.o)
    return _masked(data, spans), dense


def _attribute_parts(data: bytes) -> tuple[bytes, bytes, bool]:
    """An attribute message's bytes before its value, its name, and whether its value
    is plain bytes (no heap IDs or object addresses)."""
    version, _, name, dtype, space = _ATTRIBUTE_HEAD.unpack_from(data)
    if version == 1:
        pad = lambda n: (n + 7) // 8 * 8  # noqa: E731
        name_at = 8
        dtype_at = name_at + pad(name)
        end = dtype_at + pad(dtype) + pad(space)
    elif version in (2, 3):
        if data[1] & 0x3:  # datatype or dataspace shared
            raise _Differs("shared attribute type")
        name_at = 8 + (1 if version == 3 else 0)
        dtype_at = name_at + name
        end = dtype_at + dtype + space
    else:
        raise _Differs("attribute message version")
    if end > len(data):
        raise _Differs("attribute message shorter than its fields")
    plain = (data[dtype_at] & 0x0F) in _PLAIN_CLASSES
    return data[:end], data[name_at : name_at + name].rstrip(b"\0"), plain


@dataclass(frozen=True)
class _Header:
    """An object header's compared form and what the rest of the comparison needs."""

    keys: tuple[Any, ...]
    dense: bool  # attributes in dense storage (read through h5py)
    by_value: tuple[bytes, ...]  # attributes whose values are read through h5py
    layout: _Layout | None
    dimension_list: bytes | None  # the value of a DIMENSION_LIST held in the header


def _message_keys(messages: list, sizes: _Sizes) -> _Header:
    """The compared form of each message (see the module's docstring)."""
    keys = []
    dense = False
    by_value: list[bytes] = []
    layout = None
    dimension_list = None
    for kind, flags, order, data in messages:
        if kind in _IGNORED:
            continue
        if kind not in _COMPARED or flags & _SHARED:
            raise _Differs(f"object header message {kind:#x} (flags {flags:#x})")
        if kind == _LINK:
            data = _link_key(data, sizes)
        elif kind == _LAYOUT:
            if layout is not None:
                raise _Differs("two layout messages")
            data, layout = _layout_key(data, sizes)
        elif kind == _SYMBOL_TABLE:  # an old-style group: its B-tree and local heap
            data = _masked(data, [(0, 2 * sizes.o)])
        elif kind in (_LINK_INFO, _ATTRIBUTE_INFO):
            data, outside = _storage_key(data, sizes, kind)
            dense = dense or (outside and kind == _ATTRIBUTE_INFO)
            data = data + bytes([outside])
        elif kind == _ATTRIBUTE:
            head, name, plain = _attribute_parts(data)
            if not plain:
                if name == b"DIMENSION_LIST":
                    dimension_list = data[len(head) :]
                elif name not in _SCALE_BOOKKEEPING:
                    by_value.append(name)
                data = head
        keys.append((kind, flags, order, data))
    return _Header(tuple(keys), dense, tuple(by_value), layout, dimension_list)


def _global_heap_object(f: Any, where: int, index: int, sizes: _Sizes, seen: dict) -> bytes:
    """Object ``index`` of the global heap collection at ``where``."""
    objects = seen.get(where)
    if objects is None:
        head = _read(f, where, 8 + sizes.l)
        if head[:4] != b"GCOL" or head[4] != 1:
            raise _Differs("global heap collection signature")
        size = _uint(head, 8, sizes.l)
        data = _read(f, where, size)
        objects = {}
        pos = 8 + sizes.l
        while pos + 8 + sizes.l <= size:
            number, length = _uint(data, pos, 2), _uint(data, pos + 8, sizes.l)
            if number == 0:  # free space: the rest of the collection
                break
            start = pos + 8 + sizes.l
            objects[number] = data[start : start + length]
            pos = start + (length + 7) // 8 * 8
        seen[where] = objects
    found = objects.get(index)
    if found is None:
        raise _Differs("global heap object")
    return found


def _dimension_scales(
    value: bytes, sizes: _Sizes, f: Any, named: dict[int, bytes], heaps: dict
) -> tuple[tuple[bytes, ...], ...]:
    """A DIMENSION_LIST attribute's value (variable-length sequences of object references,
    one per axis) as the link names of the objects it references, axis by axis."""
    o = sizes.o
    step = 4 + o + 4
    if len(value) % step:
        raise _Differs("DIMENSION_LIST value size")
    axes: list[tuple[bytes, ...]] = []
    for at in range(0, len(value), step):
        count = _uint(value, at, 4)
        where, index = _uint(value, at + 4, o), _uint(value, at + 4 + o, 4)
        if count == 0:
            axes.append(())
            continue
        refs = _global_heap_object(f, where, index, sizes, heaps)
        if len(refs) != count * o:
            raise _Differs("DIMENSION_LIST sequence size")
        names = []
        for i in range(count):
            name = named.get(_uint(refs, i * o, o))
            if name is None:
                raise _Differs("a dimension scale that is not one of the file's objects")
            names.append(name)
        axes.append(tuple(names))
    return tuple(axes)


# -- attributes through h5py -----------------------------------------------------------------


#: HDF5 type classes read as raw bytes (no variable-length parts, no references).
_FIXED_CLASSES = frozenset({h5py.h5t.INTEGER, h5py.h5t.FLOAT, h5py.h5t.BITFIELD, h5py.h5t.OPAQUE})


class _Owner:
    """What :class:`h5py.AttributeManager` needs of an object: its id."""

    def __init__(self, oid: Any) -> None:
        self.id = oid


def _value_key(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception as e:  # references, and anything else pickle refuses
        raise _Differs(f"attribute value not comparable: {e}") from None


def _attribute_values(oid: Any, names: tuple[bytes, ...] | None) -> tuple[Any, ...]:
    """Attributes of an object read through h5py (as the scan reads them): all of them
    (``names`` None: dense storage) with their types, shapes, creation order and values,
    or the values of those ``names``."""
    manager = h5py.AttributeManager(_Owner(oid))
    if names is not None:
        return tuple((name, _value_key(manager[name.decode()])) for name in names)
    found: list[tuple[bytes, tuple[Any, ...]]] = []

    def record(name: bytes, info: Any) -> None:  # h5py reuses ``info`` for every attribute
        found.append((name, (info.corder_valid, info.corder, info.cset)))

    h5py.h5a.iterate(oid, record, info=True)  # in name order
    out = []
    for name, order in found:
        if name in _SCALE_BOOKKEEPING:  # used only through dimension scale calls
            out.append((name, b"", (), order, b""))
            continue
        attr = h5py.h5a.open(oid, name)
        kind, shape = attr.get_type(), attr.get_space().shape
        if kind.get_class() in _FIXED_CLASSES or (
            kind.get_class() == h5py.h5t.STRING and not kind.is_variable_str()
        ):
            raw = np.empty(shape, dtype=kind.dtype)
            attr.read(raw, mtype=kind)
            value = raw.tobytes()
        else:
            value = _value_key(manager[name.decode()])
        out.append((name, kind.encode(), shape, order, value))
    return tuple(out)


# -- one file's structure --------------------------------------------------------------------

#: HDF5's Fletcher-32 filter: kerchunk shortens each chunk's length by its checksum.
_FLETCHER32 = 3


def _chunks(dsid: Any, layout: _Layout) -> _Chunks:
    """A dataset's chunks as kerchunk asks for them (``chunk_iter``; contiguous:
    ``get_offset`` and ``get_storage_size``)."""
    if not layout.chunked:
        offset = dsid.get_offset()
        if offset is None:
            return _Chunks((), ())
        rank = dsid.get_space().get_simple_extent_ndims()
        return _Chunks((((0,) * max(rank, 1), 0),), ((offset, dsid.get_storage_size()),))
    keys, places = [], []
    shape = layout.chunks

    def record(info: Any) -> None:
        keys.append((tuple(a // b for a, b in zip(info.chunk_offset, shape)), info.filter_mask))
        places.append((info.byte_offset, info.size))

    if dsid.get_num_chunks():
        dsid.chunk_iter(record)
    return _Chunks(tuple(keys), tuple(places))


def _structure(h5: h5py.File, f: Any) -> _Structure:
    """Everything the comparison looks at, read from the open file ``h5`` (on ``f``)."""
    from .hdf5 import _array_dims

    head, sizes = _superblock(f)
    root = h5.id
    entries: list[tuple[bytes, tuple[Any, ...], int]] = [(b"", (), h5py.h5o.get_info(root).addr)]

    def record(name: bytes, info: Any) -> None:  # h5py reuses ``info`` for every link
        entries.append((name, (info.type, info.cset, info.corder_valid, info.corder), info.u))

    root.links.visit(record, info=True)
    if any(link[0] != h5py.h5l.TYPE_HARD for _, link, _ in entries[1:]):
        raise _Differs("soft or external link")
    named = {addr: name for name, _, addr in entries}
    if len(named) != len(entries):
        raise _Differs("an object with several hard links")
    signature: list[Any] = [head]
    chunks: dict[str, _Chunks] = {}
    scales: dict[str, tuple[tuple[bytes, ...], ...]] = {}
    heaps: dict[int, Any] = {}
    for name, link, addr in entries:
        prefix, messages, raw = _header(f, addr, sizes)
        header = _memoized(("keys", sizes.o, sizes.l, raw), _message_keys, messages, sizes)
        oid = h5py.h5o.open(root, name) if name else root
        values: tuple[Any, ...] = ()
        if header.dense or header.by_value:
            values = _attribute_values(oid, None if header.dense else header.by_value)
        fact: tuple[Any, ...] = (name, link, prefix, header.keys, header.dense, values)
        if isinstance(oid, h5py.h5d.DatasetID):
            if header.layout is None:
                raise _Differs("a dataset without a layout message")
            found = _chunks(oid, header.layout)
            chunks[name.decode()] = found
            if header.dense:  # DIMENSION_LIST was not in the header: ask HDF5
                dims: Any = tuple(_array_dims(h5py.Dataset(oid)))
            elif header.dimension_list is not None:
                dims = _dimension_scales(header.dimension_list, sizes, f, named, heaps)
                scales[name.decode()] = dims
            else:
                dims = None
            fact += (dims, found.keys)
        elif not isinstance(oid, h5py.h5g.GroupID) or header.layout is not None:
            raise _Differs("an object that is neither a group nor a dataset")
        signature.append(fact)
    return _Structure(tuple(signature), chunks, scales)


# -- templates -------------------------------------------------------------------------------


def _rebuilt(template: Manifest, url: str, chunks: dict[str, _Chunks]) -> Manifest:
    """The template's manifest for the file ``url`` with these chunks: each chunk the
    template has written takes this file's byte range, none other."""
    arrays = {}
    for path, array in template.arrays.items():
        found = chunks.get(_stored_name(path, template, chunks))
        if found is None:
            raise _Differs(f"no chunks for {path}")
        grid = array.grid
        offset, length = np.array(grid.offset), np.array(grid.length)
        written = grid.file_id == 0
        placed: set[tuple[int, ...]] = set()
        for (index, _), (start, size) in zip(found.keys, found.places):
            place = index if grid.file_id.ndim == len(index) else ()
            if place in placed or not written[place]:
                raise _Differs("a chunk where the template has none")
            placed.add(place)
            offset[place] = start
            length[place] = size
        if len(placed) != int(written.sum()):
            raise _Differs("chunk count")
        # the file ids are the template's (read-only: shared)
        arrays[path] = VirtualArray(
            array.meta, ChunkGrid(grid.file_id, offset, length, grid.inline), array.plan
        )
    return replace(template, urls=(url,), arrays=arrays)


def _stored_name(path: str, template: Manifest, chunks: dict[str, _Chunks]) -> str:
    """The HDF5 path of the template's array ``path``: the one netCDF-C stored under
    ``_nc4_non_coord_`` where the full scan took that prefix off (see
    :func:`~fsspec_virtual.scan.hdf5.scan_hdf5`), else ``path`` itself."""
    from .hdf5 import NON_COORDINATE_PREFIX

    parent, _, name = path.rpartition("/")
    stored = f"{parent}/{NON_COORDINATE_PREFIX}{name}" if parent else NON_COORDINATE_PREFIX + name
    if stored in chunks and stored not in template.arrays:
        return stored
    return path


def _plain(manifest: Manifest, messages: list[str], url: str) -> bool:
    """Whether a full scan's result can be a template: every array served from byte
    ranges of this one file, nothing left out, no links followed."""
    if messages or manifest.skipped or manifest.linked or manifest.link_targets:
        return False
    if manifest.urls != (url,):
        return False
    for array in manifest.arrays.values():
        grid = array.grid
        if array.plan is not None or grid.inline:
            return False
        if not np.isin(grid.file_id, (0, MISSING)).all():
            return False
    return True


def _scales_agree(structure: _Structure, manifest: Manifest) -> bool:
    """Whether the dimension scales read from the global heap name the dimensions the
    full scan found (through HDF5's own calls) wherever one scale is attached."""
    for path, axes in structure.scales.items():
        array = manifest.arrays.get(path)
        if array is None:
            continue
        if len(axes) != len(array.meta.dimensions):
            return False
        for names, dimension in zip(axes, array.meta.dimensions):
            if len(names) == 1 and names[0].decode().rsplit("/", 1)[-1] != dimension:
                return False
    return True


def _same(a: Manifest, b: Manifest) -> bool:
    return pickle.dumps(a, protocol=5) == pickle.dumps(b, protocol=5)


class Look:
    """What :func:`rescan` found of one file: its structure (None if it could not be
    read or compared), for :func:`learn` after a full scan."""

    __slots__ = ("structure",)

    def __init__(self, structure: _Structure | None) -> None:
        self.structure = structure


def rescan(f: Any, url: str, size: int | None = None) -> tuple[Manifest | None, Look]:
    """The manifest :func:`~fsspec_virtual.scan.hdf5.scan_hdf5` gives the HDF5 file open
    as ``f`` (at ``url``), if its structure is that of a kept template, else None; and
    what was seen of the file (for :func:`learn`)."""
    try:
        h5, source = _opened(f, size)
        with h5:
            structure = _structure(h5, source)
    except Exception:  # anything unexpected: the full scan decides, and reports it
        return None, Look(None)
    with _lock:
        template = _templates.get(structure.signature)
        if template is not None:
            _templates.move_to_end(structure.signature, last=False)
    if template is None:
        return None, Look(structure)
    try:
        return _rebuilt(template.manifest, url, structure.chunks), Look(None)
    except _Differs:
        return None, Look(structure)


def learn(look: Look, url: str, manifest: Manifest, messages: list[str]) -> bool:
    """Keep the full scan ``manifest`` of the file :func:`rescan` looked at as a template,
    if it can be one and rebuilds itself exactly; whether it was kept."""
    structure = look.structure
    if structure is None or not _plain(manifest, messages, url):
        return False
    if not _scales_agree(structure, manifest):
        return False
    try:
        if not _same(_rebuilt(manifest, url, structure.chunks), manifest):
            return False
    except _Differs:
        return False
    with _lock:
        _templates[structure.signature] = Template(structure.signature, manifest)
        _templates.move_to_end(structure.signature, last=False)
        while len(_templates) > _KEPT:
            _templates.popitem()
    return True

"""Read TensorFlow "V2" checkpoints without TensorFlow or protobuf.

A V2 checkpoint (the *tensor bundle* format written by ``tf.train.Checkpoint``,
``tf.compat.v1.train.Saver`` and Keras) is a set of files sharing a prefix::

    PREFIX.index                      sorted table: tensor name -> where its bytes are
    PREFIX.data-00000-of-0000N        raw tensor bytes, one file per shard

The ``.index`` file is a LevelDB-style sorted string table (SSTable).  Its
entry with the empty key holds a ``BundleHeaderProto`` (number of shards,
endianness, format version); every other entry maps a tensor name to a
serialized ``BundleEntryProto`` (dtype, shape, shard, byte offset, byte size
and a masked CRC32C of the bytes).  This module decodes both layers with a
small hand-written protobuf wire-format decoder, so the only dependency is
numpy.

Typical use::

    from spinenet.convert.tf_checkpoint import TFCheckpoint

    ckpt = TFCheckpoint("path/to/ckpt")          # or "path/to/ckpt.index"
    for name in ckpt.keys():
        print(name, ckpt.shape(name), ckpt.dtype(name))
    kernel = ckpt.read("backbone/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")

Not supported (a clear error is raised): snappy-compressed index blocks,
partitioned (sliced) variables, and ``resource``/``variant``/quantized dtypes.
"""

from __future__ import annotations

import array
import difflib
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import cast

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "TFCheckpoint",
    "crc32c",
    "masked_crc32c",
    "object_graph_names",
]

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
"""Key under which TF2 object-based checkpoints store their ``TrackableObjectGraph``."""


class CheckpointFormatError(ValueError):
    """The checkpoint files are malformed, truncated, or fail a checksum."""


# --------------------------------------------------------------------------- #
# CRC32C (Castagnoli)
# --------------------------------------------------------------------------- #
#
# TF protects every index block and every tensor with CRC32C.  A per-byte
# Python loop runs at roughly 12 MB/s, far too slow for checkpoints of several
# hundred MB, so large buffers are split into many equal "lanes" whose CRCs
# numpy advances in lock-step, 4 bytes per step (slicing-by-4, with the four
# byte tables merged pairwise into two 65536-entry tables to halve the number
# of numpy calls).  The lane CRCs are then merged pairwise: CRC arithmetic is
# linear over GF(2), so for the raw register crc(A || B) == Z_len(B)(crc(A)) ^
# crc(B), where Z_n is the linear map "feed n zero bytes", applied here
# through four 256-entry lookup tables.

_CASTAGNOLI_REFLECTED = 0x82F63B78
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def _make_byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CASTAGNOLI_REFLECTED if crc & 1 else 0)
        table.append(crc)
    return table


_BYTE_TABLE: list[int] = _make_byte_table()


@cache
def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """Tables for one little-endian 32-bit step: low 16 bits and high 16 bits of (register ^ word)."""
    # slice4[k][b]: contribution of byte b followed by k zero bytes.
    slice4 = [np.array(_BYTE_TABLE, dtype=np.uint32)]
    for _ in range(3):
        prev = slice4[-1]
        slice4.append((prev >> 8) ^ slice4[0][prev & 0xFF])
    v = np.arange(65536)
    low = slice4[3][v & 0xFF] ^ slice4[2][v >> 8]  # bytes 0, 1 of the word
    high = slice4[1][v & 0xFF] ^ slice4[0][v >> 8]  # bytes 2, 3
    return low, high


# Buffers are processed in blocks of ``lanes`` x _LANE_STEPS words, with a
# power-of-two lane count, so that only a handful of merge tables (one per
# power-of-two span) are ever built.  Blocks of at most 1 MiB keep the working
# set in cache.  Measured on a 2-core machine: ~700 MB/s for large buffers;
# the word loop used below 8 KiB (where numpy's per-call overhead dominates)
# runs at ~30 MB/s, the plain byte loop at ~12 MB/s.
_LANE_STEPS = 64
_MAX_LANES = 4096
_NUMPY_MIN_BYTES = 32 * 4 * _LANE_STEPS  # 8 KiB
_U32_TYPECODE = "I" if array.array("I").itemsize == 4 else "L"


@cache
def _word_tables_py() -> tuple[array.array[int], array.array[int]]:
    # array.array rather than list: 512 KiB instead of ~5 MB of int objects,
    # for ~30% less speed.
    low, high = _word_tables()
    return array.array(_U32_TYPECODE, low.tolist()), array.array(_U32_TYPECODE, high.tolist())


def _crc_update_bytes(register: int, data: bytes | bytearray | memoryview) -> int:
    table = _BYTE_TABLE
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _crc_update_small(register: int, data: memoryview) -> int:
    """Plain-Python update, one 32-bit word per step."""
    low, high = _word_tables_py()
    whole = len(data) & ~3
    words = array.array(_U32_TYPECODE)
    words.frombytes(data[:whole])
    if sys.byteorder == "big":
        words.byteswap()  # the tables expect the little-endian value of each word
    for word in words:
        x = register ^ word
        register = low[x & 0xFFFF] ^ high[x >> 16]
    return _crc_update_bytes(register, data[whole:])


def _op_apply(op: tuple[int, ...], value: int) -> int:
    """Apply a GF(2)-linear map on 32-bit values given by the images of its 32 unit bits."""
    result = 0
    bit = 0
    while value:
        if value & 1:
            result ^= op[bit]
        value >>= 1
        bit += 1
    return result


def _op_compose(outer: tuple[int, ...], inner: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_op_apply(outer, image) for image in inner)


@cache
def _zeros_op_pow2(log2_bytes: int) -> tuple[int, ...]:
    """Z_n for n = 2**log2_bytes, by repeated squaring of the one-zero-byte map."""
    if log2_bytes == 0:
        return tuple(_BYTE_TABLE[(1 << b) & 0xFF] ^ ((1 << b) >> 8) for b in range(32))
    half = _zeros_op_pow2(log2_bytes - 1)
    return _op_compose(half, half)


@lru_cache(maxsize=256)
def _zeros_op_tables(nbytes: int) -> np.ndarray:
    """Z_nbytes as four 256-entry tables, one per byte of the input register."""
    op = tuple(1 << b for b in range(32))  # identity
    bit = 0
    while nbytes >> bit:
        if (nbytes >> bit) & 1:
            op = _op_compose(_zeros_op_pow2(bit), op)
        bit += 1
    images = np.array(op, dtype=np.uint32).reshape(4, 8)
    byte_values = np.arange(256)
    tables = np.zeros((4, 256), dtype=np.uint32)
    for b in range(8):
        has_bit = ((byte_values >> b) & 1).astype(bool)
        tables[:, has_bit] ^= images[:, b : b + 1]
    return tables


def _crc_update_lanes(register: int, block: memoryview, lanes: int) -> int:
    """Advance the raw register over ``block`` of exactly ``lanes * 4 * _LANE_STEPS`` bytes."""
    low_table, high_table = _word_tables()
    words = np.frombuffer(block, dtype="<u4").reshape(lanes, _LANE_STEPS)
    regs = np.zeros(lanes, dtype=np.uint32)
    regs[0] = register
    x = np.empty(lanes, dtype="<u4")  # explicit byte order so its 16-bit halves are (low, high)
    halves = x.view("<u2").reshape(lanes, 2)
    tmp = np.empty(lanes, dtype=np.uint32)
    # Iterating over (strided) columns measured as fast as a transposed copy, without the copy.
    for column in words.T:
        np.bitwise_xor(regs, column, out=x)
        np.take(low_table, halves[:, 0], out=regs)
        np.take(high_table, halves[:, 1], out=tmp)
        regs ^= tmp

    # Pairwise merge: left lane shifted over the right lane's bytes, xor right.
    span = 4 * _LANE_STEPS
    while len(regs) > 1:
        tables = _zeros_op_tables(span)
        left, right = regs[0::2], regs[1::2]
        regs = (
            tables[0][left & 0xFF]
            ^ tables[1][(left >> 8) & 0xFF]
            ^ tables[2][(left >> 16) & 0xFF]
            ^ tables[3][left >> 24]
            ^ right
        )
        span *= 2
    return int(regs[0])


def _crc_update(register: int, data: bytes | bytearray | memoryview) -> int:
    """Advance the raw (un-inverted) CRC register over ``data``."""
    view = memoryview(data).cast("B")
    pos, end = 0, len(view)
    while end - pos >= _NUMPY_MIN_BYTES:
        lanes = min(_MAX_LANES, 1 << (((end - pos) // (4 * _LANE_STEPS)).bit_length() - 1))
        size = lanes * 4 * _LANE_STEPS
        register = _crc_update_lanes(register, view[pos : pos + size], lanes)
        pos += size
    return _crc_update_small(register, view[pos:])


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``; pass a previous result as ``crc`` to extend it.

    ``crc32c(b"123456789") == 0xE3069283``.  Pure Python + numpy: buffers of
    8 KiB or more are processed with vectorised numpy lanes (about 700 MB/s on
    large buffers), the rest with a table-driven word loop (about 30 MB/s).
    """
    return _crc_update(crc ^ _U32, data) ^ _U32


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data`` in the "masked" form LevelDB/TF store on disk.

    Masking (rotate right by 15, add a constant) is LevelDB's convention: it
    avoids storing raw CRCs inside data that is itself CRC-protected.
    """
    return _mask(crc32c(data))


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


# --------------------------------------------------------------------------- #
# Protobuf wire format
# --------------------------------------------------------------------------- #

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LEN, _WIRE_FIXED32 = 0, 1, 2, 5

_ProtoFields = dict[int, list["int | bytes"]]


def _read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise CheckpointFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointFormatError("varint longer than 10 bytes")


def _to_int64(value: int) -> int:
    """Reinterpret a decoded varint as a signed two's-complement int64."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_proto(buf: bytes) -> _ProtoFields:
    """Split a serialized message into ``{field number: [raw values in order]}``.

    Varint and fixed-width fields become ints (unsigned), length-delimited
    fields become bytes; interpreting them is up to the caller, who knows the
    schema.  Unknown fields are therefore kept, not rejected, which is what
    protobuf parsers do too (and lets newer TF versions add fields).
    """
    fields: _ProtoFields = {}
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _WIRE_FIXED64:
            if pos + 8 > end:
                raise CheckpointFormatError("truncated fixed64 field")
            value = int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == _WIRE_LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise CheckpointFormatError("truncated length-delimited field")
            value = bytes(buf[pos : pos + length])
            pos += length
        elif wire == _WIRE_FIXED32:
            if pos + 4 > end:
                raise CheckpointFormatError("truncated fixed32 field")
            value = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:  # 3/4 are deprecated groups, 6/7 do not exist
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire} (field {number})")
        fields.setdefault(number, []).append(value)
    return fields


def _scalar(fields: _ProtoFields, number: int, default: int = 0) -> int:
    # Protobuf semantics: for a non-repeated field the last occurrence wins.
    values = fields.get(number)
    if not values:
        return default
    value = values[-1]
    if not isinstance(value, int):
        raise CheckpointFormatError(f"field {number}: expected a number, got bytes")
    return value


def _messages(fields: _ProtoFields, number: int) -> list[bytes]:
    values = fields.get(number, [])
    if any(not isinstance(v, bytes) for v in values):
        raise CheckpointFormatError(f"field {number}: expected a message")
    return values  # type: ignore[return-value]


def _repeated_ints(fields: _ProtoFields, number: int) -> list[int]:
    # proto3 writes repeated scalars "packed" (one length-delimited run of
    # varints); older writers emit them one by one.  Accept both.
    out: list[int] = []
    for value in fields.get(number, []):
        if isinstance(value, int):
            out.append(value)
            continue
        pos = 0
        while pos < len(value):
            item, pos = _read_varint(value, pos)
            out.append(item)
    return out


def _string(fields: _ProtoFields, number: int) -> str:
    values = _messages(fields, number)
    return values[-1].decode("utf-8", errors="replace") if values else ""


# --------------------------------------------------------------------------- #
# Tensor bundle metadata
# --------------------------------------------------------------------------- #

# TF DataType enum (tensorflow/core/framework/types.proto) -> TF dtype name.
_TF_DTYPE_NAMES: dict[int, str] = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
    7: "string", 8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8",
    13: "qint32", 14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16",
    18: "complex128", 19: "float16", 20: "resource", 21: "variant", 22: "uint32",
    23: "uint64",
}  # fmt: skip

_DT_STRING = 7
_DT_BFLOAT16 = 14

# On-disk element type (without byte order) of every numeric dtype we decode.
# bfloat16 has no numpy dtype: it is read as its raw 16 bits and widened.
_STORAGE_DTYPES: dict[int, str] = {
    1: "f4", 2: "f8", 3: "i4", 4: "u1", 5: "i2", 6: "i1", 8: "c8", 9: "i8",
    10: "b1", 14: "u2", 17: "u2", 18: "c16", 19: "f2", 22: "u4", 23: "u8",
}  # fmt: skip

_INDEX_SUFFIX = ".index"
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48  # two BlockHandles padded to 40 bytes + 8-byte magic
_BLOCK_TRAILER_LEN = 5  # 1-byte compression type + 4-byte masked crc32c
_SUPPORTED_BUNDLE_VERSION = 1  # TF's kTensorBundleVersion


@dataclass(frozen=True)
class _Entry:
    """The parts of a ``BundleEntryProto`` this reader uses."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool  # partitioned variable: data lives in separate slice entries


def _parse_entry(value: bytes) -> _Entry:
    fields = _parse_proto(value)
    dims: list[int] = []
    for shape_msg in _messages(fields, 2):
        for dim_msg in _messages(_parse_proto(shape_msg), 2):
            dims.append(_to_int64(_scalar(_parse_proto(dim_msg), 1)))
    return _Entry(
        dtype=_scalar(fields, 1),
        shape=tuple(dims),
        shard_id=_scalar(fields, 3),
        offset=_to_int64(_scalar(fields, 4)),
        size=_to_int64(_scalar(fields, 5)),
        crc32c=_scalar(fields, 6),
        sliced=bool(fields.get(7)),
    )


@dataclass(frozen=True)
class _Header:
    num_shards: int
    big_endian: bool
    min_consumer: int
    bad_consumers: tuple[int, ...]


def _parse_header(value: bytes) -> _Header:
    fields = _parse_proto(value)
    version = _messages(fields, 3)
    version_fields = _parse_proto(version[-1]) if version else {}
    return _Header(
        num_shards=_scalar(fields, 1),
        big_endian=_scalar(fields, 2) == 1,  # enum Endianness { LITTLE = 0; BIG = 1; }
        min_consumer=_scalar(version_fields, 2),
        bad_consumers=tuple(_repeated_ints(version_fields, 3)),
    )


# --------------------------------------------------------------------------- #
# SSTable (.index) decoding
# --------------------------------------------------------------------------- #


def _read_block_handle(buf: bytes | bytearray | memoryview, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _read_varint(buf, pos)
    size, pos = _read_varint(buf, pos)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int], what: str, path: str) -> memoryview:
    offset, size = handle
    end = offset + size + _BLOCK_TRAILER_LEN
    if end > len(table) - _FOOTER_LEN:
        raise CheckpointFormatError(
            f"{path}: {what} block at bytes [{offset}, {end}) runs past the end of the "
            f"table ({len(table)} bytes); the index file is truncated or corrupt"
        )
    view = memoryview(table)
    (stored_crc,) = struct.unpack_from("<I", table, offset + size + 1)
    # The block checksum covers the contents and the compression-type byte.
    if masked_crc32c(view[offset : offset + size + 1]) != stored_crc:
        raise CheckpointFormatError(
            f"{path}: checksum mismatch in {what} block at byte {offset}; the index file is corrupt"
        )
    compression = table[offset + size]
    if compression == 1:
        raise CheckpointFormatError(
            f"{path}: {what} block is snappy-compressed, which this reader does not support "
            "(TF writes uncompressed index blocks; re-save the checkpoint with TensorFlow)"
        )
    if compression != 0:
        raise CheckpointFormatError(f"{path}: {what} block has unknown compression type {compression}")
    return view[offset : offset + size]


def _iter_block(block: memoryview, what: str, path: str) -> Iterator[tuple[bytes, memoryview]]:
    """Yield (key, value) of a block; keys are prefix-compressed against the previous key."""
    if len(block) < 4:
        raise CheckpointFormatError(f"{path}: {what} block too short ({len(block)} bytes)")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise CheckpointFormatError(f"{path}: {what} block has a corrupt restart array")
    # The restart array only speeds up binary search; a full scan does not need it.
    pos = 0
    key = b""
    try:
        while pos < limit:
            shared, pos = _read_varint(block, pos)
            unshared, pos = _read_varint(block, pos)
            value_len, pos = _read_varint(block, pos)
            if shared > len(key) or pos + unshared + value_len > limit:
                raise CheckpointFormatError("entry overruns its block")
            key = key[:shared] + bytes(block[pos : pos + unshared])
            pos += unshared
            yield key, block[pos : pos + value_len]
            pos += value_len
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{path}: corrupt {what} block: {err}") from None


def _parse_index(table: bytes, path: str) -> tuple[_Header, dict[str, _Entry]]:
    if len(table) < _FOOTER_LEN:
        raise CheckpointFormatError(
            f"{path}: only {len(table)} bytes, too short for a checkpoint index "
            f"(needs at least the {_FOOTER_LEN}-byte table footer); the file is truncated"
        )
    footer = memoryview(table)[len(table) - _FOOTER_LEN :]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER_LEN - 8)
    if magic != _TABLE_MAGIC:
        raise CheckpointFormatError(
            f"{path}: not a TensorFlow V2 checkpoint index (bad table magic {magic:#018x}); "
            "the file is truncated, corrupt, or of another format"
        )
    try:
        _metaindex_handle, pos = _read_block_handle(footer, 0)  # always empty in TF bundles
        index_handle, _ = _read_block_handle(footer, pos)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{path}: corrupt table footer: {err}") from None

    header: _Header | None = None
    entries: dict[str, _Entry] = {}
    index_block = _read_block(table, index_handle, "index", path)
    for _, handle_bytes in _iter_block(index_block, "index", path):
        data_handle, _ = _read_block_handle(handle_bytes, 0)
        data_block = _read_block(table, data_handle, "data", path)
        for raw_key, value in _iter_block(data_block, "data", path):
            try:
                if raw_key == b"":
                    header = _parse_header(bytes(value))
                elif raw_key[:1] == b"\x00":
                    # Slices of partitioned variables are stored under binary
                    # "ordered code" keys starting with NUL; TF hides them too.
                    continue
                else:
                    entries[raw_key.decode("utf-8")] = _parse_entry(bytes(value))
            except (CheckpointFormatError, UnicodeDecodeError) as err:
                raise CheckpointFormatError(f"{path}: corrupt entry for key {raw_key!r}: {err}") from None
    if header is None:
        raise CheckpointFormatError(f"{path}: no bundle header entry; not a TensorFlow V2 checkpoint index")
    return header, entries


# --------------------------------------------------------------------------- #
# Public reader
# --------------------------------------------------------------------------- #


class TFCheckpoint:
    """Lazy, read-only view of a TensorFlow V2 checkpoint (``PREFIX.index`` + data shards).

    The index is parsed once on construction; tensor bytes are read from the
    data shards only when :meth:`read` is called, and each read is checked
    against the CRC32C stored in the index.

    Args:
        prefix: the checkpoint prefix (``.../ckpt`` for ``ckpt.index`` and
            ``ckpt.data-00000-of-00001``) or the path of the ``.index`` file.
        verify: default for :meth:`read`'s ``verify``: check every tensor's
            CRC32C.  This costs little (a vectorised CRC at about 700 MB/s on
            large tensors, ~30 MB/s on small ones), so leave it on unless
            reading very large checkpoints where every second counts.

    Raises:
        FileNotFoundError: the ``.index`` file or a data shard is missing.
        CheckpointFormatError: (a ``ValueError``) the index is truncated,
            corrupt or not a V2 checkpoint index.

    Dtypes: numeric tensors come back as numpy arrays of the matching numpy
    dtype, except **bfloat16, which is widened to float32** (exactly, by
    shifting its 16 bits into the high half of a float32).  ``string``
    tensors come back as ``bytes`` (scalars) or object arrays of ``bytes``.
    """

    def __init__(self, prefix: str | os.PathLike[str], *, verify: bool = True) -> None:
        path = os.fspath(prefix)
        if path.endswith(_INDEX_SUFFIX):
            path = path[: -len(_INDEX_SUFFIX)]
        self._prefix = path
        self._verify = verify
        self._index_path = path + _INDEX_SUFFIX
        if not os.path.isfile(self._index_path):
            raise FileNotFoundError(
                f"TensorFlow checkpoint index not found: {self._index_path!r}. Expected a V2 "
                "checkpoint prefix such as '.../ckpt' (files ckpt.index and "
                "ckpt.data-00000-of-00001) or the path of the .index file."
            )
        with open(self._index_path, "rb") as f:
            table = f.read()
        header, self._entries = _parse_index(table, self._index_path)
        if (
            header.min_consumer > _SUPPORTED_BUNDLE_VERSION
            or _SUPPORTED_BUNDLE_VERSION in header.bad_consumers
        ):
            raise CheckpointFormatError(
                f"{self._index_path}: checkpoint format version requires a newer reader "
                f"(min_consumer={header.min_consumer}, bad_consumers={list(header.bad_consumers)})"
            )
        self._num_shards = header.num_shards
        self._byte_order = ">" if header.big_endian else "<"
        self._sorted_keys = sorted(self._entries)

        for entry_key, entry in self._entries.items():
            if not entry.sliced and not 0 <= entry.shard_id < max(self._num_shards, 1):
                raise CheckpointFormatError(
                    f"{self._index_path}: key {entry_key!r} refers to shard {entry.shard_id}, "
                    f"but the checkpoint has {self._num_shards} shard(s)"
                )
        for shard in range(self._num_shards):
            shard_path = self._shard_path(shard)
            if not os.path.isfile(shard_path):
                raise FileNotFoundError(
                    f"TensorFlow checkpoint data shard not found: {shard_path!r}. The index "
                    f"{self._index_path!r} expects {self._num_shards} data file(s) named "
                    f"{os.path.basename(path)}.data-NNNNN-of-{self._num_shards:05d} next to it."
                )

    # -- metadata ----------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The checkpoint prefix (path without ``.index`` / ``.data-*``)."""
        return self._prefix

    @property
    def num_shards(self) -> int:
        """Number of ``.data-*`` files."""
        return self._num_shards

    def keys(self) -> list[str]:
        """All tensor names, sorted (as ``tf.train.list_variables`` lists them)."""
        return list(self._sorted_keys)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sorted_keys)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._prefix!r}, {len(self)} tensors, {self._num_shards} shard(s))"

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of tensor ``key`` (``()`` for scalars)."""
        return self._entry(key).shape

    def tf_dtype(self, key: str) -> str:
        """TensorFlow dtype name of ``key`` as stored, e.g. ``"float32"``, ``"bfloat16"``, ``"string"``."""
        code = self._entry(key).dtype
        return _TF_DTYPE_NAMES.get(code, f"unknown_dtype_{code}")

    def dtype(self, key: str) -> np.dtype:
        """numpy dtype that :meth:`read` returns for ``key``.

        ``float32`` for bfloat16 tensors (they are widened), ``object`` for
        string tensors.  Raises ``NotImplementedError`` for dtypes that have
        no numpy equivalent (resource, variant, quantized types).
        """
        code = self._entry(key).dtype
        if code == _DT_STRING:
            return np.dtype(object)
        if code == _DT_BFLOAT16:
            return np.dtype(np.float32)
        if code not in _STORAGE_DTYPES:
            raise NotImplementedError(self._unsupported_message(key, code))
        return np.dtype(_STORAGE_DTYPES[code])

    def is_numeric(self, key: str) -> bool:
        """Whether ``key`` holds a tensor :meth:`read` returns as a numeric array."""
        return self._entry(key).dtype in _STORAGE_DTYPES and not self._entry(key).sliced

    # -- data --------------------------------------------------------------

    def read(self, key: str, *, verify: bool | None = None) -> np.ndarray | bytes:
        """Read tensor ``key`` from its data shard.

        Args:
            key: tensor name, one of :meth:`keys`.
            verify: check the tensor's CRC32C (default: the constructor's ``verify``).

        Returns:
            A new, writable numpy array in native byte order with the
            checkpoint's shape (bfloat16 widened to float32).  String tensors:
            ``bytes`` for a scalar (e.g. the serialized object graph under
            ``_CHECKPOINTABLE_OBJECT_GRAPH``), otherwise an object array of ``bytes``.

        Raises:
            KeyError: no tensor named ``key``.
            CheckpointFormatError: (a ``ValueError``) checksum mismatch or
                inconsistent sizes; the message names the key and the file.
            NotImplementedError: partitioned variables and dtypes without a
                numpy equivalent.
        """
        entry = self._entry(key)
        if entry.sliced:
            raise NotImplementedError(
                f"{key!r} is a partitioned (sliced) variable; reading those is not supported"
            )
        if entry.dtype != _DT_STRING and entry.dtype not in _STORAGE_DTYPES:
            raise NotImplementedError(self._unsupported_message(key, entry.dtype))
        shard_path = self._shard_path(entry.shard_id)
        buf = self._read_bytes(key, entry, shard_path)
        verify = self._verify if verify is None else verify
        if entry.dtype == _DT_STRING:
            return self._decode_strings(key, entry, buf, shard_path, verify)
        if verify:
            self._check_crc(key, entry, masked_crc32c(buf), shard_path)
        return self._decode_numeric(key, entry, buf, shard_path)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(key, array)`` for every numeric tensor, in key order, reading lazily.

        String tensors (such as the object graph), partitioned variables and
        dtypes without a numpy equivalent are skipped; use :meth:`read` for
        string tensors.
        """
        for key in self._sorted_keys:
            if self.is_numeric(key):
                yield key, cast(np.ndarray, self.read(key))

    def as_dict(self) -> dict[str, np.ndarray]:
        """Read every numeric tensor into a ``{key: array}`` dict (see :meth:`items`)."""
        return dict(self.items())

    # -- internals ---------------------------------------------------------

    def _entry(self, key: str) -> _Entry:
        try:
            return self._entries[key]
        except KeyError:
            pass
        close = difflib.get_close_matches(str(key), self._sorted_keys, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"{key!r} is not in checkpoint {self._prefix!r} ({len(self)} keys).{hint}") from None

    def _shard_path(self, shard: int) -> str:
        return f"{self._prefix}.data-{shard:05d}-of-{self._num_shards:05d}"

    def _unsupported_message(self, key: str, code: int) -> str:
        name = _TF_DTYPE_NAMES.get(code, f"enum value {code}")
        return f"{key!r} has TensorFlow dtype {name}, which this reader cannot convert to numpy"

    def _read_bytes(self, key: str, entry: _Entry, shard_path: str) -> bytearray:
        if entry.offset < 0 or entry.size < 0:
            raise CheckpointFormatError(f"{self._index_path}: key {key!r} has a negative offset or size")
        # A bytearray keeps the array returned by np.frombuffer writable without a copy.
        buf = bytearray(entry.size)
        with open(shard_path, "rb") as f:
            f.seek(entry.offset)
            got = f.readinto(buf)
        if got != entry.size:
            raise CheckpointFormatError(
                f"tensor {key!r}: {shard_path!r} ends after {got} of its {entry.size} bytes "
                f"(at offset {entry.offset}); the data file is truncated"
            )
        return buf

    def _decode_numeric(self, key: str, entry: _Entry, buf: bytearray, shard_path: str) -> np.ndarray:
        storage = np.dtype(self._byte_order + _STORAGE_DTYPES[entry.dtype])
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * storage.itemsize != entry.size:
            raise CheckpointFormatError(
                f"tensor {key!r} in {shard_path!r}: {entry.size} bytes stored, but shape "
                f"{entry.shape} of {self.tf_dtype(key)} needs {count * storage.itemsize}"
            )
        array = np.frombuffer(buf, dtype=storage, count=count).reshape(entry.shape)
        if entry.dtype == _DT_BFLOAT16:
            # bfloat16 is the top half of a float32, so widening is exact.
            return (array.astype(np.uint32) << 16).view(np.float32)
        if not storage.isnative:
            return array.astype(storage.newbyteorder("="))
        return array

    def _check_crc(self, key: str, entry: _Entry, actual: int, shard_path: str) -> None:
        if actual != entry.crc32c:
            raise CheckpointFormatError(
                f"checksum mismatch for tensor {key!r} in {shard_path!r} (bytes "
                f"{entry.offset}..{entry.offset + entry.size}): stored masked crc32c "
                f"{entry.crc32c:#010x}, computed {actual:#010x}; the data file is corrupt"
            )

    def _decode_strings(
        self, key: str, entry: _Entry, buf: bytearray, shard_path: str, verify: bool
    ) -> bytes | np.ndarray:
        # On disk: the varint64 length of every element, a masked crc32c of
        # the lengths (uint32 in the writer's byte order), the element bytes
        # back to back.  Quirk of TF's writer (kept for backward
        # compatibility): both checksums cover each length as a fixed-width
        # uint32 (uint64 beyond 4 GiB), not the varint bytes actually stored;
        # the entry's checksum then continues over the stored length checksum
        # and the element bytes.
        count = int(np.prod(entry.shape, dtype=np.int64))
        where = f"string tensor {key!r} in {shard_path!r}"
        lengths = []
        pos = 0
        try:
            for _ in range(count):
                length, pos = _read_varint(buf, pos)
                lengths.append(length)
        except CheckpointFormatError as err:
            raise CheckpointFormatError(f"{where}: corrupt length prefix: {err}") from None
        needed = pos + 4 + sum(lengths)
        if needed != len(buf):
            raise CheckpointFormatError(
                f"{where}: {len(buf)} bytes stored, but its length prefix implies {needed}"
            )
        if verify:
            fixed_lengths = b"".join(
                struct.pack(self._byte_order + ("I" if n <= _U32 else "Q"), n) for n in lengths
            )
            lengths_crc = crc32c(fixed_lengths)
            (stored_lengths_crc,) = struct.unpack_from(self._byte_order + "I", buf, pos)
            if stored_lengths_crc != _mask(lengths_crc):
                raise CheckpointFormatError(
                    f"checksum mismatch in the length prefix of {where}; the data file is corrupt"
                )
            self._check_crc(key, entry, _mask(crc32c(memoryview(buf)[pos:], lengths_crc)), shard_path)
        pos += 4
        elements = []
        for length in lengths:
            elements.append(bytes(buf[pos : pos + length]))
            pos += length
        if not entry.shape:
            return elements[0]
        out = np.empty(count, dtype=object)
        out[:] = elements
        return out.reshape(entry.shape)


# --------------------------------------------------------------------------- #
# Object graph (diagnostics)
# --------------------------------------------------------------------------- #


def object_graph_names(ckpt: TFCheckpoint | str | os.PathLike[str]) -> dict[str, str]:
    """Map checkpoint keys to the variable names recorded in a TF2 object graph.

    Diagnostic aid: TF2 object-based checkpoints (``tf.train.Checkpoint``)
    name tensors by object path (``backbone/layer_with_weights-3/kernel/.ATTRIBUTES/VARIABLE_VALUE``)
    and record, in the ``_CHECKPOINTABLE_OBJECT_GRAPH`` string tensor, the
    ``full_name`` each variable had when it was saved (for Keras, the layer
    scope name without the ``:0`` suffix, e.g. ``bottleneck_block_3/conv2d_1/kernel``).
    This decodes that ``TrackableObjectGraph`` proto and returns
    ``{checkpoint_key: full_name}`` for every serialized attribute that has
    both.  TF1 name-based checkpoints have no object graph: ``{}`` is returned.
    The names depend on Keras' layer-creation order, so use them to
    understand a checkpoint, not as a stable mapping.
    """
    if not isinstance(ckpt, TFCheckpoint):
        ckpt = TFCheckpoint(ckpt)
    if OBJECT_GRAPH_KEY not in ckpt:
        return {}
    raw = ckpt.read(OBJECT_GRAPH_KEY)
    if not isinstance(raw, bytes):
        raise CheckpointFormatError(f"{OBJECT_GRAPH_KEY} in {ckpt.prefix!r} is not a scalar string")
    names: dict[str, str] = {}
    try:
        graph = _parse_proto(raw)
        for node_msg in _messages(graph, 1):  # TrackableObjectGraph.nodes
            node = _parse_proto(node_msg)
            for attr_msg in _messages(node, 2):  # TrackableObject.attributes
                attr = _parse_proto(attr_msg)  # SerializedTensor
                full_name = _string(attr, 2)
                checkpoint_key = _string(attr, 3)
                if full_name and checkpoint_key:
                    names[checkpoint_key] = full_name
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"corrupt {OBJECT_GRAPH_KEY} in {ckpt.prefix!r}: {err}") from None
    return names

"""Read and write TensorFlow-1 checkpoints (the "tensor bundle" format) with Python and numpy only.

A checkpoint `PREFIX` is two kinds of file:
- `PREFIX.index`: an SSTable (LevelDB's table format: data blocks of prefix-compressed keys with restart
  points, an index block, a 48-byte footer; each block followed by a compression byte and a masked
  crc32c). Key "" holds a BundleHeaderProto; every other key is a tensor name whose value is a
  BundleEntryProto (dtype, shape, shard_id, offset, size, crc32c of the tensor's bytes).
- `PREFIX.data-0000k-of-0000n`: the shards, raw little-endian tensor bytes at the entries' offsets.

Why by hand: transformers 5 dropped TensorFlow, and installing TensorFlow (~600 MB) just to read 400 MB
of floats is what users want to avoid. The protobuf messages are decoded with a small varint reader
because no installed package ships compiled `tensor_bundle` protos (tensorboard's compat/proto has
TensorShapeProto and DataType but not BundleEntryProto/BundleHeaderProto). crc32c comes from the
`crc32c` package (hardware-accelerated; a pure-Python CRC over 400 MB would take minutes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from crc32c import crc32c

from bertwwm.core.errors import UserError

TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB/TensorFlow table footer magic
FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c
NO_COMPRESSION = 0
BUNDLE_VERSION = 1  # TensorFlow's kTensorBundleVersion
_CRC_MASK_DELTA = 0xA282EAD8

# TensorFlow DataType enum values (tensorflow/core/framework/types.proto) for the dtypes numpy has.
_TF_TO_NUMPY = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
_NUMPY_TO_TF = {(dt.kind, dt.itemsize): code for code, dt in _TF_TO_NUMPY.items()}
_TF_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource", 21: "variant"}


def mask_crc(crc: int) -> int:
    """LevelDB's masking: CRCs of data that contains CRCs are rotated and offset."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------
# varints and the protobuf wire format


class _Corrupt(Exception):
    """Malformed bytes; turned into a UserError naming the file by the caller."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Corrupt("varint runs past the end of its buffer")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("varint longer than 10 bytes")


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values are encoded as their two's complement
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a serialised protobuf message."""
    out = []
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Corrupt("truncated fixed64 field")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise _Corrupt("length-delimited field runs past the end of its message")
            value = bytes(buf[pos:pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Corrupt("truncated fixed32 field")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise _Corrupt(f"unknown protobuf wire type {wire}")
        out.append((number, value))
    return out


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


# ---------------------------------------------------------------------------------------------------
# Bundle messages


@dataclass(frozen=True)
class TensorEntry:
    """One BundleEntryProto: where a tensor's bytes are and what they should hash to."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _decode_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, value in _fields(buf):
        if number == 2:
            size = 0
            for n, v in _fields(value):
                if n == 1:
                    size = _int64(v)
            dims.append(size)
        elif number == 3 and value:
            raise _Corrupt("tensor of unknown rank")
    return tuple(dims)


def _decode_entry(name: str, buf: bytes) -> TensorEntry:
    dtype_code = 0
    shape: tuple[int, ...] = ()
    shard_id = offset = size = crc = 0
    for number, value in _fields(buf):
        if number == 1:
            dtype_code = value
        elif number == 2:
            shape = _decode_shape(value)
        elif number == 3:
            shard_id = value
        elif number == 4:
            offset = value
        elif number == 5:
            size = value
        elif number == 6:
            crc = value
        elif number == 7:
            raise _Corrupt(f"tensor {name!r} is a partitioned (sliced) variable, which is not supported")
    if dtype_code not in _TF_TO_NUMPY:
        kind = _TF_NAMES.get(dtype_code, f"enum value {dtype_code}")
        raise _Corrupt(f"tensor {name!r} has dtype {kind}, which is not supported")
    if any(d < 0 for d in shape):
        raise _Corrupt(f"tensor {name!r} has a negative dimension {shape}")
    entry = TensorEntry(name, _TF_TO_NUMPY[dtype_code], shape, shard_id, offset, size, crc)
    if entry.nbytes != size:
        raise _Corrupt(f"tensor {name!r}: shape {shape} of {entry.dtype} needs {entry.nbytes} bytes, "
                       f"the entry says {size}")
    return entry


def _encode_entry(dtype_code: int, shape: tuple[int, ...], offset: int, size: int, crc: int,
                  shard_id: int = 0) -> bytes:
    shape_msg = b"".join(_field_bytes(2, _field_varint(1, d) if d else b"") for d in shape)
    return (_field_varint(1, dtype_code) + _field_bytes(2, shape_msg) + _field_varint(3, shard_id)
            + _field_varint(4, offset)
            + _field_varint(5, size) + struct.pack("<BI", 6 << 3 | 5, crc))


# ---------------------------------------------------------------------------------------------------
# SSTable reading


def _decode_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _read_varint(buf, pos)
    size, pos = _read_varint(buf, pos)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data):
        raise _Corrupt(f"block at byte {offset} (size {size}) runs past the end of the file: truncated")
    block = data[offset:offset + size]
    compression, stored = struct.unpack_from("<BI", data, offset + size)
    if mask_crc(crc32c(data[offset:offset + size + 1])) != stored:
        raise _Corrupt(f"checksum mismatch in the block at byte {offset}: the file is corrupt")
    if compression != NO_COMPRESSION:
        raise _Corrupt(f"block at byte {offset} uses compression type {compression}; TensorFlow's "
                       "checkpoints are uncompressed")
    return block


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("block shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Corrupt(f"block claims {num_restarts} restart points, more than fit")
    entries = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _read_varint(block, pos)
        non_shared, pos = _read_varint(block, pos)
        value_len, pos = _read_varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise _Corrupt("block entry runs out of its block")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def read_table(path: str | Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable file, in order, after checking every block's checksum."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError("checkpoint index file not found", path) from None
    try:
        if len(data) < FOOTER_SIZE:
            raise _Corrupt(f"only {len(data)} bytes, shorter than the {FOOTER_SIZE}-byte table footer: truncated")
        footer = data[-FOOTER_SIZE:]
        if struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0] != TABLE_MAGIC:
            raise _Corrupt("no table magic number at the end: not a TensorFlow checkpoint index, or truncated")
        _, _, pos = _decode_handle(footer)  # the metaindex block: TensorFlow leaves it empty
        index_offset, index_size, _ = _decode_handle(footer, pos)
        entries = []
        for _, handle in _block_entries(_read_block(data, index_offset, index_size)):
            offset, size, _ = _decode_handle(handle)
            entries.extend(_block_entries(_read_block(data, offset, size)))
        keys = [k for k, _ in entries]
        if any(a >= b for a, b in zip(keys, keys[1:])):
            raise _Corrupt("keys are not in strictly increasing order")
        return entries
    except _Corrupt as e:
        raise UserError(f"corrupt checkpoint index: {e}", path) from None


# ---------------------------------------------------------------------------------------------------
# Reading checkpoints


def data_file(prefix: str | Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


class CheckpointReader:
    """The tensors of a TF-1 checkpoint, by name. `prefix` is e.g. ".../bert_model.ckpt"."""

    def __init__(self, prefix: str | Path):
        self.prefix = Path(str(prefix).removesuffix(".index"))
        index = Path(f"{self.prefix}.index")
        if not index.is_file():
            raise UserError("checkpoint index not found (expected PREFIX.index next to PREFIX.data-*)", index)
        table = read_table(index)
        try:
            if not table or table[0][0] != b"":
                raise _Corrupt("no header entry (empty key)")
            self.num_shards = self._parse_header(table[0][1])
            self.entries: dict[str, TensorEntry] = {}
            for key, value in table[1:]:
                name = key.decode("utf-8")
                entry = _decode_entry(name, value)
                if entry.shard_id >= self.num_shards:
                    raise _Corrupt(f"tensor {name!r} is in shard {entry.shard_id} of {self.num_shards}")
                self.entries[name] = entry
        except (_Corrupt, UnicodeDecodeError) as e:
            raise UserError(f"corrupt checkpoint index: {e}", index) from None
        self._check_data_files()

    @staticmethod
    def _parse_header(buf: bytes) -> int:
        num_shards, endianness, min_consumer = 0, 0, 0
        for number, value in _fields(buf):
            if number == 1:
                num_shards = value
            elif number == 2:
                endianness = value
            elif number == 3:
                min_consumer = dict(_fields(value)).get(2, 0)
        if endianness != 0:
            raise _Corrupt("checkpoint was written big-endian; only little-endian checkpoints are supported")
        if min_consumer > BUNDLE_VERSION:
            raise _Corrupt(f"checkpoint needs a reader of bundle version {min_consumer}; this one reads "
                           f"version {BUNDLE_VERSION}")
        if num_shards < 1:
            raise _Corrupt(f"header says {num_shards} data shards")
        return num_shards

    def _check_data_files(self) -> None:
        needed = [0] * self.num_shards
        for e in self.entries.values():
            needed[e.shard_id] = max(needed[e.shard_id], e.offset + e.size)
        for shard, size in enumerate(needed):
            path = data_file(self.prefix, shard, self.num_shards)
            if not path.is_file():
                raise UserError(f"checkpoint data shard {shard + 1} of {self.num_shards} not found", path)
            actual = path.stat().st_size
            if actual < size:
                raise UserError(f"truncated checkpoint data file: has {actual} bytes, the index needs {size}", path)

    def names(self) -> list[str]:
        return list(self.entries)

    def read(self, name: str) -> np.ndarray:
        """One tensor, after checking its size and crc32c against the index."""
        entry = self.entries[name]
        path = data_file(self.prefix, entry.shard_id, self.num_shards)
        with open(path, "rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise UserError(f"truncated checkpoint data file: tensor {name!r} ends past the end", path)
        if crc32c(raw) != unmask_crc(entry.crc32c):
            raise UserError(f"checksum mismatch for tensor {name!r}: the data file is corrupt", path)
        return np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).astype(entry.dtype.newbyteorder("="))

    def read_all(self, names: list[str] | None = None) -> dict[str, np.ndarray]:
        return {n: self.read(n) for n in (self.names() if names is None else names)}


# ---------------------------------------------------------------------------------------------------
# Writing checkpoints


class _BlockBuilder:
    """Prefix-compressed entries with a restart point every `restart_interval` keys (LevelDB's layout)."""

    def __init__(self, restart_interval: int):
        self.restart_interval = restart_interval
        self.buf = bytearray()
        self.restarts = [0]
        self.count = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count < self.restart_interval:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buf))
            self.count = 0
        self.buf += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        self.buf += key[shared:] + value
        self.last_key = key
        self.count += 1

    def finish(self) -> bytes:
        return bytes(self.buf) + struct.pack(f"<{len(self.restarts)}I", *self.restarts) + \
            struct.pack("<I", len(self.restarts))

    def size_estimate(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (LevelDB's BytewiseComparator::FindShortestSeparator)."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)) and start[n] < 0xFF and start[n] + 1 < limit[n]:
        return start[:n] + bytes([start[n] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key >= key (LevelDB's FindShortSuccessor)."""
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


def write_table(path: str | Path, items: list[tuple[bytes, bytes]], block_size: int = 262144) -> None:
    """Write sorted (key, value) pairs as an uncompressed SSTable, laid out as TensorFlow's TableBuilder
    does (its 256 KiB default block size, restart points every 16 keys, shortened index keys)."""
    keys = [k for k, _ in items]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise ValueError("table keys must be unique and sorted")
    out = bytearray()

    def emit(block: bytes) -> bytes:
        handle = _varint(len(out)) + _varint(len(block))
        trailer = bytes([NO_COMPRESSION])
        out.extend(block + trailer + struct.pack("<I", mask_crc(crc32c(block + trailer))))
        return handle

    index = _BlockBuilder(restart_interval=1)
    block = _BlockBuilder(restart_interval=16)
    pending: tuple[bytes, bytes] | None = None  # (last key, handle) of a flushed block awaiting its index key
    for key, value in items:
        if pending is not None:
            # The index key must be >= every key of the flushed block and < every key of the next one.
            index.add(_shortest_separator(pending[0], key), pending[1])
            pending = None
        block.add(key, value)
        if block.size_estimate() >= block_size:
            pending = (block.last_key, emit(block.finish()))
            block = _BlockBuilder(restart_interval=16)
    if block.count or not items:
        pending = (block.last_key, emit(block.finish()))
    if pending is not None:
        index.add(_short_successor(pending[0]), pending[1])
    metaindex_handle = emit(_BlockBuilder(restart_interval=16).finish())
    index_handle = emit(index.finish())
    footer = (metaindex_handle + index_handle).ljust(FOOTER_SIZE - 8, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    out.extend(footer)
    Path(path).write_bytes(bytes(out))


def write_checkpoint(prefix: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """Write `tensors` as a one-shard TF-1 checkpoint: PREFIX.index and PREFIX.data-00000-of-00001."""
    prefix = Path(prefix)
    items = []
    offset = 0
    with open(data_file(prefix, 0, 1), "wb") as data:
        for name in sorted(tensors, key=lambda n: n.encode("utf-8")):
            array = np.asarray(tensors[name])
            code = _NUMPY_TO_TF.get((array.dtype.kind, array.dtype.itemsize))
            if code is None:
                raise UserError(f"tensor {name!r} has dtype {array.dtype}, which TF checkpoints here do not support")
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            data.write(raw)
            entry = _encode_entry(code, tuple(int(d) for d in array.shape), offset, len(raw), mask_crc(crc32c(raw)))
            items.append((name.encode("utf-8"), entry))
            offset += len(raw)
    version = _field_varint(1, BUNDLE_VERSION)
    header = _field_varint(1, 1) + _field_bytes(3, version)  # num_shards 1, little-endian (default 0)
    write_table(f"{prefix}.index", [(b"", header), *items])

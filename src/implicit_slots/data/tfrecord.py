"""TFRecord files of ``tf.train.Example`` records, read and written without TensorFlow or protobuf.

Record framing (TensorFlow's ``python_io``): ``uint64 length``, ``uint32 masked_crc32c(length)``,
``length`` bytes, ``uint32 masked_crc32c(data)``, little-endian. An Example is
``Features features = 1``; Features is ``map<string, Feature> feature = 1`` (map entries ``key = 1``,
``value = 2``); Feature is one of ``bytes_list = 1``, ``float_list = 2``, ``int64_list = 3``, each a list
``value = 1`` (floats and int64s packed or not).

A bytes list whose strings are all one byte long (how DeepMind's multi-object datasets store images and
masks) is decoded to a uint8 array at NumPy speed.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

FeatureValue = np.ndarray | list[bytes]


class TFRecordError(ValueError):
    """A malformed or truncated TFRecord file or Example (the message names file and record)."""


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


_BLOCK = 256  # bytes per block of the vectorised CRC
_CRC_TABLE_NP = np.asarray(_CRC_TABLE, np.uint32)


def _zero_shift_tables() -> np.ndarray:
    """``(4, 256)`` tables of the map "feed ``_BLOCK`` zero bytes", one table per register byte."""
    basis = []
    for bit in range(32):
        register = 1 << bit
        for _ in range(_BLOCK):
            register = _CRC_TABLE[register & 0xFF] ^ (register >> 8)
        basis.append(register)
    tables = np.zeros((4, 256), np.uint32)
    for k in range(4):
        for value in range(256):
            combined = 0
            for bit in range(8):
                if value >> bit & 1:
                    combined ^= basis[8 * k + bit]
            tables[k, value] = combined
    return tables


_SHIFT_TABLES: np.ndarray | None = None


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``.

    Long inputs are vectorised: the register is linear over GF(2), so the message is cut into
    ``_BLOCK``-byte blocks whose raw CRCs (register 0) are computed side by side, then folded together with
    the "shift by one block" map; the initial register 0xFFFFFFFF is applied by XOR-ing it into the first
    4 bytes (leading zero padding leaves a zero register unchanged).
    """
    global _SHIFT_TABLES
    if len(data) < 4 * _BLOCK:
        crc = 0xFFFFFFFF
        for byte in data:
            crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF
    if _SHIFT_TABLES is None:
        _SHIFT_TABLES = _zero_shift_tables()
    message = np.frombuffer(data, np.uint8).copy()
    message[:4] ^= 0xFF
    padded = np.concatenate([np.zeros((-len(message)) % _BLOCK, np.uint8), message])
    blocks = padded.reshape(-1, _BLOCK)  # (M, L)
    registers = np.zeros(blocks.shape[0], np.uint32)
    for column in blocks.T.astype(np.uint32):
        registers = _CRC_TABLE_NP[(registers ^ column) & 0xFF] ^ (registers >> 8)
    tables = _SHIFT_TABLES.tolist()
    t0, t1, t2, t3 = tables
    crc = 0
    for block_crc in registers.tolist():
        crc = t0[crc & 0xFF] ^ t1[crc >> 8 & 0xFF] ^ t2[crc >> 16 & 0xFF] ^ t3[crc >> 24] ^ block_crc
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add 0xa282ead8."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_records(path: Path, *, verify_crc: bool = False) -> Iterator[bytes]:
    """Yield the payload of every record of a TFRecord file (GZIP-compressed or plain, detected).

    Raises:
        TFRecordError: a truncated record or a CRC mismatch (with ``verify_crc``), naming file and record.
    """
    path = Path(path)
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as handle:
        index = 0
        while True:
            try:
                header = handle.read(12)
                if not header:
                    return
                (length,) = struct.unpack("<Q", header[:8]) if len(header) == 12 else (0,)
                data = handle.read(length) if len(header) == 12 else b""
                footer = handle.read(4) if len(header) == 12 else b""
            except (OSError, EOFError) as error:
                raise TFRecordError(f"{path}: record {index}: cannot read ({error})") from None
            if len(header) < 12:
                raise TFRecordError(f"{path}: record {index}: truncated header ({len(header)} of 12 bytes)")
            if len(data) < length or len(footer) < 4:
                raise TFRecordError(f"{path}: record {index}: truncated ({len(data)} of {length} bytes)")
            if verify_crc and (
                struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8])
                or struct.unpack("<I", footer)[0] != masked_crc32c(data)
            ):
                raise TFRecordError(f"{path}: record {index}: CRC mismatch")
            yield data
            index += 1


def write_records(path: Path, records: Iterable[bytes], *, compress: bool = True) -> None:
    """Write records to a TFRecord file, GZIP-compressed by default (as DeepMind's files are)."""
    opener = gzip.open if compress else open
    with opener(Path(path), "wb") as handle:
        for data in records:
            length = struct.pack("<Q", len(data))
            handle.write(length + struct.pack("<I", masked_crc32c(length)))
            handle.write(data + struct.pack("<I", masked_crc32c(data)))


# -- protobuf wire format ------------------------------------------------------------------------------
def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(buffer):
            raise TFRecordError("truncated varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(buffer: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) triples of a message; value is bytes for wire types 1, 2, 5."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(buffer, position)
            yield number, wire, value
        elif wire == 2:
            length, position = _varint(buffer, position)
            if position + length > len(buffer):
                raise TFRecordError("truncated length-delimited field")
            yield number, wire, buffer[position : position + length]
            position += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if position + size > len(buffer):
                raise TFRecordError("truncated fixed-size field")
            yield number, wire, buffer[position : position + size]
            position += size
        else:
            raise TFRecordError(f"unsupported wire type {wire}")


def _decode_bytes_list(buffer: bytes) -> FeatureValue:
    raw = np.frombuffer(buffer, np.uint8)
    if raw.size % 3 == 0 and (raw[0::3] == 0x0A).all() and (raw[1::3] == 1).all():
        return raw[2::3].copy()  # every string one byte long: a uint8 array
    values: list[bytes] = []
    for number, wire, value in _fields(buffer):
        if number == 1 and wire == 2:
            assert isinstance(value, bytes)
            values.append(value)
    return values


def _decode_numbers(buffer: bytes, kind: str) -> np.ndarray:
    values: list[np.ndarray] = []
    for number, wire, value in _fields(buffer):
        if number != 1:
            continue
        if kind == "float":
            assert isinstance(value, bytes)
            values.append(np.frombuffer(value, "<f4"))  # packed (wire 2) or one value (wire 5)
        elif wire == 2:
            assert isinstance(value, bytes)
            position, items = 0, []
            while position < len(value):
                item, position = _varint(value, position)
                items.append(item)
            values.append(np.array(items, np.uint64).astype(np.int64))
        else:
            assert isinstance(value, int)
            values.append(np.array([value], np.uint64).astype(np.int64))
    dtype = np.float32 if kind == "float" else np.int64
    return np.concatenate(values).astype(dtype) if values else np.zeros(0, dtype)


def decode_example(data: bytes) -> dict[str, FeatureValue]:
    """Decode a serialised ``tf.train.Example`` into ``name -> value``.

    Values: a uint8 array for a bytes list of one-byte strings, else ``list[bytes]``; float32 arrays for
    float lists; int64 arrays for int64 lists.
    """
    features: dict[str, FeatureValue] = {}
    for number, _, example_field in _fields(data):
        if number != 1 or not isinstance(example_field, bytes):
            continue
        for entry_number, _, entry in _fields(example_field):
            if entry_number != 1 or not isinstance(entry, bytes):
                continue
            key, feature = b"", b""
            for part_number, _, part in _fields(entry):
                if part_number == 1 and isinstance(part, bytes):
                    key = part
                elif part_number == 2 and isinstance(part, bytes):
                    feature = part
            for kind_number, _, payload in _fields(feature):
                assert isinstance(payload, bytes)
                if kind_number == 1:
                    features[key.decode()] = _decode_bytes_list(payload)
                elif kind_number == 2:
                    features[key.decode()] = _decode_numbers(payload, "float")
                elif kind_number == 3:
                    features[key.decode()] = _decode_numbers(payload, "int64")
    return features


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint((number << 3) | 2) + _encode_varint(len(payload)) + payload


def encode_example(features: Mapping[str, FeatureValue]) -> bytes:
    """Serialise a ``tf.train.Example``.

    Args:
        features: ``name -> value``; a uint8 array becomes a bytes list of one-byte strings (DeepMind's
            image/mask encoding), a ``list[bytes]`` a bytes list, a float array a packed float list, an
            integer array a packed int64 list.
    """
    entries = b""
    for name, value in features.items():
        if isinstance(value, list):
            feature = _length_delimited(1, b"".join(_length_delimited(1, v) for v in value))
        elif value.dtype == np.uint8:
            triples = np.empty((value.size, 3), np.uint8)  # (tag of field 1, length 1, the byte) per value
            triples[:, 0], triples[:, 1], triples[:, 2] = 0x0A, 1, value.ravel()
            feature = _length_delimited(1, triples.tobytes())
        elif np.issubdtype(value.dtype, np.floating):
            packed = value.astype("<f4").ravel().tobytes()
            feature = _length_delimited(2, _length_delimited(1, packed))
        elif np.issubdtype(value.dtype, np.integer):
            packed = b"".join(_encode_varint(int(v)) for v in value.ravel())
            feature = _length_delimited(3, _length_delimited(1, packed))
        else:
            raise TypeError(f"feature {name!r}: unsupported dtype {value.dtype}")
        entry = _length_delimited(1, name.encode()) + _length_delimited(2, feature)
        entries += _length_delimited(1, entry)
    return _length_delimited(1, entries)

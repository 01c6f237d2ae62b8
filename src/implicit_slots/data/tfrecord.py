"""TFRecord files of ``tf.train.Example`` records, read and written without TensorFlow or protobuf.

Record framing (TensorFlow's ``python_io``): ``uint64 length``, ``uint32 masked_crc32c(length)``,
``length`` bytes, ``uint32 masked_crc32c(data)``, little-endian. An Example is
``Features features = 1``; Features is ``map<string, Feature> feature = 1`` (map entries ``key = 1``,
``value = 2``); Feature is one of ``bytes_list = 1``, ``float_list = 2``, ``int64_list = 3``, each a list
``value = 1`` (floats and int64s packed or not).

A bytes list whose strings are all one byte long (how DeepMind's multi-object datasets store images and
masks) is decoded to a uint8 array at NumPy speed.

Reading verifies every record (both CRCs, the length against what is left of the file); any damage is one
:class:`TFRecordError` naming the file and the record index. CRC-32C comes from the ``crc32c`` package
(hardware-accelerated where the CPU has the instruction).
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import crc32c as _crc32c
import numpy as np

FeatureValue = np.ndarray | list[bytes]


class TFRecordError(ValueError):
    """A damaged, truncated or foreign TFRecord file or Example (the message names file and record)."""


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, the checksum TFRecord framing uses) of ``data``, from the ``crc32c`` package."""
    return int(_crc32c.crc32c(data))


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: the CRC-32C rotated right by 15 bits plus 0xa282ead8 (modulo 2^32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 1 << 24  # bytes per read of a payload: memory follows the data, not the announced length


def download_hint(start: bytes) -> str:
    """Why a file that should be a TFRecord may be something else, judged by its first bytes ("" if no clue).

    An HTML page (a failed download saves the server's error page under the file's name) and a Git LFS
    pointer (a clone without ``git lfs pull``) are recognised.
    """
    head = start.lstrip().lower()
    if head.startswith((b"<!doctype", b"<html")):
        return "it starts like an HTML page (a failed download saves the error page): download it again"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the data: fetch the file itself (git lfs pull)"
    return ""


def _read_exactly(handle: io.BufferedIOBase, length: int) -> bytes:
    """Up to ``length`` bytes, read in chunks (a damaged length cannot allocate more than the file holds)."""
    if length <= _READ_CHUNK:
        return handle.read(length)
    chunks = []
    remaining = length
    while remaining:
        chunk = handle.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_records(path: Path) -> Iterator[bytes]:
    """Yield the payload of every record of a TFRecord file (GZIP-compressed or plain, detected).

    Every record is checked before it is yielded: the masked CRC-32C of its length field and of its
    payload, and that the file holds as many bytes as the length announces.

    Raises:
        TFRecordError: naming the file and the record index: a file that is not a TFRecord (with a hint
            for an HTML page or a Git LFS pointer), a CRC mismatch, a truncated record, a length larger
            than what is left of the file, or a corrupt GZIP stream.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        start = raw.read(64)
    hint = download_hint(start)
    if hint:
        raise TFRecordError(f"{path}: record 0: not a TFRecord file: {hint}")
    compressed = start.startswith(_GZIP_MAGIC)
    left = None if compressed else path.stat().st_size  # bytes left after the read position (plain files)
    index = 0
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
            while True:
                header = handle.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise TFRecordError(
                        f"{path}: record {index}: truncated header ({len(header)} of 12 bytes)"
                    )
                length, length_crc = struct.unpack("<QI", header)
                if length_crc != masked_crc32c(header[:8]):
                    if index == 0:
                        raise TFRecordError(
                            f"{path}: record 0: not a TFRecord file (the first record's length checksum "
                            "does not match; the file is of another kind or its first bytes are damaged)"
                        )
                    raise TFRecordError(
                        f"{path}: record {index}: length CRC mismatch (damaged record header)"
                    )
                if left is not None:
                    left -= 12
                    if length + 4 > left:
                        raise TFRecordError(
                            f"{path}: record {index}: length {length} is larger than what is left of the "
                            f"file ({left} bytes, 4 of them for the payload's CRC)"
                        )
                    left -= length + 4
                data = _read_exactly(handle, length)
                footer = handle.read(4)
                if len(data) < length or len(footer) < 4:
                    raise TFRecordError(
                        f"{path}: record {index}: truncated (the header announces {length} bytes and a "
                        f"4-byte CRC, the file holds {len(data) + len(footer)})"
                    )
                if struct.unpack("<I", footer)[0] != masked_crc32c(data):
                    raise TFRecordError(f"{path}: record {index}: data CRC mismatch (damaged payload)")
                yield data
                index += 1
    except (OSError, EOFError, zlib.error) as error:
        what = "corrupt GZIP stream" if compressed else "cannot read"
        raise TFRecordError(f"{path}: record {index}: {what} ({type(error).__name__}: {error})") from None


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
            return result & 0xFFFFFFFFFFFFFFFF, position  # protobuf keeps the low 64 bits
        shift += 7
        if shift >= 70:
            raise TFRecordError("varint longer than 10 bytes")


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
    for number, _, value in _fields(buffer):
        if number == 1 and isinstance(value, bytes):
            values.append(value)
    return values


def _decode_numbers(buffer: bytes, kind: str) -> np.ndarray:
    values: list[np.ndarray] = []
    for number, wire, value in _fields(buffer):
        if number != 1:
            continue
        if kind == "float":
            if wire not in (2, 5) or not isinstance(value, bytes) or len(value) % 4:
                raise TFRecordError(f"float list: a value of wire type {wire} is not float32 data")
            values.append(np.frombuffer(value, "<f4"))  # packed (wire 2) or one value (wire 5)
        elif wire == 2 and isinstance(value, bytes):
            position, items = 0, []
            while position < len(value):
                item, position = _varint(value, position)
                items.append(item)
            values.append(np.array(items, np.uint64).astype(np.int64))
        elif wire == 0 and isinstance(value, int):
            values.append(np.array([value], np.uint64).astype(np.int64))
        else:
            raise TFRecordError(f"int64 list: a value of wire type {wire} is not a varint")
    dtype = np.float32 if kind == "float" else np.int64
    return np.concatenate(values).astype(dtype) if values else np.zeros(0, dtype)


def decode_example(data: bytes) -> dict[str, FeatureValue]:
    """Decode a serialised ``tf.train.Example`` into ``name -> value``.

    Values: a uint8 array for a bytes list of one-byte strings, else ``list[bytes]``; float32 arrays for
    float lists; int64 arrays for int64 lists.

    Raises:
        TFRecordError: the bytes are not a well-formed Example (what is wrong is in the message).
    """
    try:
        return _decode_example(data)
    except UnicodeDecodeError as error:
        raise TFRecordError(f"a feature name is not UTF-8 ({error})") from None


def _decode_example(data: bytes) -> dict[str, FeatureValue]:
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
                if not isinstance(payload, bytes):
                    raise TFRecordError(f"feature {key!r}: the value list is not length-delimited")
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

"""The TFRecord reader/writer and tf.train.Example codec (no TensorFlow)."""

from __future__ import annotations

import contextlib
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from implicit_slots.data.tfrecord import (
    TFRecordError,
    crc32c,
    decode_example,
    encode_example,
    masked_crc32c,
    read_records,
    write_records,
)


def test_crc32c_known_values() -> None:
    # RFC 3720 test vector and the standard check value of CRC-32C.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert masked_crc32c(b"") == ((0 >> 15 | 0 << 17) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("length", [0, 1, 7, 1024, 70001])
def test_crc32c_matches_its_bytewise_definition(length: int) -> None:
    data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()
    crc = 0xFFFFFFFF
    for byte in data:  # one byte at a time, reflected polynomial 0x82F63B78
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    assert crc32c(data) == crc ^ 0xFFFFFFFF


def test_example_round_trip_all_feature_kinds() -> None:
    features = {
        "image": np.arange(60, dtype=np.uint8),
        "names": [b"cube", b"", b"a longer string"],
        "x": np.array([0.5, -1.25, 3.0], np.float32),
        "codes": np.array([0, 1, 300, -2], np.int64),
    }
    decoded = decode_example(encode_example(features))
    assert decoded.keys() == features.keys()
    np.testing.assert_array_equal(decoded["image"], features["image"])
    assert decoded["image"].dtype == np.uint8
    assert decoded["names"] == features["names"]
    np.testing.assert_array_equal(decoded["x"], features["x"])
    np.testing.assert_array_equal(decoded["codes"], features["codes"])


def test_hand_written_example_bytes_decode() -> None:
    # Example{features{feature{key:"v" value{int64_list{value:[7] (unpacked)}}}}} written by hand.
    int64_list = b"\x08\x07"  # field 1 varint 7
    feature = b"\x1a" + bytes([len(int64_list)]) + int64_list  # field 3
    entry = b"\x0a\x01v" + b"\x12" + bytes([len(feature)]) + feature
    features = b"\x0a" + bytes([len(entry)]) + entry
    example = b"\x0a" + bytes([len(features)]) + features
    np.testing.assert_array_equal(decode_example(example)["v"], [7])


@pytest.mark.parametrize("compress", [True, False])
def test_records_round_trip_and_framing(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "x.tfrecords"
    records = [b"first", b"", bytes(range(256))]
    write_records(path, records, compress=compress)
    assert list(read_records(path)) == records
    raw = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert length == 5 and struct.unpack("<I", raw[8:12])[0] == masked_crc32c(raw[:8])
    assert struct.unpack("<I", raw[17:21])[0] == masked_crc32c(b"first")


def test_masked_crc_matches_a_record_written_by_tensorflow() -> None:
    # The first 12 bytes of a TFRecord holding one 3-byte record, as TensorFlow's TFRecordWriter writes
    # them; the masked CRCs follow TensorFlow's crc32c.h (rotate right by 15, add 0xa282ead8).
    length = struct.pack("<Q", 3)
    crc = crc32c(length)
    assert masked_crc32c(length) == ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF
    assert crc32c(b"") == 0 and masked_crc32c(b"") == 0xA282EAD8


# -- damage: every kind is one TFRecordError naming the file and the record --------------------------------
def _payloads() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in (100, 300, 50)]


def _plain_file(tmp_path: Path, name: str = "t.tfrecords") -> tuple[Path, bytes]:
    path = tmp_path / name
    write_records(path, _payloads(), compress=False)
    return path, path.read_bytes()


def _offset(record: int) -> int:
    """Byte offset of a record's header in the plain file of :func:`_payloads`."""
    return sum(16 + len(data) for data in _payloads()[:record])


@pytest.mark.parametrize("compress", [False, True])
def test_a_flipped_payload_byte_is_a_data_crc_mismatch(tmp_path: Path, compress: bool) -> None:
    path, raw = _plain_file(tmp_path)
    damaged = bytearray(raw)
    damaged[_offset(1) + 12 + 7] ^= 0x01  # one bit of record 1's payload
    path.write_bytes(gzip.compress(bytes(damaged)) if compress else bytes(damaged))
    with pytest.raises(TFRecordError, match=r"t\.tfrecords: record 1: data CRC mismatch"):
        list(read_records(path))


@pytest.mark.parametrize("byte", [0, 3])
def test_a_flipped_data_crc_byte_is_a_data_crc_mismatch(tmp_path: Path, byte: int) -> None:
    path, raw = _plain_file(tmp_path)
    damaged = bytearray(raw)
    damaged[_offset(2) + 12 + 50 + byte] ^= 0x80  # record 2's footer (its payload is 50 bytes)
    path.write_bytes(bytes(damaged))
    with pytest.raises(TFRecordError, match=r"record 2: data CRC mismatch"):
        list(read_records(path))


@pytest.mark.parametrize("byte", [0, 5, 9])
def test_a_damaged_record_header_is_a_length_crc_mismatch(tmp_path: Path, byte: int) -> None:
    path, raw = _plain_file(tmp_path)
    damaged = bytearray(raw)
    damaged[_offset(1) + byte] ^= 0x10  # the length field (0, 5) or its CRC (9)
    path.write_bytes(bytes(damaged))
    with pytest.raises(TFRecordError, match=r"t\.tfrecords: record 1: length CRC mismatch"):
        list(read_records(path))


def test_a_damaged_first_header_says_not_a_tfrecord(tmp_path: Path) -> None:
    path, raw = _plain_file(tmp_path)
    path.write_bytes(b"\xff" + raw[1:])
    with pytest.raises(TFRecordError, match=r"t\.tfrecords: record 0: not a TFRecord file"):
        list(read_records(path))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (_offset(1) + 5, r"record 1: truncated header \(5 of 12 bytes\)"),
        (_offset(1) + 12 + 299, r"record 1: (length 300 is larger than what is left|truncated)"),
        (_offset(3) - 2, r"record 2: (length 50 is larger than what is left|truncated)"),
    ],
)
def test_a_truncated_file_names_the_record(tmp_path: Path, compress: bool, cut: int, message: str) -> None:
    path, raw = _plain_file(tmp_path)
    path.write_bytes(gzip.compress(raw[:cut]) if compress else raw[:cut])
    with pytest.raises(TFRecordError, match=rf"t\.tfrecords: {message}"):
        list(read_records(path))


@pytest.mark.parametrize("compress", [False, True])
def test_an_impossible_length_is_caught_before_it_is_allocated(tmp_path: Path, compress: bool) -> None:
    # A header whose CRC is right but whose length (1 TiB) exceeds the file: no MemoryError, one message.
    path, raw = _plain_file(tmp_path)
    length = struct.pack("<Q", 1 << 40)
    header = length + struct.pack("<I", masked_crc32c(length))
    damaged = raw[: _offset(1)] + header + raw[_offset(1) + 12 :]
    path.write_bytes(gzip.compress(damaged) if compress else damaged)
    expected = "truncated" if compress else "length 1099511627776 is larger than what is left of the file"
    with pytest.raises(TFRecordError, match=rf"t\.tfrecords: record 1: {expected}"):
        list(read_records(path))


def test_a_cut_gzip_stream_is_a_corrupt_stream(tmp_path: Path) -> None:
    path, raw = _plain_file(tmp_path)
    path.write_bytes(gzip.compress(raw)[:-30])
    with pytest.raises(TFRecordError, match=r"t\.tfrecords: record \d: (corrupt GZIP stream|truncated)"):
        list(read_records(path))


def test_a_damaged_gzip_checksum_is_a_corrupt_stream(tmp_path: Path) -> None:
    path, raw = _plain_file(tmp_path)
    compressed = bytearray(gzip.compress(raw))
    compressed[-6] ^= 0xFF  # the GZIP trailer's CRC-32 of the whole stream
    path.write_bytes(bytes(compressed))
    with pytest.raises(TFRecordError, match=r"t\.tfrecords: record 3: corrupt GZIP stream \(BadGzipFile"):
        list(read_records(path))


def test_damaged_deflate_data_is_one_tfrecord_error(tmp_path: Path) -> None:
    path = tmp_path / "t.tfrecords"
    write_records(path, [bytes(2000), b"x" * 3000, bytes(500)], compress=False)
    compressed = gzip.compress(path.read_bytes())  # compressible: real deflate blocks; 10-byte header
    for position in range(10, len(compressed) - 8, 3):  # every third byte of the deflate stream
        damaged = bytearray(compressed)
        damaged[position] ^= 0x55
        path.write_bytes(bytes(damaged))
        with pytest.raises(TFRecordError, match=r"t\.tfrecords: record \d: "):
            list(read_records(path))


@pytest.mark.parametrize(
    ("start", "hint"),
    [
        (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n", "HTML page"),
        (b"\n  <html lang='en'><head><title>Sign in</title></head></html>", "HTML page"),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 10995116277\n",
            "Git LFS pointer",
        ),
    ],
)
def test_a_downloaded_page_or_lfs_pointer_gets_a_hint(tmp_path: Path, start: bytes, hint: str) -> None:
    path = tmp_path / "tetrominoes_train.tfrecords"
    path.write_bytes(start)
    with pytest.raises(
        TFRecordError, match=rf"tetrominoes_train\.tfrecords: record 0: not a TFRecord.*{hint}"
    ):
        list(read_records(path))


def test_another_kind_of_file_is_not_a_tfrecord(tmp_path: Path) -> None:
    path = tmp_path / "notes.tfrecords"
    path.write_bytes(b"just some text that is long enough for a header\n" * 3)
    with pytest.raises(TFRecordError, match=r"notes\.tfrecords: record 0: not a TFRecord file"):
        list(read_records(path))


def test_a_malformed_example_is_a_tfrecord_error_never_another_exception() -> None:
    # Random byte changes of a valid Example (as a writer bug would produce; the CRCs would pass).
    example = encode_example(
        {
            "image": np.arange(30, dtype=np.uint8),
            "names": [b"ab", b"c"],
            "x": np.array([0.5, 1.0], np.float32),
            "codes": np.array([1, 300, -2], np.int64),
        }
    )
    rng = np.random.default_rng(0)
    for _ in range(3000):
        damaged = bytearray(example)
        for position in rng.integers(0, len(damaged), rng.integers(1, 4)):
            damaged[position] = rng.integers(0, 256)
        with contextlib.suppress(TFRecordError):  # any other exception fails the test
            decode_example(bytes(damaged))
    varint_of_eleven_bytes = b"\x08" + b"\xff" * 10 + b"\x01"
    with pytest.raises(TFRecordError, match="varint longer than 10 bytes"):
        decode_example(b"\x0a\x0c" + varint_of_eleven_bytes)

"""The TFRecord reader/writer and tf.train.Example codec (no TensorFlow)."""

from __future__ import annotations

import gzip
import struct

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
def test_records_round_trip_and_framing(tmp_path, compress: bool) -> None:
    path = tmp_path / "x.tfrecords"
    records = [b"first", b"", bytes(range(256))]
    write_records(path, records, compress=compress)
    assert list(read_records(path, verify_crc=True)) == records
    raw = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert length == 5 and struct.unpack("<I", raw[8:12])[0] == masked_crc32c(raw[:8])


def test_truncated_and_corrupt_records_name_the_file(tmp_path) -> None:
    path = tmp_path / "t.tfrecords"
    write_records(path, [b"a" * 100, b"b" * 100], compress=False)
    data = path.read_bytes()
    (tmp_path / "cut.tfrecords").write_bytes(data[:-30])
    with pytest.raises(TFRecordError, match=r"cut.tfrecords: record 1: truncated"):
        list(read_records(tmp_path / "cut.tfrecords"))
    flipped = bytearray(data)
    flipped[20] ^= 0xFF
    (tmp_path / "bad.tfrecords").write_bytes(bytes(flipped))
    with pytest.raises(TFRecordError, match=r"bad.tfrecords: record 0: CRC mismatch"):
        list(read_records(tmp_path / "bad.tfrecords", verify_crc=True))
    gz = tmp_path / "cut.gz.tfrecords"
    gz.write_bytes(gzip.compress(data)[:-25])
    with pytest.raises(TFRecordError, match=r"cut\.gz\.tfrecords"):
        list(read_records(gz))


@pytest.mark.parametrize("length", [1023, 1024, 1025, 4099, 70001])
def test_vectorised_crc32c_matches_bytewise(length: int) -> None:
    data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8).tobytes()
    crc = 0xFFFFFFFF
    for byte in data:  # the definition, one byte at a time (reflected polynomial 0x82F63B78)
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    assert crc32c(data) == crc ^ 0xFFFFFFFF

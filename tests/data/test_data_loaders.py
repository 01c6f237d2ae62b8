"""Folder loaders against tiny fixture folders written here (images come from the procedural datasets)."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from implicit_slots.data import build_dataset
from implicit_slots.data.images import ImageReadError, crop_box, read_rgb
from implicit_slots.data.loaders.multi_object import CLEVR_WITH_MASKS, TETROMINOES
from implicit_slots.data.schema import properties_from_objects
from implicit_slots.data.tfrecord import TFRecordError, encode_example, write_records


def _clevr_lite_png(index: int, size: int = 32) -> tuple[np.ndarray, list[dict]]:
    ds = build_dataset("clevr-lite", "train", image_size=size, seed=9, num_samples=100)
    sample = ds[index]
    image = np.round(sample["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    return image, ds.scene(index)["objects"]


def _write_png(path: Path, image: np.ndarray, mode: str = "RGBA") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image)
    (picture.convert(mode) if mode != "RGB" else picture).save(path)


# -- CLEVR v1.0 ----------------------------------------------------------------------------------------
@pytest.fixture
def clevr_root(tmp_path: Path) -> Path:
    root = tmp_path / "CLEVR_v1.0"
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        scenes = []
        for i in range(count):
            image, objects = _clevr_lite_png(i + 10 * len(split))
            name = f"CLEVR_{split}_{i:06d}.png"
            _write_png(root / "images" / split / name, np.pad(image, ((0, 0), (8, 8), (0, 0))))  # 32x48 RGBA
            if split == "train" and i == 1:  # a 7-object scene: CLEVR6 drops it
                objects = (objects * 7)[:7]
            scenes.append({"split": split, "image_index": i, "image_filename": name, "objects": objects})
        if split != "test":
            (root / "scenes").mkdir(exist_ok=True)
            (root / "scenes" / f"CLEVR_{split}_scenes.json").write_text(
                json.dumps({"info": {}, "scenes": scenes})
            )
    return root


def test_clevr_properties_and_clevr6_filter(clevr_root: Path) -> None:
    ds = build_dataset("clevr", "train", image_size=16, root=clevr_root)
    assert (len(ds), ds.num_objects_max, ds.has_masks, ds.has_properties) == (3, 10, False, True)
    s = ds[1]
    assert set(s) == {"image", "properties"} and s["image"].shape == (3, 16, 16)
    scenes = json.loads((clevr_root / "scenes" / "CLEVR_train_scenes.json").read_text())["scenes"]
    np.testing.assert_array_equal(s["properties"].numpy(), properties_from_objects(scenes[1]["objects"], 10))
    clevr6 = build_dataset("clevr6", "train", image_size=16, root=clevr_root)
    assert len(clevr6) == 2 and clevr6.num_objects_max == 6
    assert [p.name for p in clevr6.files] == ["CLEVR_train_000000.png", "CLEVR_train_000002.png"]
    assert clevr6[1]["properties"].shape == (6, 19)
    test = build_dataset("clevr", "test", image_size=16, root=clevr_root)
    assert len(test) == 2 and not test.has_properties and set(test[0]) == {"image"}
    with pytest.raises(ValueError, match="test split has no scenes"):
        build_dataset("clevr6", "test", root=clevr_root)


def test_clevr_rgba_is_read_as_rgb_and_crops(clevr_root: Path) -> None:
    image = read_rgb(clevr_root / "images" / "val" / "CLEVR_val_000000.png")
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    ds = build_dataset("clevr", "val", image_size=32, root=clevr_root, crop="center")
    np.testing.assert_allclose(ds[0]["image"].numpy(), image[:, 8:40].transpose(2, 0, 1) / 255.0)
    assert crop_box("locatello", 240, 320) == (29, 221, 64, 256)
    assert crop_box("locatello-scaled", 320, 480) == (39, 295, 96, 384)
    with pytest.raises(ValueError, match="unknown crop 'middle'"):
        build_dataset("clevr", "val", root=clevr_root, crop="middle")


def test_clevr_bad_inputs_name_the_problem(clevr_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pass root="):
        build_dataset("clevr")
    with pytest.raises(FileNotFoundError, match=r"folder not found: .*nowhere"):
        build_dataset("clevr", root=tmp_path / "nowhere")
    scenes_path = clevr_root / "scenes" / "CLEVR_val_scenes.json"
    scenes = json.loads(scenes_path.read_text())
    scenes["scenes"][1]["image_filename"] = "CLEVR_val_000099.png"
    scenes_path.write_text(json.dumps(scenes))
    with pytest.raises(FileNotFoundError, match=r"CLEVR_val_scenes.json: scene 1 names CLEVR_val_000099.png"):
        build_dataset("clevr", "val", root=clevr_root)
    scenes_path.write_text("{not json")
    with pytest.raises(ValueError, match=r"CLEVR_val_scenes\.json: not a CLEVR scenes file"):
        build_dataset("clevr", "val", root=clevr_root)
    bad_scene = json.loads((clevr_root / "scenes" / "CLEVR_train_scenes.json").read_text())
    bad_scene["scenes"][0]["objects"][0]["color"] = "pink"
    (clevr_root / "scenes" / "CLEVR_train_scenes.json").write_text(json.dumps(bad_scene))
    bad_scene["scenes"][2]["objects"][1]["3d_coords"] = [0.0, 1.0]
    (clevr_root / "scenes" / "CLEVR_train_scenes.json").write_text(json.dumps(bad_scene))
    train = build_dataset("clevr", "train", root=clevr_root)
    scene_0 = r"CLEVR_train_scenes\.json: scene 0 \(CLEVR_train_000000\.png\)"
    with pytest.raises(ValueError, match=scene_0 + r": object 0: color='pink' is not one of"):
        train[0]
    with pytest.raises(
        ValueError, match=r"CLEVR_train_scenes\.json: scene 2 .*: object 1: 3d_coords has 2 values"
    ):
        train[2]
    clevr6 = build_dataset("clevr6", "train", root=clevr_root)  # drops scene 1: its indices shift
    with pytest.raises(ValueError, match=r"CLEVR_train_scenes\.json: scene 2 \(CLEVR_train_000002\.png\)"):
        clevr6[1]


# -- image files -----------------------------------------------------------------------------------------
def test_image_modes_and_corrupt_files(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    _write_png(tmp_path / "rgba.png", rgb, "RGBA")
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgba.png"), rgb)
    _write_png(tmp_path / "gray.png", rgb, "L")
    gray = read_rgb(tmp_path / "gray.png")
    assert gray.shape == (6, 5, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    deep = (np.arange(30, dtype=np.uint16).reshape(6, 5) * 2000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(
        read_rgb(tmp_path / "deep.png")[..., 1], np.round(deep.astype(np.int64) * 255 / 65535)
    )
    full = tmp_path / "full.png"
    _write_png(full, np.zeros((64, 64, 3), np.uint8) + rgb[:1, :1], "RGB")
    (tmp_path / "cut.png").write_bytes(full.read_bytes()[:60])
    with pytest.raises(ImageReadError, match=r"cut.png: cannot read image"):
        read_rgb(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=r"junk\.png"):
        read_rgb(tmp_path / "junk.png")


# -- CLEVR-Mirror ----------------------------------------------------------------------------------------
@pytest.fixture
def mirror_root(tmp_path: Path) -> Path:
    root = tmp_path / "clevr_mirror"
    for i in range(20):
        image, objects = _clevr_lite_png(i % 4, size=16)
        _write_png(root / "images" / f"CLEVR_new_{i:010d}.png", image, "RGB")
        (root / "scenes").mkdir(exist_ok=True)
        (root / "scenes" / f"CLEVR_new_{i:010d}.json").write_text(json.dumps({"objects": objects}))
    return root


def test_clevr_mirror_split_sizes_and_order(mirror_root: Path) -> None:
    splits = {
        s: build_dataset("clevr-mirror", s, image_size=16, root=mirror_root) for s in ("train", "val", "test")
    }
    assert [len(d) for d in splits.values()] == [14, 3, 3]
    names = [p.name for d in splits.values() for p in d.files]
    assert names == sorted(names) and len(set(names)) == 20
    s = splits["val"][0]
    assert s["properties"].shape == (10, 19) and s["image"].shape == (3, 16, 16)
    assert len(build_dataset("clevr-mirror", "train", root=mirror_root, num_samples=5)) == 5


def test_clevr_mirror_bad_inputs(mirror_root: Path, tmp_path: Path) -> None:
    (mirror_root / "scenes" / "CLEVR_new_0000000003.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"CLEVR_new_0000000003.png has no scene file"):
        build_dataset("clevr-mirror", root=mirror_root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*.png images in .*empty"):
        build_dataset("clevr-mirror", root=tmp_path / "empty")


def test_check_files_skips_and_counts_bad_images(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for i in range(10):
        _write_png(root / f"{i:02d}.png", np.full((8, 8, 3), i * 20, np.uint8), "RGB")
    (root / "03.png").write_bytes(b"broken")
    with pytest.raises(ImageReadError, match=r"03\.png"):
        build_dataset("clevr-mirror", "train", image_size=8, root=root)[3]
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) of 7, first: .*03.png"):
        ds = build_dataset("clevr-mirror", "train", image_size=8, root=root, check_files=True)
    assert len(ds) == 6 and all(p.name != "03.png" for p in ds.files)


# -- DeepMind TFRecords ----------------------------------------------------------------------------------
def _tetromino_record(index: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    ds = build_dataset("tetrominoes", "train", image_size=35, seed=3, num_samples=50)
    s = ds[index]
    image = np.round(s["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)  # (35, 35, 3)
    masks = (s["masks"].numpy() * 255).astype(np.uint8)[..., None]  # (4, 35, 35, 1)
    features = {
        "image": image,
        "mask": masks,
        "x": np.zeros(4, np.float32),
        "color": np.zeros((4, 3), np.float32),
    }
    return encode_example(features), image, masks[..., 0].argmax(0)


def test_dm_tetrominoes_converts_once_and_reads_masks(tmp_path: Path) -> None:
    records, images, labels = zip(*(_tetromino_record(i) for i in range(20)))
    write_records(tmp_path / TETROMINOES.file, records)
    ds = build_dataset("dm-tetrominoes", "val", image_size=35, root=tmp_path)
    assert len(ds) == 3 and ds.num_objects_max == 3  # records 14..16 of 20
    s = ds[0]
    np.testing.assert_array_equal(np.round(s["image"].numpy() * 255).transpose(1, 2, 0), images[14])
    np.testing.assert_array_equal(s["masks"].numpy().argmax(0), labels[14])
    converted = list((tmp_path / "converted").iterdir())
    assert len(converted) == 1 and (converted[0] / "meta.json").is_file()
    mtime = (converted[0] / "meta.json").stat().st_mtime_ns
    again = build_dataset("dm-tetrominoes", "train", image_size=64, root=tmp_path)
    assert len(again) == 14 and again[0]["masks"].shape == (4, 64, 64)
    assert (converted[0] / "meta.json").stat().st_mtime_ns == mtime  # not converted twice


def test_dm_multi_dsprites_hwk_layout_and_gray_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (64, 64))
    masks = (labels[..., None] == np.arange(4)).astype(np.uint8)[..., None] * 255  # (64, 64, 4, 1)
    image = rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)
    write_records(
        tmp_path / "multi_dsprites_binarized.tfrecords", [encode_example({"image": image, "mask": masks})] * 4
    )
    ds = build_dataset("dm-multi-dsprites", "train", image_size=64, root=tmp_path, variant="binarized")
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and torch.equal(s["image"][0], s["image"][2])
    np.testing.assert_array_equal(s["masks"].numpy().argmax(0), labels)
    with pytest.raises(ValueError, match="unknown variant 'plain'"):
        build_dataset("dm-multi-dsprites", root=tmp_path, variant="plain")
    with pytest.raises(FileNotFoundError, match=r"multi_dsprites_colored_on_grayscale\.tfrecords"):
        build_dataset("dm-multi-dsprites", root=tmp_path)


def _clevr_with_masks_record(num_objects: int) -> bytes:
    h, w = CLEVR_WITH_MASKS.image_shape[:2]
    labels = np.zeros((h, w), np.int64)
    for k in range(num_objects):  # odd entities first, then even ones: some entities stay empty
        labels[20 * k : 20 * k + 10, 70:90] = 2 * k + 1 if k < 5 else 2 * (k - 5) + 2
    masks = (labels[None] == np.arange(11)[:, None, None]).astype(np.uint8)[..., None] * 255
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = (labels * 20).astype(np.uint8)
    return encode_example({"image": image, "mask": masks, "visibility": np.ones(11, np.float32)})


def test_dm_clevr6_filter_counts_foreground_masks(tmp_path: Path) -> None:
    counts = [3, 7, 6, 10, 5, 4, 6, 2, 1, 6]  # 10 records: train = first 7
    write_records(tmp_path / CLEVR_WITH_MASKS.file, [_clevr_with_masks_record(n) for n in counts])
    full = build_dataset("dm-clevr-with-masks", "train", image_size=32, root=tmp_path)
    assert len(full) == 7 and full.num_objects_max == 10
    clevr6 = build_dataset(
        "dm-clevr6", "train", image_size=64, root=tmp_path, crop="none", resample="nearest"
    )
    assert len(clevr6) == 5 and clevr6.indices == [0, 2, 4, 5, 6] and clevr6.num_objects_max == 6
    masks = clevr6[1]["masks"]  # record 2: six objects, renumbered 1..6
    assert masks.shape == (7, 64, 64) and bool((masks.sum(dim=(1, 2)) > 0).all())
    assert torch.equal(masks.sum(0), torch.ones(64, 64))


def test_dm_truncated_and_malformed_records(tmp_path: Path) -> None:
    data = _tetromino_record(0)[0]
    write_records(tmp_path / TETROMINOES.file, [data, data])
    raw = (tmp_path / TETROMINOES.file).read_bytes()
    (tmp_path / TETROMINOES.file).write_bytes(gzip.compress(gzip.decompress(raw)[:-100]))
    with pytest.raises(TFRecordError, match=r"tetrominoes_train.tfrecords: record 1: truncated"):
        build_dataset("dm-tetrominoes", root=tmp_path)
    assert list((tmp_path / "converted").iterdir()) == []  # no entry, no temporary folder
    write_records(tmp_path / TETROMINOES.file, [encode_example({"image": np.zeros(10, np.uint8)})])
    with pytest.raises(TFRecordError, match=r"record 0: feature 'image' should hold 3675 one-byte values"):
        build_dataset("dm-tetrominoes", root=tmp_path)


def test_dm_damage_in_the_last_record_stops_the_conversion_before_any_sample(tmp_path: Path) -> None:
    records = [_tetromino_record(i)[0] for i in range(6)]
    write_records(tmp_path / TETROMINOES.file, records, compress=False)
    raw = bytearray((tmp_path / TETROMINOES.file).read_bytes())
    raw[-100] ^= 0x01  # one bit of the last record's payload: a silently wrong mask without the CRC check
    (tmp_path / TETROMINOES.file).write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(TFRecordError, match=r"tetrominoes_train\.tfrecords: record 5: data CRC mismatch"):
        build_dataset("dm-tetrominoes", root=tmp_path, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "converted").iterdir()) == []
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_dm_html_page_saved_as_the_file_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / TETROMINOES.file).write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    with pytest.raises(TFRecordError, match=r"tetrominoes_train\.tfrecords: record 0: .*HTML page"):
        build_dataset("dm-tetrominoes", root=tmp_path)


def test_dm_a_damaged_conversion_is_named_not_reused_silently(tmp_path: Path) -> None:
    write_records(tmp_path / TETROMINOES.file, [_tetromino_record(i)[0] for i in range(4)])
    build_dataset("dm-tetrominoes", root=tmp_path)
    (folder,) = (tmp_path / "converted").iterdir()
    np.save(folder / "labels_00000.npy", np.zeros((3, 35, 35), np.uint8))  # one record short
    with pytest.raises(ValueError, match=r"labels_00000\.npy: shape \(3, 35, 35\), expected \(4, 35, 35\)"):
        build_dataset("dm-tetrominoes", root=tmp_path)
    (folder / "images_00000.npy").write_bytes(b"\x93NUMPY")  # cut short
    with pytest.raises(ValueError, match=r"images_00000\.npy: unreadable shard .*delete"):
        build_dataset("dm-tetrominoes", root=tmp_path)


# -- ShapeStacks -------------------------------------------------------------------------------------------
@pytest.fixture
def shapestacks_root(tmp_path: Path) -> Path:
    root = tmp_path / "SHAPESTACKS"
    scenarios = {
        "blocks_all": {"train": ["env_blocks-easy-h=2-vcom=0-vpsf=0-v=1"], "eval": [], "test": []},
        "ccs_all": {
            "train": ["env_ccs-easy-h=3-vcom=1-vpsf=0-v=2", "env_blocks-easy-h=2-vcom=0-vpsf=0-v=1"],
            "eval": ["env_ccs-hard-h=4-vcom=2-vpsf=0-v=3"],
            "test": [],
        },
    }
    rng = np.random.default_rng(0)
    for split_set, splits in scenarios.items():
        for split, names in splits.items():
            path = root / "splits" / split_set / f"{split}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{n}\n" for n in names))
            for name in names:
                for cam in (1, 2):
                    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                    _write_png(
                        root / "recordings" / name / f"rgb-w=0-f=0-l=0-c=original-cam_{cam}-mono-0.png",
                        image,
                        "RGB",
                    )
                    label = np.zeros((24, 24, 3), np.uint8)
                    label[2:8, 2:8] = 50
                    label[10:20, 10:14] = 200
                    iseg = root / "iseg" / name / f"iseg-w=0-f=0-l=0-c=original-cam_{cam}-mono-0.map"
                    iseg.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(label).save(iseg, format="PNG")
    return root


def test_shapestacks_pools_variants_and_reads_masks(shapestacks_root: Path) -> None:
    train = build_dataset("shapestacks", "train", image_size=24, root=shapestacks_root)
    assert len(train) == 4 and not train.has_masks  # 2 unique scenarios x 2 cameras
    val = build_dataset("shapestacks", "val", image_size=12, root=shapestacks_root, masks=True)
    assert len(val) == 2 and val.has_masks
    masks = val[0]["masks"]
    assert masks.shape == (7, 12, 12) and torch.equal(masks.sum(0), torch.ones(12, 12))
    assert (
        masks[1].sum() == 9 and masks[2].sum() == 10 and masks[3:].sum() == 0
    )  # nearest resize of 6x6, 10x4
    only_blocks = build_dataset("shapestacks", "train", root=shapestacks_root, split_sets="blocks_all")
    assert len(only_blocks) == 2
    with pytest.raises(FileNotFoundError, match=r"split file not found: .*blocks_all/test.txt"):
        (shapestacks_root / "splits" / "blocks_all" / "test.txt").unlink()
        build_dataset("shapestacks", "test", root=shapestacks_root)


# -- COCO --------------------------------------------------------------------------------------------------
def test_coco_fiftyone_and_official_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        path = tmp_path / "fo" / "validation" / "data" / f"{i:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
    (tmp_path / "fo" / "validation" / "labels.json").write_text("{}")
    gray = tmp_path / "official" / "train2017" / "000000000001.jpg"
    gray.parent.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(gray)
    val = build_dataset("coco", "val", image_size=16, root=tmp_path / "fo")
    assert len(val) == 3 and set(val[0]) == {"image"} and not val.has_masks and not val.has_properties
    train = build_dataset("coco", "train", image_size=16, root=tmp_path / "official")
    assert train[0]["image"].shape == (3, 16, 16)
    with pytest.raises(
        FileNotFoundError, match=r"coco test: neither .*test/data \(FiftyOne\) nor .*test2017"
    ):
        build_dataset("coco", "test", root=tmp_path / "fo")


def test_folder_dataset_collates(mirror_root: Path) -> None:
    ds = build_dataset("clevr-mirror", "train", image_size=16, root=mirror_root)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 16, 16) and batch["properties"].shape == (2, 10, 19)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[2]

"""Procedural datasets: schema, determinism, disjoint splits, masks, properties, options, cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from implicit_slots.data import PROPERTY_SLICES, available_datasets, build_dataset
from implicit_slots.data.clevr_lite import CLEVR_LITE_DEFAULTS, VISIBILITY_RESOLUTION, ClevrLiteDataset
from implicit_slots.data.clevr_render import CAMERA_FOV_DEGREES
from implicit_slots.data.schema import COLORS, MATERIALS, SHAPES, SIZES

PROCEDURAL = ["clevr-lite", "clevr-mirror-lite", "sprites", "tetrominoes"]


def test_registry_lists_every_dataset_and_rejects_unknown_names() -> None:
    names = available_datasets()
    assert set(PROCEDURAL) <= set(names)
    assert {"clevr", "clevr6", "clevr-mirror", "shapestacks", "coco", "dm-clevr6"} <= set(names)
    with pytest.raises(KeyError, match=r"unknown dataset 'clevr-lyte'.*clevr-lite"):
        build_dataset("clevr-lyte")


def test_bad_split_option_and_seed_are_named() -> None:
    with pytest.raises(ValueError, match="unknown split 'eval'"):
        build_dataset("sprites", split="eval")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['antialiasing'\].*antialias"):
        build_dataset("clevr-lite", antialiasing=2)
    with pytest.raises(ValueError, match="max_objects=11"):
        build_dataset("clevr-lite", max_objects=11)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        build_dataset("tetrominoes", seed=-1)


@pytest.mark.parametrize("name", PROCEDURAL)
def test_schema_shapes_ranges_and_one_hot_masks(name: str) -> None:
    ds = build_dataset(name, "val", image_size=32, seed=3, num_samples=3)
    assert len(ds) == 3 and ds.has_masks
    k = ds.num_objects_max
    for i in range(3):
        s = ds[i]
        assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
        assert float(s["image"].min()) >= 0.0 and float(s["image"].max()) <= 1.0
        assert s["masks"].shape == (k + 1, 32, 32) and s["masks"].dtype == torch.float32
        assert torch.equal(s["masks"].sum(0), torch.ones(32, 32))  # partition of the image
        assert set(torch.unique(s["masks"]).tolist()) <= {0.0, 1.0}
        assert ("properties" in s) == ds.has_properties
    with pytest.raises(IndexError):
        ds[3]


def test_default_split_sizes() -> None:
    assert [len(build_dataset("sprites", split)) for split in ("train", "val", "test")] == [
        50_000,
        1_000,
        1_000,
    ]
    assert len(build_dataset("clevr-lite", "val", num_samples=7)) == 7


@pytest.mark.parametrize("name", PROCEDURAL)
def test_samples_are_deterministic_and_independent_of_access_order(name: str) -> None:
    a = build_dataset(name, "train", image_size=24, seed=5, num_samples=10)
    b = build_dataset(name, "train", image_size=24, seed=5, num_samples=10)
    forward = [a[i] for i in (0, 1, 2)]
    backward = [b[i] for i in (2, 1, 0)][::-1]
    for x, y in zip(forward, backward):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_splits_and_seeds_give_different_scenes() -> None:
    scenes = {
        (split, seed): build_dataset("clevr-lite", split, 16, seed, num_samples=4).scene(0)["objects"]
        for split in ("train", "val", "test")
        for seed in (0, 1)
    }
    coords = {key: tuple(round(c, 6) for o in objs for c in o["3d_coords"]) for key, objs in scenes.items()}
    assert len(set(coords.values())) == len(coords)


def test_dataloader_workers_collate_and_match_main_process() -> None:
    ds = build_dataset("clevr-lite", "train", image_size=24, seed=0, num_samples=4)
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert batches[0]["masks"].shape == (2, ds.num_objects_max + 1, 24, 24)
    assert batches[0]["properties"].shape == (2, ds.num_objects_max, 19)
    assert torch.equal(batches[1]["image"][1], ds[3]["image"])


def _project(scene: dict, point: list[float], size: int, zoom: float) -> tuple[float, float]:
    """Pixel (row, col) of a 3D point with the renderer's camera."""
    camera = np.asarray(scene["camera_position"])
    forward = -camera / np.linalg.norm(camera)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    v = np.asarray(point) - camera
    half = math.tan(math.radians(CAMERA_FOV_DEGREES) / 2) / zoom
    u_img = v @ right / (v @ forward) / half
    v_img = v @ up / (v @ forward) / half
    return (1 - v_img) / 2 * size, (u_img + 1) / 2 * size


@pytest.mark.parametrize("name", ["clevr-lite", "clevr-mirror-lite"])
def test_properties_agree_with_scene_and_masks(name: str) -> None:
    ds = build_dataset(name, "train", image_size=VISIBILITY_RESOLUTION, seed=1, num_samples=6)
    assert isinstance(ds, ClevrLiteDataset)
    for i in range(6):
        scene, sample = ds.scene(i), ds[i]
        objects, props, masks = scene["objects"], sample["properties"].numpy(), sample["masks"].numpy()
        n = len(objects)
        assert ds.min_objects <= n <= ds.num_objects_max
        assert np.all(props[n:] == 0) and np.all(masks[n + 1 :] == 0)  # padding rows/channels
        assert np.all(props[:n, PROPERTY_SLICES["real"]] == 1)
        for row, obj in enumerate(objects):
            x, y, z = obj["3d_coords"]
            np.testing.assert_allclose(props[row, :3], [(x + 3) / 6, (y + 3) / 6, (z + 3) / 6], rtol=1e-6)
            for key, vocabulary in (
                ("size", SIZES),
                ("material", MATERIALS),
                ("shape", SHAPES),
                ("color", COLORS),
            ):
                one_hot = props[row, PROPERTY_SLICES[key]]
                assert one_hot.sum() == 1 and vocabulary[int(one_hot.argmax())] == obj[key]
            r = ds.sizes[obj["size"]]
            assert z == pytest.approx(r / math.sqrt(2) if obj["shape"] == "cube" else r)
            assert -3 <= x <= 3 and -3 <= y <= 3
            # The visible-pixel rule holds at the check resolution.
            assert masks[row + 1].sum() >= ds.min_visible_pixels
            # The object's mask lies around the projection of its centre.
            rows, cols = np.nonzero(masks[row + 1])
            pr, pc = _project(scene, [x, y, z], VISIBILITY_RESOLUTION, ds.zoom)
            if 0 <= pr < VISIBILITY_RESOLUTION and 0 <= pc < VISIBILITY_RESOLUTION:
                assert rows.min() - 2 <= pr <= rows.max() + 2 and cols.min() - 2 <= pc <= cols.max() + 2
        for a in range(n):  # CLEVR's placement rules
            for b in range(a + 1, n):
                oa, ob = objects[a], objects[b]
                dist = math.dist(oa["3d_coords"][:2], ob["3d_coords"][:2])
                assert dist - ds.sizes[oa["size"]] - ds.sizes[ob["size"]] >= ds.min_dist - 1e-9


def test_scene_does_not_depend_on_image_size_or_antialiasing() -> None:
    small = build_dataset("clevr-lite", "test", image_size=16, seed=2, num_samples=3)
    large = build_dataset("clevr-lite", "test", image_size=48, seed=2, num_samples=3, antialias=2)
    assert small.scene(2) == large.scene(2)
    assert torch.equal(small[2]["properties"], large[2]["properties"])


def test_antialiasing_smooths_edges_and_keeps_masks_one_hot() -> None:
    plain = build_dataset("clevr-lite", "train", image_size=32, seed=0, num_samples=1)[0]
    smooth = build_dataset("clevr-lite", "train", image_size=32, seed=0, num_samples=1, antialias=2)[0]
    assert torch.equal(smooth["masks"].sum(0), torch.ones(32, 32))
    assert not torch.equal(plain["image"], smooth["image"])
    # Interior pixels of the background (far from objects) are nearly identical.
    background = (plain["masks"][0] == 1) & (smooth["masks"][0] == 1)
    diff = (plain["image"] - smooth["image"]).abs().amax(0)[background]
    assert float(diff.median()) < 0.02


def test_mirror_variant_adds_a_mirror_with_reflections() -> None:
    ds = build_dataset("clevr-mirror-lite", "train", image_size=48, seed=0, num_samples=3)
    assert all("mirror" in ds.scene(i) for i in range(3))
    assert "mirror" not in build_dataset("clevr-lite", num_samples=1).scene(0)
    assert CLEVR_LITE_DEFAULTS["mirror"] is False


def test_tetrominoes_pieces_are_four_blocks_without_overlap() -> None:
    ds = build_dataset("tetrominoes", "train", image_size=35, seed=0, num_samples=5)
    for i in range(5):
        masks = ds[i]["masks"]
        assert masks.shape[0] == 4
        areas = masks[1:].sum(dim=(1, 2))
        assert torch.equal(areas, torch.full((3,), 4 * 25.0))  # 4 blocks of 5x5 pixels each
        grid = np.asarray(ds.scene(i)["grid"])
        assert sorted(np.bincount(grid.ravel())[1:].tolist()) == [4, 4, 4]


def test_sprites_object_counts_within_range_and_visible() -> None:
    ds = build_dataset("sprites", "train", image_size=64, seed=0, num_samples=8, min_objects=2, max_objects=4)
    for i in range(8):
        n = len(ds.scene(i)["objects"])
        assert 2 <= n <= 4
        masks = ds[i]["masks"]
        assert masks.shape[0] == 5
        assert bool((masks[1 : n + 1].sum(dim=(1, 2)) > 0).all()) and float(masks[n + 1 :].sum()) == 0


@pytest.mark.parametrize("name", ["clevr-lite", "sprites"])
def test_cache_round_trip(name: str, tmp_path) -> None:
    direct = build_dataset(name, "val", image_size=24, seed=4, num_samples=3)
    cached = build_dataset(name, "val", image_size=24, seed=4, num_samples=3, cache_dir=tmp_path)
    entries = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    again = build_dataset(name, "val", image_size=24, seed=4, num_samples=3, cache_dir=tmp_path)
    assert (again.num_objects_max, again.has_masks, again.has_properties) == (
        direct.num_objects_max,
        direct.has_masks,
        direct.has_properties,
    )
    for i in range(3):
        a, b, c = direct[i], cached[i], again[i]
        assert a.keys() == b.keys() == c.keys()
        assert float((a["image"] - b["image"]).abs().max()) <= 0.5 / 255 + 1e-6  # 8-bit images
        assert torch.equal(a["masks"], b["masks"]) and torch.equal(b["image"], c["image"])
        if "properties" in a:
            assert torch.equal(a["properties"], b["properties"])
    # Other arguments make another entry.
    build_dataset(name, "val", image_size=24, seed=5, num_samples=3, cache_dir=tmp_path)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


def test_cache_key_ignores_container_types_but_not_values() -> None:
    from implicit_slots.data.cache import cache_key

    base = {"name": "x", "options": {"split_sets": ("a", "b")}}
    assert cache_key(base) == cache_key({"name": "x", "options": {"split_sets": ["a", "b"]}})
    assert cache_key(base) != cache_key({"name": "x", "options": {"split_sets": ["a"]}})

"""The ray caster's geometry, checked against independent formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from implicit_slots.data.clevr_render import ClevrRenderer, RenderObject, RenderScene, _Geometry


def _inside(obj: RenderObject, points: np.ndarray) -> np.ndarray:
    """Points (3, N) strictly inside the object (independent point-membership tests)."""
    p = points - np.asarray(obj.center)[:, None]
    h = obj.half_size
    if obj.shape == "sphere":
        return (p**2).sum(0) < h * h
    if obj.shape == "cylinder":
        return (p[0] ** 2 + p[1] ** 2 < h * h) & (np.abs(p[2]) < h)
    a = math.radians(obj.rotation)
    local_x = math.cos(a) * p[0] + math.sin(a) * p[1]
    local_y = -math.sin(a) * p[0] + math.cos(a) * p[1]
    return (np.abs(local_x) < h) & (np.abs(local_y) < h) & (np.abs(p[2]) < h)


@pytest.mark.parametrize("shape", ["sphere", "cube", "cylinder"])
def test_intersections_hit_the_surface_first(shape: str) -> None:
    obj = RenderObject(shape, (0.3, -0.2, 0.7), 0.7, 33.0, (1.0, 0.0, 0.0), False)
    geometry = _Geometry((obj,))
    rng = np.random.default_rng(0)
    origins = rng.normal(size=(3, 4000)).astype(np.float32) * 0.5 + np.array(
        [[4.0], [-5.0], [4.0]], np.float32
    )
    targets = rng.uniform(-1.2, 1.2, size=(3, 4000)).astype(np.float32) + np.array(
        [[0.3], [-0.2], [0.7]], np.float32
    )
    directions = targets - origins
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    t = geometry.intersect(0, origins, directions)
    steps = np.linspace(0.0, 1.0, 400, dtype=np.float32)
    far = 12.0
    for i in range(0, 4000, 40):  # march each ray finely: first inside sample ~ t
        samples = origins[:, i : i + 1] + directions[:, i : i + 1] * (steps * far)
        inside = _inside(obj, samples)
        if np.isfinite(t[i]):
            first = steps[np.argmax(inside)] * far if inside.any() else np.inf
            assert abs(first - t[i]) < far / 399 + 1e-3 or (not inside.any() and t[i] < far)
        else:
            assert not inside.any()
    hits = np.isfinite(t)
    assert 0.2 < hits.mean() < 0.9
    points = origins[:, hits] + directions[:, hits] * t[hits]
    normals = geometry.normals(0, points)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=0), 1.0, atol=1e-4)
    # Outward normals face the incoming rays.
    assert ((normals * directions[:, hits]).sum(0) < 1e-4).all()
    # Points just outside along the normal are outside, just inside are inside.
    assert not _inside(obj, points + 1e-3 * normals).any()
    assert _inside(obj, points - 1e-3 * normals).mean() > 0.98


def test_sphere_mask_matches_ray_distance() -> None:
    sphere = RenderObject("sphere", (0.5, 0.5, 0.7), 0.7, 0.0, (0.2, 0.4, 0.8), True)
    scene = RenderScene(objects=(sphere,))
    renderer = ClevrRenderer()
    origin, directions = renderer.primary_rays(scene, 48)
    labels = renderer.labels(scene, 48).ravel()
    to_centre = np.asarray(sphere.center, np.float32)[:, None] - origin
    along = (to_centre * directions).sum(0)
    distance = np.sqrt(np.maximum((to_centre**2).sum(0) - along**2, 0))
    clear = np.abs(distance - 0.7) > 1e-3
    np.testing.assert_array_equal(labels[clear], (distance < 0.7)[clear].astype(labels.dtype))
    image, full_labels = renderer.render(scene, 48)
    assert image.shape == (3, 48, 48) and image.dtype == np.float32
    np.testing.assert_array_equal(full_labels.ravel(), labels)
    # The sphere is blue-ish where it is lit, the floor grey.
    sphere_pixels = image.reshape(3, -1)[:, labels == 1]
    assert (sphere_pixels[2] > sphere_pixels[0]).mean() > 0.9
    floor = image.reshape(3, -1)[:, labels == 0]
    assert np.abs(floor[0] - floor[2]).mean() < 0.08


def test_shadow_falls_away_from_the_key_light() -> None:
    cube = RenderObject("cube", (0.0, 0.0, 0.5), 0.5, 0.0, (0.8, 0.8, 0.8), False)
    scene = RenderScene(objects=(cube,), zoom=2.5, key_light=(-2.0, 6.0, 4.0))
    renderer = ClevrRenderer()
    image, labels = renderer.render(scene, 64)
    brightness = image.mean(0)
    floor = labels == 0
    origin, directions = renderer.primary_rays(scene, 64)
    t = -origin[2] / directions[2]
    points = origin + directions * t  # (3, N) floor points
    light = np.array([-2.0, 6.0, 4.0]) / np.linalg.norm([-2.0, 6.0, 4.0])
    # Floor points whose ray to the light passes through the cube's core are darker than the open floor.
    s = points[2:3] * 0 + (0.5 - 0) / light[2]  # height 0.5 along the light direction
    probe = points + light[:, None] * s
    behind = (np.abs(probe[0]) < 0.3) & (np.abs(probe[1]) < 0.3)
    behind = behind.reshape(64, 64) & floor
    open_floor = floor & ~behind
    assert behind.sum() > 10
    assert brightness[behind].mean() < 0.7 * np.median(brightness[open_floor])

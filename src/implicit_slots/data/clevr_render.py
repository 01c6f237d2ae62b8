"""A small analytic ray caster for CLEVR-like scenes, vectorised over pixels with NumPy.

Geometry: spheres, cubes rotated about z (slab test in the object frame) and upright cylinders (quadric
plus caps) on the ground plane z = 0, optionally a vertical mirror rectangle (CLEVR-Mirror). Shading: an
ambient term, Lambert from a key, a fill and a back light (directional, from CLEVR's light positions), a
hard shadow from the key light, Blinn-Phong highlights, and one reflection bounce for metal objects and the
mirror. Rays that leave the scene see a grey sky.

Speed comes from culling: every object is first tested against its bounding sphere over all rays, and the
exact test runs only on the candidate rays. All arrays are float32 in structure-of-arrays form ``(3, N)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Label codes of the id buffer besides objects (1..K) and the floor (0).
MIRROR_ID = -1
SKY_ID = -2

_EPS = 1e-3
_FLOAT = np.float32

# Camera and lights: CLEVR's Blender scene as re-used by Kubric (positions in scene units).
CAMERA_POSITION = (7.48113, -6.50764, 5.34367)
CAMERA_FOV_DEGREES = 49.13  # 35 mm focal length on a 32 mm sensor
KEY_LIGHT = (6.44671, -2.90517, 4.2584)
FILL_LIGHT = (-4.67112, -4.0136, 3.01122)
BACK_LIGHT = (-1.1685, 2.64602, 5.81574)

SHAPE_SPHERE, SHAPE_CUBE, SHAPE_CYLINDER = 0, 1, 2
_SHAPE_CODES = {"sphere": SHAPE_SPHERE, "cube": SHAPE_CUBE, "cylinder": SHAPE_CYLINDER}


@dataclass(frozen=True)
class RenderObject:
    """One object, in renderer terms.

    Attributes:
        shape: "cube", "sphere" or "cylinder".
        center: (x, y, z) of the object's centre; z is the half-height.
        half_size: sphere/cylinder radius, or cube half-edge.
        rotation: degrees about z (cubes only use it).
        color: linear RGB albedo in [0, 1].
        metal: metal (mirror-like, tinted) or rubber (matte).
    """

    shape: str
    center: tuple[float, float, float]
    half_size: float
    rotation: float
    color: tuple[float, float, float]
    metal: bool


@dataclass(frozen=True)
class Mirror:
    """A vertical mirror rectangle in the plane y = ``y``, facing -y (the camera side).

    Attributes:
        x_center: centre of the rectangle along x.
        y: position of the plane.
        half_width: half extent along x.
        height: extent along z, from the floor up.
        reflectance: fraction of the reflected radiance it returns (grey metal).
    """

    x_center: float
    y: float = 5.0
    half_width: float = 3.5
    height: float = 5.0
    reflectance: float = 0.8


@dataclass(frozen=True)
class RenderScene:
    """Everything the renderer needs: camera, lights, objects, optional mirror.

    ``zoom`` divides the tangent of the camera's half field of view (1: CLEVR's 49.13 degrees; 1/0.6 gives
    the view of Locatello et al.'s 192-pixel crop of a 320x240 CLEVR image).
    """

    objects: tuple[RenderObject, ...]
    zoom: float = 1.0
    camera_position: tuple[float, float, float] = CAMERA_POSITION
    key_light: tuple[float, float, float] = KEY_LIGHT
    fill_light: tuple[float, float, float] = FILL_LIGHT
    back_light: tuple[float, float, float] = BACK_LIGHT
    mirror: Mirror | None = None


@dataclass
class _Hits:
    """Result of tracing N rays: distance (inf: nothing), id code and the rays themselves."""

    t: np.ndarray  # (N,)
    ids: np.ndarray  # (N,) int16: 0 floor, k+1 object k, MIRROR_ID, SKY_ID
    origins: np.ndarray  # (3, N) or (3, 1)
    directions: np.ndarray  # (3, N)
    points: np.ndarray = field(init=False)  # (3, N)

    def __post_init__(self) -> None:
        t = np.where(np.isfinite(self.t), self.t, 0.0).astype(_FLOAT)
        self.points = self.origins + self.directions * t  # (3, N)


def _normalise(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, np.float64)
    return (a / np.linalg.norm(a)).astype(_FLOAT)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


class _Geometry:
    """The objects of a scene as flat arrays, with the intersection and normal routines."""

    def __init__(self, objects: tuple[RenderObject, ...]) -> None:
        self.objects = objects
        self.shape = [_SHAPE_CODES[o.shape] for o in objects]
        self.center = [np.asarray(o.center, _FLOAT)[:, None] for o in objects]  # each (3, 1)
        self.half = [float(o.half_size) for o in objects]
        angle = [math.radians(o.rotation) for o in objects]
        self.cos = [math.cos(a) for a in angle]
        self.sin = [math.sin(a) for a in angle]
        bound_scale = {SHAPE_SPHERE: 1.0, SHAPE_CUBE: math.sqrt(3.0), SHAPE_CYLINDER: math.sqrt(2.0)}
        self.bound = [h * bound_scale[s] * 1.001 for h, s in zip(self.half, self.shape)]

    def candidates(self, k: int, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Indices of the rays that hit object k's bounding sphere in front of their origin."""
        oc = origins - self.center[k]  # (3, N) or (3, 1)
        b = _dot(oc, directions)  # (N,)
        c = _dot(oc, oc) - self.bound[k] ** 2  # (N,) or (1,)
        hit = (b * b > c) & ((b < 0) | (c < 0))
        return np.flatnonzero(hit)

    def intersect(self, k: int, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Distance along each ray to object k (inf where missed), for rays that start outside it."""
        o = origins - self.center[k]  # (3, N) or (3, 1)
        d = directions  # (3, N)
        r = self.half[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.shape[k] == SHAPE_SPHERE:
                b = _dot(o, d)
                disc = b * b - (_dot(o, o) - r * r)
                t = -b - np.sqrt(np.maximum(disc, 0.0))
                return np.where((disc > 0) & (t > _EPS), t, np.inf)
            if self.shape[k] == SHAPE_CUBE:
                cs, sn = self.cos[k], self.sin[k]
                local_o = (cs * o[0] + sn * o[1], cs * o[1] - sn * o[0], o[2])
                local_d = (cs * d[0] + sn * d[1], cs * d[1] - sn * d[0], d[2])
                near = np.full(d.shape[1], -np.inf, _FLOAT)
                far = np.full(d.shape[1], np.inf, _FLOAT)
                for lo, ld in zip(local_o, local_d):
                    inv = 1.0 / ld
                    t1 = (-r - lo) * inv
                    t2 = (r - lo) * inv
                    near = np.fmax(near, np.fmin(t1, t2))
                    far = np.fmin(far, np.fmax(t1, t2))
                return np.where((near <= far) & (near > _EPS), near, np.inf)
            # Cylinder: radius r, half-height r.
            a = d[0] * d[0] + d[1] * d[1]
            b = o[0] * d[0] + o[1] * d[1]
            disc = b * b - a * (o[0] * o[0] + o[1] * o[1] - r * r)
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            z_side = o[2] + t_side * d[2]
            t = np.where((disc > 0) & (t_side > _EPS) & (np.abs(z_side) <= r), t_side, np.inf)
            for cap in (r, -r):
                t_cap = (cap - o[2]) / d[2]
                x = o[0] + t_cap * d[0]
                y = o[1] + t_cap * d[1]
                inside = (x * x + y * y <= r * r) & (t_cap > _EPS)
                t = np.where(inside & (t_cap < t), t_cap, t)
            return t

    def normals(self, k: int, points: np.ndarray) -> np.ndarray:
        """Outward unit normals of object k at surface points ``(3, M)``."""
        p = points - self.center[k]  # (3, M)
        r = self.half[k]
        if self.shape[k] == SHAPE_SPHERE:
            return p / r
        if self.shape[k] == SHAPE_CUBE:
            cs, sn = self.cos[k], self.sin[k]
            local = np.stack([cs * p[0] + sn * p[1], cs * p[1] - sn * p[0], p[2]])  # (3, M)
            axis = np.argmax(np.abs(local), axis=0)  # (M,)
            n_local = np.zeros_like(local)
            columns = np.arange(local.shape[1])
            n_local[axis, columns] = np.sign(local[axis, columns])
            return np.stack(
                [cs * n_local[0] - sn * n_local[1], sn * n_local[0] + cs * n_local[1], n_local[2]]
            )
        radial = np.sqrt(p[0] * p[0] + p[1] * p[1])  # (M,)
        on_cap = np.abs(p[2]) > radial
        safe = np.maximum(radial, 1e-6)
        return np.where(
            on_cap[None],
            np.stack([np.zeros_like(radial), np.zeros_like(radial), np.sign(p[2])]),
            np.stack([p[0] / safe, p[1] / safe, np.zeros_like(radial)]),
        ).astype(_FLOAT)


class ClevrRenderer:
    """Renders :class:`RenderScene` objects to RGB images and object-id label maps.

    Args:
        floor_albedo: grey level of the ground plane.
        sky_color: radiance of rays that leave the scene (seen in reflections).
        ambient: ambient light level.
    """

    def __init__(self, floor_albedo: float = 0.62, sky_color: float = 0.7, ambient: float = 0.22) -> None:
        self.floor_albedo = floor_albedo
        self.sky_color = sky_color
        self.ambient = ambient
        self._grids: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._last_primary: tuple[RenderScene, int, _Hits] | None = None

    # ----------------------------------------------------------------------------------------------
    def primary_rays(self, scene: RenderScene, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """Camera origin ``(3, 1)`` and unit directions ``(3, resolution**2)`` (row-major, top row first)."""
        if resolution not in self._grids:
            centres = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution * 2.0 - 1.0
            v, u = np.meshgrid(-centres, centres, indexing="ij")  # (R, R): v up, u right
            self._grids[resolution] = (u.ravel(), v.ravel())
        u, v = self._grids[resolution]
        position = np.asarray(scene.camera_position, np.float64)
        forward = -position / np.linalg.norm(position)  # looks at the origin
        right = np.array([forward[1], -forward[0], 0.0])  # forward x (0, 0, 1)
        right /= np.linalg.norm(right)
        up = np.array(
            [
                right[1] * forward[2] - right[2] * forward[1],
                right[2] * forward[0] - right[0] * forward[2],
                right[0] * forward[1] - right[1] * forward[0],
            ]
        )
        half_width = math.tan(math.radians(CAMERA_FOV_DEGREES) / 2.0) / scene.zoom
        directions = forward[:, None] + half_width * (
            right[:, None] * u[None] + up[:, None] * v[None]
        )  # (3, N)
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        return position.astype(_FLOAT)[:, None], directions.astype(_FLOAT)

    def _trace(
        self,
        geometry: _Geometry,
        mirror: Mirror | None,
        origins: np.ndarray,
        directions: np.ndarray,
        source_ids: np.ndarray | None = None,
    ) -> _Hits:
        """Nearest hit among floor, mirror and objects; rays never hit the object they start on."""
        dz = directions[2]
        oz = origins[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_floor = -oz / dz
        t = np.where((dz < 0) & (t_floor > _EPS), t_floor, np.inf).astype(_FLOAT)  # (N,)
        ids = np.where(np.isfinite(t), 0, SKY_ID).astype(np.int16)
        if mirror is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                t_m = (mirror.y - origins[1]) / directions[1]
            x = origins[0] + t_m * directions[0]
            z = origins[2] + t_m * directions[2]
            hit = (
                (directions[1] > 0)
                & (t_m > _EPS)
                & (t_m < t)
                & (np.abs(x - mirror.x_center) <= mirror.half_width)
                & (z >= 0)
                & (z <= mirror.height)
            )
            t = np.where(hit, t_m, t)
            ids = np.where(hit, MIRROR_ID, ids).astype(np.int16)
        per_ray_origin = origins.shape[1] > 1
        for k in range(len(geometry.objects)):
            rays = geometry.candidates(k, origins, directions)
            if source_ids is not None and rays.size:
                rays = rays[source_ids[rays] != k + 1]
            if rays.size == 0:
                continue
            o = origins[:, rays] if per_ray_origin else origins
            t_k = geometry.intersect(k, o, directions[:, rays])  # (M,)
            closer = t_k < t[rays]
            hit_rays = rays[closer]
            t[hit_rays] = t_k[closer]
            ids[hit_rays] = k + 1
        return _Hits(t, ids, origins, directions)

    def _normals(self, geometry: _Geometry, hits: _Hits) -> np.ndarray:
        """Unit normals ``(3, N)``: floor up, mirror toward -y, objects from their geometry."""
        normals = np.zeros_like(hits.points)
        normals[2] = 1.0
        mirror_rays = hits.ids == MIRROR_ID
        normals[:, mirror_rays] = np.array([[0.0], [-1.0], [0.0]], _FLOAT)
        for k in range(len(geometry.objects)):
            rays = np.flatnonzero(hits.ids == k + 1)
            if rays.size:
                normals[:, rays] = geometry.normals(k, hits.points[:, rays])
        return normals

    def _shadowed(
        self, geometry: _Geometry, points: np.ndarray, ids: np.ndarray, light: np.ndarray
    ) -> np.ndarray:
        """Boolean ``(N,)``: the ray from each point toward the (directional) light hits an object."""
        shadow = np.zeros(points.shape[1], bool)
        directions = np.broadcast_to(light[:, None], points.shape)
        for k in range(len(geometry.objects)):
            rays = geometry.candidates(k, points, directions)
            rays = rays[(ids[rays] != k + 1) & ~shadow[rays]]
            if rays.size == 0:
                continue
            t_k = geometry.intersect(k, points[:, rays], directions[:, rays])
            shadow[rays[np.isfinite(t_k)]] = True
        return shadow

    def _shade(
        self,
        scene: RenderScene,
        geometry: _Geometry,
        hits: _Hits,
        palette: np.ndarray,
        metal: np.ndarray,
        bounce: bool,
    ) -> np.ndarray:
        """Radiance ``(3, N)`` of the hits seen along their rays."""
        ids = hits.ids
        n_rays = ids.shape[0]
        radiance = np.empty((3, n_rays), _FLOAT)
        radiance[:] = self.sky_color
        surface = np.flatnonzero(ids >= 0)  # floor and objects (the mirror is handled below)
        key = _normalise(scene.key_light)
        fill = _normalise(scene.fill_light)
        back = _normalise(scene.back_light)
        if surface.size:
            sub = _Hits(
                hits.t[surface], ids[surface], _take(hits.origins, surface), hits.directions[:, surface]
            )
            normals = self._normals(geometry, sub)  # (3, M)
            points = sub.points + _EPS * 4 * normals
            albedo = palette[:, sub.ids]  # (3, M)
            key_cos = np.maximum(_dot(normals, key[:, None]), 0.0)
            lit = np.flatnonzero(key_cos > 0)
            shadow = np.zeros_like(key_cos, dtype=bool)
            shadow[lit] = self._shadowed(geometry, points[:, lit], sub.ids[lit], key)
            key_cos = np.where(shadow, 0.0, key_cos)
            diffuse = (
                self.ambient
                + key_cos * np.array([[1.0], [0.95], [0.86]], _FLOAT) * 0.95
                + np.maximum(_dot(normals, fill[:, None]), 0.0)
                * np.array([[0.8], [0.86], [1.0]], _FLOAT)
                * 0.3
                + np.maximum(_dot(normals, back[:, None]), 0.0) * 0.25
            )  # (3, M)
            view = -sub.directions
            half = key[:, None] + view
            half /= np.linalg.norm(half, axis=0, keepdims=True)
            n_dot_h = np.maximum(_dot(normals, half), 0.0)
            is_metal = metal[sub.ids]  # (M,)
            is_floor = sub.ids == 0
            specular = np.where(is_metal, n_dot_h**60 * 0.9, n_dot_h**12 * 0.12)
            specular = np.where(is_floor, n_dot_h**8 * 0.06, specular)
            specular = np.where(shadow, 0.0, specular)
            colour = albedo * diffuse + specular
            metal_rays = np.flatnonzero(is_metal)
            if metal_rays.size:
                d = sub.directions[:, metal_rays]
                nm = normals[:, metal_rays]
                reflected = d - 2.0 * _dot(d, nm) * nm
                if bounce:
                    bounce_hits = self._trace(
                        geometry, scene.mirror, points[:, metal_rays], reflected, sub.ids[metal_rays]
                    )
                    environment = self._shade(scene, geometry, bounce_hits, palette, metal, bounce=False)
                else:  # second bounce: a cheap environment (floor below the horizon, sky above)
                    environment = np.where(
                        reflected[2:3] < 0, self.floor_albedo * (self.ambient + 0.6), self.sky_color
                    ).astype(_FLOAT)
                metal_albedo = albedo[:, metal_rays]
                colour[:, metal_rays] = (
                    metal_albedo * diffuse[:, metal_rays] * 0.25
                    + metal_albedo * environment * 0.85
                    + specular[metal_rays]
                )
            radiance[:, surface] = colour
        mirror_rays = np.flatnonzero(ids == MIRROR_ID)
        if mirror_rays.size and scene.mirror is not None:
            if bounce:
                d = hits.directions[:, mirror_rays]
                reflected = np.stack([d[0], -d[1], d[2]])
                origins = hits.points[:, mirror_rays] + np.array([[0.0], [-_EPS * 4], [0.0]], _FLOAT)
                mirror_hits = self._trace(geometry, None, origins, reflected)
                seen = self._shade(scene, geometry, mirror_hits, palette, metal, bounce=False)
            else:
                seen = np.full((3, mirror_rays.size), self.sky_color, _FLOAT)
            radiance[:, mirror_rays] = scene.mirror.reflectance * seen + 0.03
        return radiance

    # ----------------------------------------------------------------------------------------------
    def labels(self, scene: RenderScene, resolution: int) -> np.ndarray:
        """Object-id map ``(R, R)`` int16 at pixel centres (0 background/mirror/sky, k+1 object k)."""
        hits = self._primary_hits(scene, _Geometry(scene.objects), resolution)
        return np.maximum(hits.ids, 0).reshape(resolution, resolution)

    def _primary_hits(self, scene: RenderScene, geometry: _Geometry, resolution: int) -> _Hits:
        """Trace the camera rays; the last result is memoised (a check render followed by the same-size
        render of the same scene traces once)."""
        if (
            self._last_primary is not None
            and self._last_primary[0] is scene
            and self._last_primary[1] == resolution
        ):
            return self._last_primary[2]
        origin, directions = self.primary_rays(scene, resolution)
        hits = self._trace(geometry, scene.mirror, origin, directions)
        self._last_primary = (scene, resolution, hits)
        return hits

    def render(
        self, scene: RenderScene, image_size: int, antialias: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render an image and its label map.

        Args:
            scene: what to render.
            image_size: output side length S (square images).
            antialias: supersampling factor a (a x a rays per pixel, box-filtered).

        Returns:
            ``image`` float32 ``(3, S, S)`` in [0, 1] and ``labels`` int64 ``(S, S)``: 0 for the background
            (floor, mirror, sky), ``k + 1`` for object k; with anti-aliasing the label covering most of the
            pixel's sub-samples (ties go to the lower label).
        """
        geometry = _Geometry(scene.objects)
        resolution = image_size * antialias
        hits = self._primary_hits(scene, geometry, resolution)
        palette = np.empty((3, len(scene.objects) + 1), _FLOAT)  # column k+1: object k; 0: floor
        palette[:, 0] = self.floor_albedo
        for k, obj in enumerate(scene.objects):
            palette[:, k + 1] = obj.color
        metal = np.array([False] + [o.metal for o in scene.objects])
        radiance = self._shade(scene, geometry, hits, palette, metal, bounce=True)  # (3, R*R)
        labels = np.maximum(hits.ids, 0).astype(np.int64)
        if antialias == 1:
            image = radiance.reshape(3, image_size, image_size)
            return np.clip(image, 0.0, 1.0), labels.reshape(image_size, image_size)
        a = antialias
        image = radiance.reshape(3, image_size, a, image_size, a).mean(axis=(2, 4))
        # Majority label per pixel from the a*a sub-samples.
        num_labels = len(scene.objects) + 1
        pixel = (np.arange(resolution) // a)[:, None] * image_size + (np.arange(resolution) // a)[None, :]
        counts = np.bincount(
            pixel.ravel() * num_labels + labels, minlength=image_size * image_size * num_labels
        ).reshape(image_size * image_size, num_labels)
        majority = counts.argmax(axis=1).reshape(image_size, image_size)
        return np.clip(image, 0.0, 1.0).astype(_FLOAT), majority


def _take(origins: np.ndarray, rays: np.ndarray) -> np.ndarray:
    return origins[:, rays] if origins.shape[1] > 1 else origins

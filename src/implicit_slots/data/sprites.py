"""``sprites`` (Multi-dSprites-like) and ``tetrominoes`` (Tetrominoes-like): fast 2D scenes with masks.

Both are analytic: every pixel centre (or sub-sample, with anti-aliasing) is tested against each shape's
implicit function, later shapes drawn over earlier ones. They have no CLEVR attributes, so their samples
carry ``image`` and ``masks`` only; the factors of each sample are in :meth:`ProceduralDataset.scene`.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np

from implicit_slots.data.procedural import ProceduralDataset, RenderedSample, check_range, register_procedural

SPRITE_SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
SPRITES_DEFAULTS: dict[str, Any] = {
    "min_objects": 1,
    "max_objects": 5,
    "antialias": 1,
    "background": "gray",
    "min_visible_fraction": 0.25,
}
TETROMINOES_DEFAULTS: dict[str, Any] = {"num_pieces": 3, "grid_size": 7, "antialias": 1}

# The 7 tetromino pieces as (row, col) cells; their distinct rotations give 19 classes.
_PIECES: dict[str, tuple[tuple[int, int], ...]] = {
    "I": ((0, 0), (0, 1), (0, 2), (0, 3)),
    "O": ((0, 0), (0, 1), (1, 0), (1, 1)),
    "T": ((0, 0), (0, 1), (0, 2), (1, 1)),
    "S": ((0, 1), (0, 2), (1, 0), (1, 1)),
    "Z": ((0, 0), (0, 1), (1, 1), (1, 2)),
    "J": ((0, 0), (1, 0), (1, 1), (1, 2)),
    "L": ((0, 2), (1, 0), (1, 1), (1, 2)),
}
TETROMINO_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}


def _normalised_cells(cells: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    r0 = min(r for r, _ in cells)
    c0 = min(c for _, c in cells)
    return tuple(sorted((r - r0, c - c0) for r, c in cells))


def _tetromino_classes() -> list[tuple[str, tuple[tuple[int, int], ...]]]:
    classes: list[tuple[str, tuple[tuple[int, int], ...]]] = []
    for name, cells in _PIECES.items():
        seen: set[tuple[tuple[int, int], ...]] = set()
        current = list(cells)
        for _ in range(4):
            key = _normalised_cells(current)
            if key not in seen:
                seen.add(key)
                classes.append((name, key))
            current = [(c, -r) for r, c in current]  # rotate 90 degrees
    return classes


TETROMINO_CLASSES = _tetromino_classes()  # 19 (piece, cells) classes


def _sample_grid(image_size: int, antialias: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample centres in [0, 1]: x (columns) and y (rows), each ``(S*a, S*a)``."""
    n = image_size * antialias
    centres = (np.arange(n, dtype=np.float32) + 0.5) / n
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return x, y


def _downsample(
    image: np.ndarray, labels: np.ndarray, antialias: int, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Box-filter a super-sampled ``(3, S*a, S*a)`` image; majority label per pixel (ties: lower label)."""
    if antialias == 1:
        return image, labels
    a = antialias
    size = image.shape[1] // a
    image = image.reshape(3, size, a, size, a).mean(axis=(2, 4))
    one_hot = labels[None] == np.arange(num_labels)[:, None, None]  # (L, S*a, S*a)
    counts = one_hot.reshape(num_labels, size, a, size, a).sum(axis=(2, 4))  # (L, S, S)
    return image.astype(np.float32), counts.argmax(axis=0)


class SpritesDataset(ProceduralDataset):
    """Multi-dSprites-like scenes: squares, ellipses and hearts with random HSV colours.

    Each sprite: shape uniform, scale U[0.5, 1] (half-size 0.1-0.2 of the image), angle U[0, 2 pi), centre
    x, y ~ U[0.15, 0.85], colour HSV with H ~ U[0, 1], S, V ~ U[0.5, 1]. Sprites are re-sampled until each
    keeps ``min_visible_fraction`` of its own area visible after occlusion (checked at 64x64).

    Args:
        name, split, image_size, seed, num_samples: see :class:`ProceduralDataset`.
        min_objects, max_objects: sprites per image; K = ``max_objects``.
        antialias: supersampling factor per pixel side.
        background: "gray" (random grey level), "black" or "colored" (random HSV colour).
        min_visible_fraction: minimum unoccluded fraction of each sprite.
    """

    has_masks = True
    has_properties = False

    def __init__(
        self,
        name: str,
        split: str,
        image_size: int,
        seed: int,
        num_samples: int | None,
        *,
        min_objects: int,
        max_objects: int,
        antialias: int,
        background: str,
        min_visible_fraction: float,
    ) -> None:
        super().__init__(name, split, image_size, seed, num_samples)
        check_range(name, "max_objects", max_objects, 1, 20)
        check_range(name, "min_objects", min_objects, 0, max_objects)
        check_range(name, "antialias", antialias, 1, 8)
        check_range(name, "min_visible_fraction", min_visible_fraction, 0.0, 1.0)
        if background not in ("gray", "black", "colored"):
            raise ValueError(
                f"dataset {name!r}: option background={background!r}; valid: gray, black, colored"
            )
        self.min_objects = int(min_objects)
        self.num_objects_max = int(max_objects)
        self.antialias = int(antialias)
        self.background = background
        self.min_visible_fraction = float(min_visible_fraction)

    @staticmethod
    def _inside(sprite: dict[str, Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean coverage of one sprite at sample points ``x, y`` (image coordinates in [0, 1])."""
        half = 0.2 * sprite["scale"]
        cs, sn = math.cos(sprite["angle"]), math.sin(sprite["angle"])
        dx, dy = x - sprite["x"], y - sprite["y"]
        u = (cs * dx + sn * dy) / half
        v = (cs * dy - sn * dx) / half
        if sprite["shape"] == "square":
            return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
        if sprite["shape"] == "ellipse":
            return u * u + (v / 0.55) ** 2 <= 1.0
        # Heart: (X^2 + Y^2 - 1)^3 - X^2 Y^3 <= 0, Y pointing up the image, centred on its bounding box.
        hx, hy = u * 1.15, -v * 1.15 + 0.12
        return (hx * hx + hy * hy - 1.0) ** 3 - hx * hx * hy**3 <= 0.0

    def _labels(self, sprites: list[dict[str, Any]], x: np.ndarray, y: np.ndarray) -> np.ndarray:
        labels = np.zeros(x.shape, np.int64)
        for k, sprite in enumerate(sprites):
            labels[self._inside(sprite, x, y)] = k + 1
        return labels

    def sample_scene(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        if self.background == "gray":
            background = [float(rng.uniform(0.0, 1.0))] * 3
        elif self.background == "colored":
            background = list(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1), rng.uniform(0.5, 1)))
        else:
            background = [0.0, 0.0, 0.0]
        x, y = _sample_grid(64, 1)
        for _ in range(100):
            num = int(rng.integers(self.min_objects, self.num_objects_max + 1))
            sprites = []
            for _ in range(num):
                colour = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
                sprites.append(
                    {
                        "shape": SPRITE_SHAPES[int(rng.integers(3))],
                        "scale": float(rng.uniform(0.5, 1.0)),
                        "angle": float(rng.uniform(0.0, 2 * math.pi)),
                        "x": float(rng.uniform(0.15, 0.85)),
                        "y": float(rng.uniform(0.15, 0.85)),
                        "color": [float(c) for c in colour],
                    }
                )
            labels = self._labels(sprites, x, y)
            visible = np.bincount(labels.ravel(), minlength=num + 1)[1:]
            area = np.array([self._inside(s, x, y).sum() for s in sprites])
            if (visible >= self.min_visible_fraction * np.maximum(area, 1)).all() and (area > 0).all():
                break
        return {"background": background, "objects": sprites}

    def render_sample(self, index: int) -> RenderedSample:
        scene = self.sample_scene(index)
        x, y = _sample_grid(self.image_size, self.antialias)
        labels = self._labels(scene["objects"], x, y)
        palette = np.array([scene["background"]] + [s["color"] for s in scene["objects"]], np.float32)
        image = palette[labels].transpose(2, 0, 1)  # (3, S*a, S*a)
        image, labels = _downsample(image, labels, self.antialias, len(palette))
        return RenderedSample(image=np.ascontiguousarray(image), labels=labels, properties=None, scene=scene)


class TetrominoesDataset(ProceduralDataset):
    """Tetrominoes-like scenes: pieces from 19 piece/orientation classes on a black background.

    Pieces lie on a ``grid_size`` x ``grid_size`` block grid (7 blocks of 5 pixels at 35x35) and never share
    a block (they may touch); colours from 6 saturated colours.

    Args:
        name, split, image_size, seed, num_samples: see :class:`ProceduralDataset`.
        num_pieces: pieces per image; K = ``num_pieces``.
        grid_size: blocks per image side.
        antialias: supersampling factor per pixel side.
    """

    has_masks = True
    has_properties = False

    def __init__(
        self,
        name: str,
        split: str,
        image_size: int,
        seed: int,
        num_samples: int | None,
        *,
        num_pieces: int,
        grid_size: int,
        antialias: int,
    ) -> None:
        super().__init__(name, split, image_size, seed, num_samples)
        check_range(name, "grid_size", grid_size, 4, 32)
        check_range(name, "num_pieces", num_pieces, 1, (grid_size * grid_size) // 8)
        check_range(name, "antialias", antialias, 1, 8)
        self.num_objects_max = int(num_pieces)
        self.grid_size = int(grid_size)
        self.antialias = int(antialias)

    def sample_scene(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        grid = np.zeros((self.grid_size, self.grid_size), np.int64)
        pieces: list[dict[str, Any]] = []
        colours = list(TETROMINO_COLORS)
        for _ in range(10_000):
            if len(pieces) == self.num_objects_max:
                break
            class_index = int(rng.integers(len(TETROMINO_CLASSES)))
            piece, cells = TETROMINO_CLASSES[class_index]
            height = 1 + max(r for r, _ in cells)
            width = 1 + max(c for _, c in cells)
            row = int(rng.integers(self.grid_size - height + 1))
            col = int(rng.integers(self.grid_size - width + 1))
            if any(grid[row + r, col + c] for r, c in cells):
                continue
            for r, c in cells:
                grid[row + r, col + c] = len(pieces) + 1
            pieces.append(
                {
                    "piece": piece,
                    "class": class_index,
                    "row": row,
                    "col": col,
                    "color": colours[int(rng.integers(len(colours)))],
                }
            )
        else:
            raise RuntimeError(f"{self.name}: could not place {self.num_objects_max} pieces (index {index})")
        return {"grid": grid.tolist(), "objects": pieces}

    def render_sample(self, index: int) -> RenderedSample:
        scene = self.sample_scene(index)
        grid = np.asarray(scene["grid"], np.int64)
        x, y = _sample_grid(self.image_size, self.antialias)
        cells_x = np.minimum((x * self.grid_size).astype(np.int64), self.grid_size - 1)
        cells_y = np.minimum((y * self.grid_size).astype(np.int64), self.grid_size - 1)
        labels = grid[cells_y, cells_x]
        palette = np.array(
            [(0.0, 0.0, 0.0)] + [TETROMINO_COLORS[p["color"]] for p in scene["objects"]], np.float32
        )
        image = palette[labels].transpose(2, 0, 1)
        image, labels = _downsample(image, labels, self.antialias, len(palette))
        return RenderedSample(image=np.ascontiguousarray(image), labels=labels, properties=None, scene=scene)


register_procedural("sprites", SpritesDataset, SPRITES_DEFAULTS, "Multi-dSprites-like 2D sprites (masks)")
register_procedural(
    "tetrominoes", TetrominoesDataset, TETROMINOES_DEFAULTS, "Tetrominoes-like pieces on a block grid (masks)"
)

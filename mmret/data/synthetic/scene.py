"""The symbolic "shapes" world: objects, scenes, one-attribute edits and their sampling.

A scene is 1-3 objects on a 3x3 grid (at most one object per cell) over a textured
background. Each object has a shape, a colour, a size and a cell; small objects are
additionally jittered inside their cell (``dx``, ``dy``), which changes pixels but never
the description. The background (texture x tone) is never mentioned in captions or edit
texts; its texture defines the FashionIQ-style category (see ``CATEGORY_OF_TEXTURE``).

Cells are numbered row-major::

    0 1 2
    3 4 5
    6 7 8
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (250, 215, 20),
    "purple": (140, 40, 190),
    "orange": (250, 130, 10),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SIZES: tuple[str, ...] = ("small", "large")
NUM_CELLS = 9
TEXTURES: tuple[str, ...] = ("plain", "stripes", "checks")
TONES: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "slate": (105, 122, 140),
    "sand": (150, 136, 112),
}
#: FashionIQ directory keys -> background texture of the images in that "category".
CATEGORY_OF_TEXTURE: dict[str, str] = {"plain": "dress", "stripes": "shirt", "checks": "toptee"}
#: Edit kinds, each changing exactly one thing of the scene.
EDIT_KINDS: tuple[str, ...] = ("color", "shape", "size", "move", "add", "remove")
MAX_OBJECTS = 3
JITTER_STEPS = 3  # small objects move by dx, dy in [-3, 3] units of their free cell margin / 3


@dataclass(frozen=True, order=True)
class Obj:
    """One object. ``cell`` in [0, 9); ``dx``, ``dy`` in [-3, 3] (pixel jitter, small only)."""

    cell: int
    shape: str
    color: str
    size: str
    dx: int = 0
    dy: int = 0

    @property
    def key(self) -> tuple[int, str, str, str]:
        """The described content (everything but the jitter)."""
        return (self.cell, self.shape, self.color, self.size)


@dataclass(frozen=True)
class Scene:
    """A full image specification: objects sorted by cell, background texture and tone."""

    objects: tuple[Obj, ...]
    texture: str
    tone: str

    @property
    def content_key(self) -> tuple:
        """What captions can describe (objects without jitter)."""
        return tuple(o.key for o in self.objects)

    @property
    def full_key(self) -> tuple:
        """Content plus background: two scenes with equal full keys look identical up to jitter."""
        return (self.content_key, self.texture, self.tone)

    @property
    def category(self) -> str:
        return CATEGORY_OF_TEXTURE[self.texture]

    def free_cells(self) -> list[int]:
        used = {o.cell for o in self.objects}
        return [c for c in range(NUM_CELLS) if c not in used]


@dataclass(frozen=True)
class Edit:
    """One edit of one object. ``old`` is the edited object in the reference scene (None for
    "add"); ``new`` its state in the target (None for "remove"). ``ref_size`` says whether
    the referring expression must mention the size to identify ``old`` uniquely."""

    kind: str
    old: Obj | None
    new: Obj | None
    ref_size: bool = False


def _jitter(rng: random.Random, size: str) -> tuple[int, int]:
    if size == "large":
        return 0, 0
    return rng.randint(-JITTER_STEPS, JITTER_STEPS), rng.randint(-JITTER_STEPS, JITTER_STEPS)


def random_object(rng: random.Random, cell: int) -> Obj:
    size = rng.choice(SIZES)
    dx, dy = _jitter(rng, size)
    return Obj(cell, rng.choice(SHAPES), rng.choice(list(COLORS)), size, dx, dy)


def random_scene(rng: random.Random, count_weights: tuple[float, ...] = (0.15, 0.4, 0.45)) -> Scene:
    """A random scene with 1..3 objects (probabilities ``count_weights``)."""
    n = rng.choices(range(1, MAX_OBJECTS + 1), weights=count_weights)[0]
    cells = sorted(rng.sample(range(NUM_CELLS), n))
    objects = tuple(random_object(rng, c) for c in cells)
    return Scene(objects, rng.choice(TEXTURES), rng.choice(list(TONES)))


def reference_needs_size(scene: Scene, obj: Obj) -> bool | None:
    """How to refer to ``obj`` uniquely: False = "colour shape" suffices, True = "size colour
    shape" is needed, None = not uniquely describable without position (not editable)."""
    others = [o for o in scene.objects if o != obj]
    if all((o.color, o.shape) != (obj.color, obj.shape) for o in others):
        return False
    if all((o.color, o.shape, o.size) != (obj.color, obj.shape, obj.size) for o in others):
        return True
    return None


def applicable_kinds(scene: Scene) -> list[str]:
    kinds = ["color", "shape", "size", "move"]
    if len(scene.objects) < MAX_OBJECTS:
        kinds.append("add")
    if len(scene.objects) > 1:
        kinds.append("remove")
    return kinds


def random_edit(rng: random.Random, scene: Scene) -> Edit | None:
    """A random one-attribute edit of ``scene`` (None if the drawn edit is impossible)."""
    kind = rng.choice(applicable_kinds(scene))
    if kind == "add":
        return Edit("add", None, random_object(rng, rng.choice(scene.free_cells())))
    editable = [o for o in scene.objects if reference_needs_size(scene, o) is not None]
    if not editable:
        return None
    old = rng.choice(editable)
    ref_size = bool(reference_needs_size(scene, old))
    if kind == "remove":
        return Edit("remove", old, None, ref_size)
    if kind == "color":
        new = replace(old, color=rng.choice([c for c in COLORS if c != old.color]))
    elif kind == "shape":
        new = replace(old, shape=rng.choice([s for s in SHAPES if s != old.shape]))
    elif kind == "size":
        size = "small" if old.size == "large" else "large"
        dx, dy = _jitter(rng, size)
        new = replace(old, size=size, dx=dx, dy=dy)
    else:  # move
        new = replace(old, cell=rng.choice(scene.free_cells()))
    return Edit(kind, old, new, ref_size)


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The target scene of ``edit`` (background unchanged)."""
    objects = [o for o in scene.objects if o != edit.old]
    if edit.old is not None and len(objects) != len(scene.objects) - 1:
        raise ValueError(f"edit refers to an object not in the scene: {edit.old}")
    if edit.new is not None:
        if edit.new.cell in {o.cell for o in objects}:
            raise ValueError(f"cell {edit.new.cell} is occupied")
        objects.append(edit.new)
    if not 1 <= len(objects) <= MAX_OBJECTS:
        raise ValueError(f"an edit must leave 1..{MAX_OBJECTS} objects, got {len(objects)}")
    return Scene(tuple(sorted(objects)), scene.texture, scene.tone)

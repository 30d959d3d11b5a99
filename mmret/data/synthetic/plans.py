"""Language-independent caption plans.

A caption is first planned as a template kind plus a list of mentions (which objects,
with which attributes); every language then realises the same plan, so caption ``c`` of
image ``i`` carries the same content in every language. Colour and shape are always
mentioned; size and position are optional per mention.

Template kinds:

- ``list``: a bare enumeration ("A red circle in the top left and a blue square.");
- ``there_is``: an existential sentence ("There is ...");
- ``image_with``: "An image with ...";
- ``count``: the number of objects followed by all of them, without positions
  ("Two shapes: a red circle and a blue square.").

Caption slots for an image with objects ``O`` (``n = |O|``), in this order:

0. ``list`` of all objects, positions on, sizes at random;
1. ``there_is`` of all objects in random order, positions on, sizes at random;
2. ``image_with`` of all objects, positions and sizes at random;
3. partial: if ``n >= 2`` one random object (random non-count kind, position on), else
   ``there_is`` of the single object with its size and without position;
4. ``count`` of all objects, sizes at random.

Slots beyond 5 repeat kinds 0-2 with fresh random choices.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mmret.data.synthetic.scene import Obj, Scene

TEMPLATE_KINDS: tuple[str, ...] = ("list", "there_is", "image_with", "count")


@dataclass(frozen=True)
class Mention:
    """One object in a caption: colour and shape always, size and position if flagged."""

    obj: Obj
    size: bool
    pos: bool


@dataclass(frozen=True)
class CaptionPlan:
    kind: str
    mentions: tuple[Mention, ...]


def _mentions(rng: random.Random, objects: list[Obj], pos: float, size: float) -> tuple:
    return tuple(Mention(o, rng.random() < size, rng.random() < pos) for o in objects)


def plan_captions(rng: random.Random, scene: Scene, num_captions: int = 5) -> list[CaptionPlan]:
    """``num_captions`` caption plans for ``scene`` (see the module docstring)."""
    objects = list(scene.objects)
    plans: list[CaptionPlan] = []
    for slot in range(num_captions):
        kind_slot = slot if slot < 5 else (slot - 5) % 3
        if kind_slot == 0:
            plans.append(CaptionPlan("list", _mentions(rng, objects, 1.0, 0.5)))
        elif kind_slot == 1:
            shuffled = rng.sample(objects, len(objects))
            plans.append(CaptionPlan("there_is", _mentions(rng, shuffled, 1.0, 0.5)))
        elif kind_slot == 2:
            plans.append(CaptionPlan("image_with", _mentions(rng, objects, 0.5, 0.5)))
        elif kind_slot == 3:
            if len(objects) >= 2:
                kind = rng.choice(("list", "there_is", "image_with"))
                plans.append(CaptionPlan(kind, _mentions(rng, [rng.choice(objects)], 1.0, 0.5)))
            else:
                plans.append(CaptionPlan("there_is", _mentions(rng, objects, 0.0, 1.0)))
        else:
            plans.append(CaptionPlan("count", _mentions(rng, objects, 0.0, 0.5)))
    return plans

"""Plan a whole synthetic dataset (everything but pixels) from one seed.

Images come in two kinds of units, never split across train/val/test:

- *groups* of ``GROUP_SIZE`` = 6 images: a base scene and 5 distinct one-edit variants of
  it (change colour, shape, size or position of one object, add or remove one object).
  Each variant gives one composed-retrieval triplet (base, modification text, variant);
  the group is the CIRR ``img_set``. Group members are each other's hard negatives;
- *singletons*: independent random scenes.

A fraction ``group_fraction`` of each split's images belongs to groups. Scenes are unique
by content (objects without jitter) as long as the scene space allows; past that, unique
by content plus background (a warning-free fallback that only very large datasets of
single-object scenes reach).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mmret.data.synthetic.plans import CaptionPlan, plan_captions
from mmret.data.synthetic.scene import Edit, Scene, apply_edit, random_edit, random_scene

GROUP_SIZE = 6
_SCENE_ATTEMPTS = 200
_EDIT_ATTEMPTS = 80


@dataclass(frozen=True)
class PlannedImage:
    index: int
    name: str
    split: str
    scene: Scene
    captions: tuple[CaptionPlan, ...]
    group: int | None  # group id, None for singletons


@dataclass(frozen=True)
class PlannedTriplet:
    pair_id: int  # running per split
    split: str
    group: int
    reference: str  # image names
    target: str
    edit: Edit
    cirr_variant: int  # which of the two phrasings the CIRR-style caption uses
    members: tuple[str, ...]


@dataclass
class DatasetPlan:
    images: list[PlannedImage] = field(default_factory=list)
    triplets: list[PlannedTriplet] = field(default_factory=list)
    split_counts: dict[str, int] = field(default_factory=dict)
    num_groups: dict[str, int] = field(default_factory=dict)


def split_counts(num_images: int, splits: Mapping[str, float]) -> dict[str, int]:
    """Images per split: ``floor(fraction * num_images)``, the remainder to the first split.

    ``splits`` maps split name -> fraction (summing to 1) or -> absolute count (ints summing
    to ``num_images``).
    """
    if not splits:
        raise ValueError("splits must name at least one split")
    values = list(splits.values())
    if any(v < 0 for v in values):
        raise ValueError(f"split sizes must be non-negative, got {dict(splits)}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and sum(values) > 1:
        if sum(values) != num_images:
            raise ValueError(f"split counts {dict(splits)} sum to {sum(values)}, not {num_images}")
        return dict(splits)  # type: ignore[arg-type]
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {dict(splits)} must sum to 1")
    counts = {name: int(frac * num_images) for name, frac in splits.items()}
    first = next(iter(counts))
    counts[first] += num_images - sum(counts.values())
    return counts


class _Registry:
    """Remembers used scenes; ``novelty`` is 2 if new by content, 1 if only by background."""

    def __init__(self) -> None:
        self.content: set = set()
        self.full: set = set()

    def novelty(self, scene: Scene, pending: Sequence[Scene] = ()) -> int:
        content = {s.content_key for s in pending}
        full = {s.full_key for s in pending}
        if scene.content_key not in self.content and scene.content_key not in content:
            return 2
        if scene.full_key not in self.full and scene.full_key not in full:
            return 1
        return 0

    def add(self, scene: Scene) -> None:
        self.content.add(scene.content_key)
        self.full.add(scene.full_key)


def _unique_scene(rng: random.Random, registry: _Registry) -> Scene:
    fallback = None
    for _ in range(_SCENE_ATTEMPTS):
        scene = random_scene(rng)
        novelty = registry.novelty(scene)
        if novelty == 2:
            return scene
        if novelty == 1 and fallback is None:
            fallback = scene
    if fallback is None:
        raise RuntimeError("the shapes world ran out of distinct scenes; generate fewer images")
    return fallback


def _group(rng: random.Random, registry: _Registry) -> tuple[Scene, list[tuple[Edit, Scene]]]:
    while True:
        base = _unique_scene(rng, registry)
        chosen: list[tuple[Edit, Scene]] = []
        backup: list[tuple[Edit, Scene]] = []
        for _ in range(_EDIT_ATTEMPTS):
            edit = random_edit(rng, base)
            if edit is None:
                continue
            target = apply_edit(base, edit)
            pending = [base] + [s for _, s in chosen + backup]
            novelty = registry.novelty(target, pending)
            if novelty == 2:
                chosen.append((edit, target))
            elif novelty == 1:
                backup.append((edit, target))
            if len(chosen) == GROUP_SIZE - 1:
                break
        chosen = (chosen + backup)[: GROUP_SIZE - 1]
        if len(chosen) == GROUP_SIZE - 1:
            return base, chosen


def plan_dataset(
    num_images: int,
    seed: int,
    splits: Mapping[str, float],
    group_fraction: float = 0.6,
    captions_per_image: int = 5,
) -> DatasetPlan:
    """Plan ``num_images`` images (scenes, caption plans, splits, groups, triplets)."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if not 0.0 <= group_fraction <= 1.0:
        raise ValueError(f"group_fraction must be in [0, 1], got {group_fraction}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    rng = random.Random(seed)
    registry = _Registry()
    plan = DatasetPlan(split_counts=split_counts(num_images, splits))
    group_id = 0

    def add_image(split: str, scene: Scene, group: int | None) -> str:
        registry.add(scene)
        index = len(plan.images)
        name = f"img{index:06d}"
        captions = tuple(plan_captions(rng, scene, captions_per_image))
        plan.images.append(PlannedImage(index, name, split, scene, captions, group))
        return name

    for split, count in plan.split_counts.items():
        groups = min(round(count * group_fraction / GROUP_SIZE), count // GROUP_SIZE)
        plan.num_groups[split] = groups
        units = ["group"] * groups + ["single"] * (count - GROUP_SIZE * groups)
        rng.shuffle(units)
        pair_id = 0
        for unit in units:
            if unit == "single":
                add_image(split, _unique_scene(rng, registry), None)
                continue
            base, variants = _group(rng, registry)
            names = [add_image(split, base, group_id)]
            names += [add_image(split, target, group_id) for _, target in variants]
            for (edit, _), target_name in zip(variants, names[1:], strict=True):
                plan.triplets.append(
                    PlannedTriplet(
                        pair_id,
                        split,
                        group_id,
                        names[0],
                        target_name,
                        edit,
                        rng.randrange(2),
                        tuple(names),
                    )  # fmt: skip
                )
                pair_id += 1
            group_id += 1
    return plan

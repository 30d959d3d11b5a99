"""Tests of the composed-retrieval data layer: datasets with seeded keys, CIRR img_set
groups, FashionIQ categories, split merging, triplet generation and the shapes describer."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmret.data.composed import (
    FASHIONIQ_CATEGORIES,
    ComposedGalleryDataset,
    ComposedQueryDataset,
    ComposedTrainDataset,
    concat_composed_splits,
    load_cirr,
    load_fashioniq,
    load_fashioniq_categories,
)
from mmret.data.seeding import derive_seed, seeded_random, split_key
from mmret.data.synthetic import generate, layout, render_scene
from mmret.data.synthetic.describer import ShapesDescriber
from mmret.data.synthetic.scene import Obj, Scene, random_scene
from mmret.data.triplets import (
    content_hash,
    generate_triplets,
    load_generated_triplets,
    load_training_split,
    modification_text,
    window_candidates,
)
from mmret.data.triplets_cli import main as triplets_main
from mmret.data.triplets_cli import pixel_embed


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_cir")
    generate(root, num_images=60, seed=3, workers=1, progress=False)
    return layout(root)


def _random_crop_transform(image):
    """A random transform: a random 1-pixel shift, so seeds matter."""
    dx = int(torch.randint(0, 5, ()).item())
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255
    return torch.roll(x, dx, dims=2)


def test_cirr_groups_and_subset_indices(shapes):
    c = load_cirr(shapes.cirr_root, "train", image_root=shapes.root)
    raw = json.loads((shapes.cirr_root / "captions" / "cap.rc2.train.json").read_text())
    assert c.group_ids == [r["img_set"]["id"] for r in raw]
    sub = c.subset_indices()
    assert sub.shape == (c.num_queries, 6)
    for q in range(c.num_queries):
        assert sub[q].tolist() == c.members[q]
    assert c.reference_tensor().tolist() == c.reference_index
    assert c.target_tensor().tolist() == c.target_index
    assert c.num_images == len(c.gallery_paths)


def test_query_dataset_items_and_seeded_keys(shapes):
    c = load_cirr(shapes.cirr_root, "train", image_root=shapes.root)
    ds = ComposedTrainDataset(c, _random_crop_transform,
                              tokenizer=lambda texts: torch.ones(len(texts), 4, dtype=torch.long))
    item = ds[(3, 12345)]
    assert set(item) == {"reference_image", "target_image", "modification", "reference_id",
                         "target_id", "image_id", "query_index", "text"}
    assert item["reference_id"] == c.reference_index[3] and item["target_id"] == c.target_index[3]
    assert item["image_id"] == item["target_id"] and item["modification"] == c.modifications[3]
    again = ds[(3, 12345)]
    assert torch.equal(item["reference_image"], again["reference_image"])
    assert torch.equal(item["target_image"], again["target_image"])
    shifts = {tuple(ds[(3, s)]["reference_image"][0, 10, :8].tolist()) for s in range(12)}
    assert len(shifts) > 1  # the seed drives the random transform
    light = ComposedTrainDataset(c, load_images=False)[3]
    assert set(light) == {"modification", "reference_id", "target_id", "image_id", "query_index"}
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    with pytest.raises(KeyError, match=r"an \(index, seed\) pair"):
        ds[(1, 2, 3)]


def test_seeding_helpers_restore_state():
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with seeded_random(9):
        a = torch.rand(3)
        r = random.random()
    with seeded_random(9):
        assert torch.equal(torch.rand(3), a) and random.random() == r
    assert torch.equal(torch.rand(2), expected)  # outer RNG untouched
    assert derive_seed(1, 0) != derive_seed(1, 1) and split_key(4) == (4, None)
    assert split_key((4, 7)) == (4, 7)


def test_hidden_targets_query_dataset_and_gallery(shapes, tmp_path):
    c = load_cirr(shapes.cirr_root, "val", image_root=shapes.root)
    gallery = ComposedGalleryDataset(c)
    assert len(gallery) == c.num_images and gallery[2]["image_id"] == 2
    assert gallery[(1, 99)]["image"].shape == (3, 64, 64)
    refs = set(c.reference_index)
    assert len(refs) < c.num_images  # the gallery is every image, not only references
    (tmp_path / "image_splits").mkdir()
    (tmp_path / "captions").mkdir()
    relative = [str(Path(p).relative_to(shapes.root)) for p in c.gallery_paths[:2]]
    (tmp_path / "image_splits" / "split.rc2.test1.json").write_text(json.dumps(
        {"a": relative[0], "b": relative[1]}))
    (tmp_path / "captions" / "cap.rc2.test1.json").write_text(json.dumps(
        [{"pairid": 1, "reference": "a", "caption": "x", "img_set": {"id": 3,
                                                                      "members": ["a", "b"]}}]))
    hidden = load_cirr(tmp_path, "test1", image_root=shapes.root)
    item = ComposedQueryDataset(hidden)[0]
    assert item["target_id"] == -1 and "target_image" not in item and hidden.group_ids == [3]


def test_fashioniq_categories_and_merge(shapes):
    per = load_fashioniq_categories(shapes.fashioniq_root, "train",
                                    image_root=shapes.images_dir, template="{c1}; {c2}")
    assert list(per) == list(FASHIONIQ_CATEGORIES)
    assert all("; " in m for s in per.values() for m in s.modifications)
    merged = concat_composed_splits(list(per.values()))
    assert merged.num_queries == sum(s.num_queries for s in per.values())
    assert merged.num_images == sum(s.num_images for s in per.values())  # disjoint categories
    q = 0
    for split in per.values():
        for k in range(split.num_queries):
            assert merged.gallery_paths[merged.reference_index[q]] == split.gallery_paths[
                split.reference_index[k]]
            assert merged.gallery_paths[merged.target_index[q]] == split.gallery_paths[
                split.target_index[k]]
            q += 1
    twice = concat_composed_splits([per["dress"], per["dress"]])
    assert twice.num_images == per["dress"].num_images and twice.num_queries == 2 * per[
        "dress"].num_queries
    with pytest.raises(ValueError, match="categories: expected a list"):
        load_fashioniq_categories(shapes.fashioniq_root, "train", "dress")


def test_shapes_describer_reads_pixels():
    scene = Scene((Obj(0, "circle", "red", "large"), Obj(8, "star", "blue", "small", 1, -2)),
                  "stripes", "sand")
    d = ShapesDescriber()
    assert d([render_scene(scene, 64)]) == ["a large red circle and a small blue star"]
    rng = random.Random(0)
    correct = total = 0
    for _ in range(40):
        s = random_scene(rng)
        found = {c: (size, col, shape) for c, size, col, shape in d.objects(render_scene(s, 64))}
        assert set(found) == {o.cell for o in s.objects}
        for o in s.objects:
            total += 1
            correct += found[o.cell] == (o.size, o.color, o.shape)
    assert correct / total > 0.95


def test_window_candidates_respect_the_rank_window():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)).astype(np.float32)
    cand = window_candidates(x, 5, 12, 4, seed=1)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i in range(30):
        scores = xn @ xn[i]
        order = [j for j in np.argsort(-scores, kind="stable") if j != i]
        assert set(cand[i].tolist()) <= set(order[5:12]) and len(set(cand[i].tolist())) == 4
    with pytest.raises(ValueError, match="rank_max: 40 exceeds the 29 other images"):
        window_candidates(x, 5, 40, 1)
    assert modification_text("Unlike {ref}, I want {tgt}", "a cat.", " a dog ") == \
        "Unlike a cat, I want a dog"


def _scene_images(folder, count=24, seed=0, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for k in range(count):
        path = folder / f"s{k:03d}.png"
        render_scene(random_scene(rng), size).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("fmt", ["cirr", "fashioniq"])
def test_generate_triplets_round_trip(tmp_path, fmt):
    paths = _scene_images(tmp_path / "imgs")
    dup = tmp_path / "imgs" / "zzdup.png"
    shutil.copy(paths[3], dup)  # an exact duplicate (same pixels, other name)
    calls = []

    def captioner(images):
        calls.append(len(images))
        return ShapesDescriber()(images)

    out = tmp_path / f"gen_{fmt}"
    report = generate_triplets(paths + [str(dup)], captioner, out, format=fmt, rank_min=2,
                               rank_max=10, seed=4, embed_fn=pixel_embed(8), batch_size=10,
                               progress=False)
    assert report.num_duplicates == 1 and report.duplicates == [(str(dup), paths[3])]
    assert report.num_unique == 24 and report.num_triplets == 24 and sum(calls) == 24
    split = load_generated_triplets(out)
    assert split.num_queries == 24 and split.has_targets
    for q, path in enumerate(paths):  # query q's reference is unique image q
        assert _same_file(split.gallery_paths[split.reference_index[q]], path)
    manifest = json.loads((out / "triplets_manifest.json").read_text())
    captions = manifest["image_captions"]
    assert manifest["num_duplicates"] == 1
    for q in range(24):
        ref = split.gallery_paths[split.reference_index[q]]
        tgt = split.gallery_paths[split.target_index[q]]
        assert content_hash(ref) == content_hash(paths[q]) and ref != tgt
        mods = split.modifications[q]
        assert captions[paths[q]] in mods or captions[_orig(paths, tgt)] in mods
    if fmt == "cirr":
        assert all(len(m) == 6 and m[0] == r for m, r in zip(split.members,
                                                             split.reference_index,
                                                             strict=True))
        direct = load_cirr(out, "train")
        assert direct.modifications == split.modifications
    else:
        direct = load_fashioniq(out, "dress", "train", image_root=tmp_path / "imgs")
        assert direct.target_index == split.target_index
        assert all(" and " in m for m in split.modifications)


def _same_file(a, b):
    return Path(a).resolve() == Path(b).resolve()


def _orig(paths, resolved):
    return next(p for p in paths if _same_file(p, resolved))


def test_generated_triplets_mix_into_training(shapes, tmp_path):
    other = tmp_path / "other_shapes"  # images of another shapes benchmark: new images
    generate(other, num_images=16, seed=11, languages=("en",), workers=1, progress=False)
    paths = sorted(str(p) for p in layout(other).images_dir.glob("*.png"))
    generate_triplets(paths, ShapesDescriber(), tmp_path / "gen", rank_min=1, rank_max=8,
                      embed_fn=pixel_embed(8), progress=False)
    train = load_cirr(shapes.cirr_root, "train", image_root=shapes.root)
    assert load_training_split(train, None) is train and load_training_split(train, []) is train
    mixed = load_training_split(train, str(tmp_path / "gen"))
    assert mixed.num_queries == train.num_queries + 16
    assert mixed.num_images == train.num_images + 16
    item = ComposedTrainDataset(mixed, load_images=False)[train.num_queries + 2]
    assert item["reference_id"] >= train.num_images


def test_triplets_cli_and_errors(shapes, tmp_path, capsys):
    listing = tmp_path / "images.txt"  # 12 images of the shapes benchmark, one per line
    listing.write_text("".join(f"{p}\n" for p in sorted(shapes.images_dir.glob("*.png"))[:12]))
    rc = triplets_main(["--images", str(listing), "--out", str(tmp_path / "o"),
                        "--rank-min", "1", "--rank-max", "6", "--no-progress",
                        "--template", "{tgt} instead of {ref}"])
    assert rc == 0 and "12 triplets" in capsys.readouterr().out
    assert load_generated_triplets(tmp_path / "o").num_queries == 12
    assert triplets_main(["--images", str(listing), "--out", str(tmp_path / "p"),
                          "--rank-max", "50", "--no-progress"]) == 2
    assert "rank_max: 50 exceeds" in capsys.readouterr().err
    # scenes rendered outside a generated benchmark are not shapes-benchmark images
    _scene_images(tmp_path / "imgs", count=12)
    assert triplets_main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "q"),
                          "--rank-min", "1", "--rank-max", "6", "--no-progress"]) == 2
    assert "shapes benchmark only: 12 of 12 images" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"must use the fields \{ref\} and/or \{tgt\} only"):
        generate_triplets([], ShapesDescriber(), tmp_path / "q", templates=["{x}"],
                          embed_fn=pixel_embed())
    with pytest.raises(ValueError, match="embed_fn: required"):
        generate_triplets([], ShapesDescriber(), tmp_path / "q")


def test_fashioniq_format_needs_one_folder(tmp_path):
    a = _scene_images(tmp_path / "a", count=6)
    b = _scene_images(tmp_path / "b", count=6, seed=1)
    with pytest.raises(ValueError, match="must share one folder"):
        # a plain function: the caller's own captioner, not the benchmark-only describer
        generate_triplets(a + b, lambda ims: ShapesDescriber()(ims), tmp_path / "o",
                          format="fashioniq", rank_min=1, rank_max=5, embed_fn=pixel_embed(8),
                          progress=False)


def test_collator_batch_fields(shapes):
    from mmret.data.composed import ComposedCollator

    c = load_cirr(shapes.cirr_root, "train", image_root=shapes.root)
    ds = ComposedTrainDataset(c)
    tok = lambda texts: torch.arange(3 * len(texts)).reshape(len(texts), 3)  # noqa: E731
    batch = ComposedCollator(tok)([ds[(0, 1)], ds[(4, 2)]])
    assert batch["reference_image"].shape == batch["target_image"].shape == (2, 3, 64, 64)
    assert batch["text"].shape == (2, 3) and batch["modification"] == [c.modifications[0],
                                                                       c.modifications[4]]
    assert batch["reference_ids"].tolist() == [c.reference_index[0], c.reference_index[4]]
    assert batch["target_ids"].tolist() == [c.target_index[0], c.target_index[4]]
    assert torch.equal(batch["target_index"], batch["target_ids"])
    assert torch.equal(batch["image_ids"], batch["target_ids"])
    light = ComposedCollator(tok)([ComposedTrainDataset(c, load_images=False)[1]])
    assert "reference_image" not in light and light["text"].shape == (1, 3)
    with pytest.raises(ValueError, match="empty batch"):
        ComposedCollator()([])

"""Tests of the synthetic shapes benchmark (mmret.data.synthetic)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmret.data.synthetic import SUPPORTED_LANGUAGES, generate, layout, render_scene
from mmret.data.synthetic.cli import main as cli_main
from mmret.data.synthetic.generate import DEFAULT_SPLITS
from mmret.data.synthetic.languages import LANGUAGES, cs, de, fr, get_language, ja, zh
from mmret.data.synthetic.planner import GROUP_SIZE, plan_dataset, split_counts
from mmret.data.synthetic.plans import CaptionPlan, Mention
from mmret.data.synthetic.render import DIAMETER
from mmret.data.synthetic.scene import (
    COLORS,
    JITTER_STEPS,
    MAX_OBJECTS,
    SHAPES,
    Edit,
    Obj,
    Scene,
    apply_edit,
    random_edit,
    random_scene,
)

N_IMAGES = 60


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "seed0"
    generate(root, num_images=N_IMAGES, seed=0, workers=1, progress=False)
    return root


def _annotation_bytes(root: Path) -> dict[str, bytes]:
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    files = {rel: (root / rel).read_bytes() for rel in manifest["files"]}
    files["manifest.json"] = (root / "manifest.json").read_bytes()
    return files


def _pixels(root: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted((root / "images").glob("*.png"))}


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_pixels(dataset, tmp_path):
    # a second generation with another worker count must not change a single byte
    other = tmp_path / "again"
    generate(other, num_images=N_IMAGES, seed=0, workers=2, progress=False)
    assert _annotation_bytes(dataset) == _annotation_bytes(other)
    first, second = _pixels(dataset), _pixels(other)
    assert first.keys() == second.keys() and len(first) == N_IMAGES
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_different_seed_gives_different_data(dataset, tmp_path):
    other = tmp_path / "seed1"
    generate(other, num_images=N_IMAGES, seed=1, workers=1, progress=False)
    a, b = _annotation_bytes(dataset), _annotation_bytes(other)
    assert a.keys() == b.keys()
    assert a["karpathy/dataset_shapes.json"] != b["karpathy/dataset_shapes.json"]
    pa, pb = _pixels(dataset), _pixels(other)
    differing = sum(not np.array_equal(pa[k], pb[k]) for k in pa)
    assert differing > N_IMAGES // 2


# --------------------------------------------------------------------------- manifest, splits


def test_manifest_counts_and_files(dataset):
    manifest = json.loads(layout(dataset).manifest.read_text(encoding="utf-8"))
    assert manifest["num_images"] == N_IMAGES
    assert manifest["languages"] == list(SUPPORTED_LANGUAGES)
    assert sum(s["images"] for s in manifest["splits"].values()) == N_IMAGES
    assert manifest["splits"] == {
        "train": {"images": 48, "groups": 5, "triplets": 25},
        "val": {"images": 6, "groups": 1, "triplets": 5},
        "test": {"images": 6, "groups": 1, "triplets": 5},
    }
    for rel in manifest["files"]:
        assert (dataset / rel).is_file(), rel
    assert len(list((dataset / "images").glob("*.png"))) == N_IMAGES
    for lang in SUPPORTED_LANGUAGES:
        for split in ("train", "val", "test"):
            assert f"iglue/{lang}/{split}.jsonl" in manifest["files"]


def test_split_counts_fractions_and_counts():
    assert split_counts(10000, DEFAULT_SPLITS) == {"train": 8000, "val": 1000, "test": 1000}
    assert split_counts(11, {"train": 0.5, "test": 0.5}) == {"train": 6, "test": 5}
    assert split_counts(30, {"train": 20, "val": 5, "test": 5}) == {
        "train": 20,
        "val": 5,
        "test": 5,
    }
    with pytest.raises(ValueError, match="sum to 1"):
        split_counts(10, {"train": 0.5, "test": 0.2})
    with pytest.raises(ValueError, match="sum to 25"):
        split_counts(30, {"train": 20, "val": 5})


def test_large_dataset_plan_has_big_test_split_and_unique_scenes():
    plan = plan_dataset(10000, seed=3, splits=DEFAULT_SPLITS)
    counts = Counter(im.split for im in plan.images)
    assert counts["test"] >= 1000 and sum(counts.values()) == 10000
    assert len({im.scene.content_key for im in plan.images}) == 10000
    assert Counter(len(im.scene.objects) for im in plan.images).keys() == {1, 2, 3}
    assert set(Counter(t.edit.kind for t in plan.triplets)) == {
        "color", "shape", "size", "move", "add", "remove",
    }  # fmt: skip


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'en'"):
        generate(tmp_path / "a", num_images=12, languages=("de",), progress=False)
    with pytest.raises(ValueError, match="unsupported caption language 'xx'"):
        generate(tmp_path / "b", num_images=12, languages=("en", "xx"), progress=False)
    with pytest.raises(ValueError, match="unknown split names"):
        generate(tmp_path / "c", num_images=12, splits={"train": 0.5, "dev": 0.5}, progress=False)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate(tmp_path / "d", num_images=12, progress=False)


def test_cli_writes_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--images", "24", "--seed", "5", "--languages", "en,ja"]
    argv += ["--splits", "train=12,val=6,test=6", "--workers", "1", "--quiet"]
    assert cli_main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["languages"] == ["en", "ja"] and manifest["seed"] == 5
    assert {s: v["images"] for s, v in manifest["splits"].items()} == {
        "train": 12,
        "val": 6,
        "test": 6,
    }
    assert "wrote 24 images" in capsys.readouterr().err
    with pytest.raises(FileExistsError):
        cli_main(argv)


# --------------------------------------------------------------------------- scenes and edits


def describe_difference(ref: Scene, tgt: Scene) -> str | None:
    """Independent checker: the single edit turning ``ref`` into ``tgt`` (None if not one)."""
    if (ref.texture, ref.tone) != (tgt.texture, tgt.tone):
        return None
    a, b = set(ref.content_key), set(tgt.content_key)
    only_a, only_b = a - b, b - a
    if len(only_a) == 0 and len(only_b) == 1:
        return "add"
    if len(only_a) == 1 and len(only_b) == 0:
        return "remove"
    if len(only_a) != 1 or len(only_b) != 1:
        return None
    (cell_a, *attrs_a), (cell_b, *attrs_b) = only_a.pop(), only_b.pop()
    if cell_a != cell_b:
        return "move" if attrs_a == attrs_b else None
    changed = [
        name
        for name, x, y in zip(("shape", "color", "size"), attrs_a, attrs_b, strict=True)
        if x != y
    ]
    return changed[0] if len(changed) == 1 else None


def _valid(scene: Scene) -> bool:
    cells = [o.cell for o in scene.objects]
    return (
        1 <= len(cells) <= MAX_OBJECTS and len(set(cells)) == len(cells) and cells == sorted(cells)
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_edits_change_exactly_one_thing(seed):
    rng = random.Random(seed)
    scene = random_scene(rng)
    assert _valid(scene)
    edit = random_edit(rng, scene)
    if edit is None:  # only when no object is uniquely describable
        return
    target = apply_edit(scene, edit)
    assert _valid(target)
    assert describe_difference(scene, target) == edit.kind


def test_apply_edit_rejects_invalid_edits():
    scene = Scene((Obj(0, "circle", "red", "large"),), "plain", "gray")
    with pytest.raises(ValueError, match="1..3 objects"):
        apply_edit(scene, Edit("remove", scene.objects[0], None))
    with pytest.raises(ValueError, match="occupied"):
        apply_edit(scene, Edit("add", None, Obj(0, "star", "blue", "small")))
    with pytest.raises(ValueError, match="not in the scene"):
        apply_edit(scene, Edit("remove", Obj(4, "star", "blue", "small"), None))


def test_groups_are_one_edit_variants_of_their_base():
    plan = plan_dataset(N_IMAGES, seed=0, splits=DEFAULT_SPLITS)
    by_name = {im.name: im for im in plan.images}
    groups = Counter(im.group for im in plan.images if im.group is not None)
    assert groups and set(groups.values()) == {GROUP_SIZE}
    for t in plan.triplets:
        assert len(set(t.members)) == GROUP_SIZE and t.reference == t.members[0]
        assert t.target in t.members and t.target != t.reference
        ref, tgt = by_name[t.reference], by_name[t.target]
        assert ref.split == tgt.split == t.split and ref.group == tgt.group == t.group
        assert describe_difference(ref.scene, tgt.scene) == t.edit.kind
        assert ref.scene.category == tgt.scene.category
    assert len({im.scene.content_key for im in plan.images}) == N_IMAGES


# --------------------------------------------------------------------------- rendering


def _centre(obj: Obj, size: int) -> tuple[int, int]:
    cell = size / 3
    margin = 0.8 * (cell - DIAMETER[obj.size] * size) / 2
    cx = (obj.cell % 3 + 0.5) * cell + obj.dx / JITTER_STEPS * margin
    cy = (obj.cell // 3 + 0.5) * cell + obj.dy / JITTER_STEPS * margin
    return int(cx), int(cy)


@pytest.mark.parametrize("size", [64, 96])
def test_objects_are_drawn_in_their_colour_at_their_position(size):
    rng = random.Random(11)
    for _ in range(40):
        scene = random_scene(rng)
        pixels = np.asarray(render_scene(scene, size)).astype(int)
        assert pixels.shape == (size, size, 3)
        for obj in scene.objects:
            x, y = _centre(obj, size)
            np.testing.assert_array_equal(pixels[y, x], COLORS[obj.color], err_msg=str(obj))
            # clearly visible: many pixels of (nearly) the object's colour inside its cell
            c0, r0 = (obj.cell % 3) * size // 3, (obj.cell // 3) * size // 3
            region = pixels[r0 : r0 + size // 3, c0 : c0 + size // 3]
            area = (np.abs(region - np.array(COLORS[obj.color])).max(axis=-1) < 60).sum()
            expected = (DIAMETER[obj.size] * size) ** 2
            assert area > 0.2 * expected, (obj, area, expected)


def test_every_shape_is_distinct_in_pixels():
    images = [
        np.asarray(render_scene(Scene((Obj(4, s, "red", "large"),), "plain", "gray"), 64))
        for s in SHAPES
    ]
    masks = [np.all(im == COLORS["red"], axis=-1) for im in images]
    for i in range(len(SHAPES)):
        for j in range(i + 1, len(SHAPES)):
            assert (masks[i] != masks[j]).sum() > 20, (SHAPES[i], SHAPES[j])


# --------------------------------------------------------------------------- captions


RED_SMALL_DIAMOND = Obj(0, "diamond", "red", "small")
ORANGE_CIRCLE = Obj(8, "circle", "orange", "large")
PURPLE_STAR = Obj(4, "star", "purple", "small")


def _plan(kind: str, *mentions: tuple[Obj, bool, bool]) -> CaptionPlan:
    return CaptionPlan(kind, tuple(Mention(o, size, pos) for o, size, pos in mentions))


GOLDEN_CAPTIONS = {
    ("list", "en"): "A small red diamond in the top left and an orange circle.",
    ("list", "de"): "Eine kleine rote Raute oben links und ein orangefarbener Kreis.",
    ("list", "fr"): "Un petit losange rouge en haut à gauche et un cercle orange.",
    ("list", "cs"): "Malý červený kosočtverec vlevo nahoře a oranžový kruh.",
    ("list", "zh"): "一个小的红色菱形在左上角，还有一个橙色的圆形。",
    ("list", "ja"): "左上の小さな赤いひし形とオレンジ色の円。",
    ("there_is", "en"): "There is a small red diamond in the top left and an orange circle.",
    ("there_is", "de"): "Es gibt eine kleine rote Raute oben links und einen orangefarbenen Kreis.",
    ("there_is", "fr"): "Il y a un petit losange rouge en haut à gauche et un cercle orange.",
    ("there_is", "cs"): "Na obrázku je malý červený kosočtverec vlevo nahoře a oranžový kruh.",
    ("there_is", "zh"): "左上角有一个小的红色菱形，还有一个橙色的圆形。",
    ("there_is", "ja"): "左上に小さな赤いひし形があり、オレンジ色の円があります。",
    (
        "image_with",
        "de",
    ): "Ein Bild mit einer kleinen roten Raute oben links und einem orangefarbenen Kreis.",
    ("count", "cs"): "Dva tvary: malý červený kosočtverec a oranžový kruh.",
}


@pytest.mark.parametrize("kind,lang", sorted(GOLDEN_CAPTIONS))
def test_golden_captions(kind, lang):
    mentions = (RED_SMALL_DIAMOND, True, kind != "count"), (ORANGE_CIRCLE, False, False)
    assert get_language(lang).caption(_plan(kind, *mentions)) == GOLDEN_CAPTIONS[kind, lang]


GOLDEN_EDITS = {
    # gender / case agreement of the referring and the new noun phrase
    ("color", "de", 1): "Ersetze den violetten Stern durch einen roten Stern.",
    ("color", "fr", 0): "Colore l'étoile violette en rouge.",
    ("color", "fr", 1): "Remplace l'étoile violette par une étoile rouge.",
    ("color", "cs", 0): "Přebarvi fialovou hvězdu načerveno.",
    ("color", "cs", 1): "Změň fialovou hvězdu na červenou hvězdu.",
    ("color", "ja", 0): "紫の星形を赤に変えてください。",
    ("color", "en", 0): "Make the purple star red.",
    ("size", "fr", 0): "Rends l'étoile violette plus grande.",
    ("size", "de", 0): "Mach den violetten Stern größer.",
    ("remove", "cs", 0): "Odstraň fialovou hvězdu.",
    ("remove", "zh", 1): "去掉紫色的星形。",
    ("move", "de", 1): "Der violette Stern soll unten rechts sein.",
    ("move", "en", 0): "Move the purple star to the bottom right.",
}


def _edit(kind: str) -> Edit:
    if kind == "color":
        return Edit("color", PURPLE_STAR, Obj(4, "star", "red", "small"))
    if kind == "size":
        return Edit("size", PURPLE_STAR, Obj(4, "star", "purple", "large"))
    if kind == "move":
        return Edit("move", PURPLE_STAR, Obj(8, "star", "purple", "small"))
    return Edit("remove", PURPLE_STAR, None)


@pytest.mark.parametrize("kind,lang,variant", sorted(GOLDEN_EDITS))
def test_golden_edit_texts(kind, lang, variant):
    assert get_language(lang).edit(_edit(kind), variant) == GOLDEN_EDITS[kind, lang, variant]


def test_shape_edit_with_size_reference_declines_both_phrases():
    edit = Edit("shape", RED_SMALL_DIAMOND, Obj(0, "square", "red", "small"), ref_size=True)
    assert (
        get_language("de").edit(edit, 1)
        == "Mach aus der kleinen roten Raute ein kleines rotes Quadrat."
    )
    assert (
        get_language("cs").edit(edit, 0)
        == "Nahraď malý červený kosočtverec malým červeným čtvercem."
    )
    assert (
        get_language("fr").edit(edit, 0)
        == "Remplace le petit losange rouge par un petit carré rouge."
    )
    with pytest.raises(ValueError, match="variant"):
        get_language("en").edit(edit, 2)


# words every language must use for each attribute value (one form suffices)
def _colour_forms(lang: str, colour: str) -> list[str]:
    return {
        "en": [colour],
        "de": [de.COLOR[colour]],
        "fr": list(fr.COLOR[colour]),
        "cs": [cs.COLOR_STEM[colour]],
        "zh": [zh.COLOR[colour]],
        "ja": [ja.COLOR_ATTRIBUTIVE[colour], ja.COLOR_NOUN[colour]],
    }[lang]


def _shape_forms(lang: str, shape: str) -> list[str]:
    return {
        "en": [shape],
        "de": [de.NOUN[shape][0]],
        "fr": [fr.NOUN[shape][0]],
        "cs": list(cs.NOUN[shape][1:]),
        "zh": [zh.SHAPE[shape]],
        "ja": [ja.SHAPE[shape]],
    }[lang]


def test_captions_are_parallel_across_languages():
    plan = plan_dataset(N_IMAGES, seed=2, splits=DEFAULT_SPLITS)
    english_colours = set(COLORS)
    for im in plan.images:
        assert len(im.captions) == 5
        for caption_plan in im.captions:
            mentioned = {m.obj.color for m in caption_plan.mentions}
            en_words = set(
                LANGUAGES["en"].caption(caption_plan).lower().rstrip(".").replace(",", "").split()
            )
            assert en_words & english_colours == mentioned
            for lang, realiser in LANGUAGES.items():
                text = realiser.caption(caption_plan)
                if realiser.spaceless:
                    assert " " not in text
                for m in caption_plan.mentions:
                    lowered = text.lower()
                    assert any(w.lower() in lowered for w in _colour_forms(lang, m.obj.color)), text
                    assert any(w.lower() in lowered for w in _shape_forms(lang, m.obj.shape)), text


def test_caption_slots_mix_full_partial_and_count_descriptions():
    plan = plan_dataset(N_IMAGES, seed=2, splits=DEFAULT_SPLITS)
    kinds = Counter(p.kind for im in plan.images for p in im.captions)
    assert set(kinds) == {"list", "there_is", "image_with", "count"}
    multi = [im for im in plan.images if len(im.scene.objects) >= 2]
    assert multi and all(len(im.captions[3].mentions) == 1 for im in multi)
    assert all(len(im.captions[0].mentions) == len(im.scene.objects) for im in plan.images)


def test_edit_texts_mention_the_edited_attributes(dataset):
    root = layout(dataset).cirr_root
    records = {
        lang: json.loads(
            (
                root / ("captions" if lang == "en" else f"captions/{lang}") / "cap.rc2.train.json"
            ).read_text(encoding="utf-8")
        )
        for lang in SUPPORTED_LANGUAGES
    }
    plan = plan_dataset(N_IMAGES, seed=0, splits=DEFAULT_SPLITS)
    triplets = [t for t in plan.triplets if t.split == "train"]
    assert len(triplets) == len(records["en"]) == 25
    for k, t in enumerate(triplets):
        for lang in SUPPORTED_LANGUAGES:
            record = records[lang][k]
            assert (record["pairid"], record["reference"], record["target_hard"]) == (
                t.pair_id, t.reference, t.target,
            )  # fmt: skip
            text = record["caption"]
            assert text == get_language(lang).edit(t.edit, t.cirr_variant)
            lowered = text.lower()
            if t.edit.kind == "color":
                colour = t.edit.new.color
                forms = _colour_forms(lang, colour) + (
                    [cs.COLOR_ADVERB[colour]] if lang == "cs" else []
                )
                assert any(w.lower() in lowered for w in forms), text
            if t.edit.kind in ("shape", "add"):
                assert any(w.lower() in lowered for w in _shape_forms(lang, t.edit.new.shape)), text
        variants = {get_language("en").edit(t.edit, v) for v in (0, 1)}
        assert len(variants) == 2


def test_fashioniq_categories_follow_the_background(dataset):
    plan = plan_dataset(N_IMAGES, seed=0, splits=DEFAULT_SPLITS)
    category = {im.name: im.scene.category for im in plan.images}
    root = layout(dataset).fashioniq_root
    for split in ("train", "val", "test"):
        seen = []
        for cat in ("dress", "shirt", "toptee"):
            names = json.loads((root / f"image_splits/split.{cat}.{split}.json").read_text())
            assert all(category[n] == cat for n in names)
            seen += names
            for record in json.loads((root / f"captions/cap.{cat}.{split}.json").read_text()):
                assert category[record["candidate"]] == category[record["target"]] == cat
                assert (
                    len(record["captions"]) == 2 and record["captions"][0] != record["captions"][1]
                )
                assert not record["captions"][0].endswith(".")
        assert sorted(seen) == sorted(im.name for im in plan.images if im.split == split)

"""Tests of the dataset-format loaders (mmret.data) on the synthetic benchmark's output and
on small hand-written (partly malformed) files."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from mmret.data import (
    FASHIONIQ_CATEGORIES,
    ComposedTrainDataset,
    DatasetFormatError,
    ImagePathDataset,
    ImageTextTrainDataset,
    MultilingualSplit,
    OneToKDataset,
    RandomLanguageDataset,
    RetrievalSplit,
    concat_splits,
    join_captions,
    load_albef,
    load_cirr,
    load_fashioniq,
    load_iglue,
    load_image,
    load_karpathy,
    load_multi30k,
    load_xtd,
)
from mmret.data.synthetic import SUPPORTED_LANGUAGES, generate, layout

N_IMAGES = 60
SPLIT_SIZES = {"train": 48, "val": 6, "test": 6}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_loaders")
    generate(root, num_images=N_IMAGES, seed=7, workers=1, progress=False)
    return layout(root)


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = obj if isinstance(obj, str) else json.dumps(obj)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- Karpathy / ALBEF


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_karpathy_reads_generator_output(shapes, split):
    s = load_karpathy(shapes.karpathy_json, shapes.root, split)
    assert s.num_images == SPLIT_SIZES[split]
    assert s.num_texts == 5 * s.num_images
    assert s.image_to_texts() == [list(range(5 * i, 5 * i + 5)) for i in range(s.num_images)]
    image = load_image(s.image_paths[0])
    assert image.size == (64, 64) and image.mode == "RGB"


def test_karpathy_restval_and_ids(tmp_path):
    data = {
        "images": [
            {"filepath": "a", "filename": "1.jpg", "split": "train", "imgid": 10,
             "sentences": [{"raw": "one"}, {"raw": " two "}]},
            {"filepath": "b", "filename": "2.jpg", "split": "restval", "cocoid": 20,
             "sentences": [{"raw": "three"}]},
            {"filename": "3.jpg", "split": "test", "sentences": [{"raw": "four"}]},
        ]
    }  # fmt: skip
    path = _write(tmp_path / "k.json", data)
    train = load_karpathy(path, "/img", "train")
    assert train.image_paths == [
        os.path.join("/img", "a", "1.jpg"),
        os.path.join("/img", "b", "2.jpg"),
    ]
    assert train.captions == ["one", "two", "three"] and train.text_to_image == [0, 0, 1]
    assert train.image_ids == [10, 20]
    assert load_karpathy(path, "/img", "train", restval_as_train=False).num_images == 1
    test = load_karpathy(path, "/img", "test")
    assert test.image_paths == [os.path.join("/img", "3.jpg")] and test.image_ids == [2]
    with pytest.raises(ValueError, match="split must be one of"):
        load_karpathy(path, "/img", "dev")


@pytest.mark.parametrize(
    "images,match",
    [
        ([{"filename": "x", "sentences": []}], r"record 0: field 'split': missing required field"),
        ([{"filename": 3, "split": "test", "sentences": []}], r"record 0: field 'filename': expected a string, got int"),
        ([{"filename": "x", "split": "dev", "sentences": []}], r"field 'split': expected one of"),
        (
            [{"filename": "x", "split": "test", "sentences": []},
             {"filename": "y", "split": "test", "sentences": [{"raw": "ok"}, {"tokens": []}]}],
            r"record 1: field 'sentences\[1\].raw'",
        ),
        ([["not", "an", "object"]], r"record 0: expected a JSON object, got list"),
    ],
)  # fmt: skip
def test_karpathy_malformed_files_name_file_record_and_field(tmp_path, images, match):
    path = _write(tmp_path / "bad.json", {"images": images})
    with pytest.raises(DatasetFormatError, match=match) as info:
        load_karpathy(path, "/img", "test")
    assert str(path) in str(info.value)


def test_missing_and_invalid_json_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Karpathy split JSON not found: .*nope.json"):
        load_karpathy(tmp_path / "nope.json", "/img", "test")
    path = _write(tmp_path / "broken.json", '{"images": [\n  {"split": "test",}\n]}')
    with pytest.raises(DatasetFormatError, match=r"broken.json: line 2: invalid JSON"):
        load_karpathy(path, "/img", "test")
    path = _write(tmp_path / "noimages.json", {"pictures": []})
    with pytest.raises(DatasetFormatError, match=r"field 'images': missing required field"):
        load_karpathy(path, "/img", "test")


def test_albef_train_and_eval_match_karpathy(shapes):
    train = load_albef(shapes.albef_json("train"), shapes.root)
    karpathy = load_karpathy(shapes.karpathy_json, shapes.root, "train")
    assert train.image_paths == karpathy.image_paths
    assert train.captions == karpathy.captions and train.text_to_image == karpathy.text_to_image
    assert train.image_ids[0] == Path(train.image_paths[0]).stem  # ALBEF ids are strings
    test = load_albef(shapes.albef_json("test"), shapes.root)
    assert test.captions == load_karpathy(shapes.karpathy_json, shapes.root, "test").captions
    assert test.image_ids == list(range(SPLIT_SIZES["test"]))


def test_albef_groups_records_by_image_and_reports_bad_records(tmp_path):
    records = [
        {"image": "a.jpg", "caption": "c1", "image_id": "x"},
        {"image": "b.jpg", "caption": "c2", "image_id": "y"},
        {"image": "a.jpg", "caption": "c3", "image_id": "x"},
    ]
    split = load_albef(_write(tmp_path / "train.json", records), "root")
    assert split.image_paths == [os.path.join("root", "a.jpg"), os.path.join("root", "b.jpg")]
    assert split.text_to_image == [0, 1, 0] and split.image_ids == ["x", "y"]
    bad = _write(
        tmp_path / "bad.json", [{"image": "a.jpg", "caption": ["ok"]}, {"image": "b", "caption": 7}]
    )
    with pytest.raises(
        DatasetFormatError,
        match=r"bad.json: record 1: field 'caption': expected a list or a string, got int \(7\)",
    ):
        load_albef(bad, "root")
    bad = _write(tmp_path / "bad2.json", [{"image": "a.jpg", "caption": ["ok", 3]}])
    with pytest.raises(DatasetFormatError, match=r"record 0: field 'caption\[1\]'"):
        load_albef(bad, "root")
    with pytest.raises(DatasetFormatError, match="expected a list"):
        load_albef(_write(tmp_path / "obj.json", {"image": "a"}), "root")


def test_retrieval_split_validation_and_concat():
    with pytest.raises(ValueError, match="same length"):
        RetrievalSplit(["a"], ["x", "y"], [0], [0])
    with pytest.raises(ValueError, match=r"text_to_image\[1\] = 3"):
        RetrievalSplit(["a", "b"], ["x", "y"], [0, 3], [0, 1])
    a = RetrievalSplit(["a"], ["x"], [0], ["ia"])
    b = RetrievalSplit(["b", "c"], ["y", "z", "w"], [1, 0, 1], ["ib", "ic"])
    both = concat_splits([a, b])
    assert both.text_to_image == [0, 2, 1, 2] and both.image_paths == ["a", "b", "c"]
    assert repr(both) == "RetrievalSplit(num_images=3, num_texts=4)"


def test_image_text_train_dataset(shapes):
    split = load_karpathy(shapes.karpathy_json, shapes.root, "val")
    calls = []

    def tokenizer(texts):
        calls.append(list(texts))
        return torch.tensor([[len(t), 1] for t in texts])

    ds = ImageTextTrainDataset(split, tokenizer=tokenizer)
    assert len(ds) == 30
    item = ds[7]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["caption"] == split.captions[7] and item["image_id"] == 1
    assert item["text"].tolist() == [len(split.captions[7]), 1] and calls == [[split.captions[7]]]
    flipped = ImageTextTrainDataset(split, transform=lambda im: torch.zeros(1))[0]["image"]
    assert flipped.shape == (1,)
    gallery = ImagePathDataset(split.image_paths)
    assert len(gallery) == 6 and torch.equal(gallery[1]["image"], item["image"])


# --------------------------------------------------------------------------- multilingual


def test_iglue_reads_parallel_languages(shapes):
    m = load_iglue(shapes.iglue_root, SUPPORTED_LANGUAGES, "test", image_root=shapes.root)
    karpathy = load_karpathy(shapes.karpathy_json, shapes.root, "test")
    assert [os.path.normpath(p) for p in m.image_paths] == [
        os.path.normpath(p) for p in karpathy.image_paths
    ]
    assert m.missing == {}
    for lang in SUPPORTED_LANGUAGES:
        assert m.text_to_image[lang] == karpathy.text_to_image
    assert m.captions["en"] == karpathy.captions
    assert m.captions["de"] != m.captions["en"]
    assert m.for_language("ja").captions == m.captions["ja"]
    with pytest.raises(KeyError, match="available"):
        m.for_language("xx")
    train = load_iglue(shapes.iglue_root, ["en", "cs"], "train", image_root=shapes.root)
    assert train.num_images == SPLIT_SIZES["train"] and len(train.captions["cs"]) == 5 * 48


def _iglue_file(root: Path, lang: str, rows: list) -> None:
    _write(root / lang / "test.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")


def test_iglue_missing_instances_are_reported_or_dropped(tmp_path):
    _iglue_file(tmp_path, "en", [
        {"id": 1, "img_path": "a.jpg", "sentences": ["a1", "a2"]},
        {"id": 2, "img_path": "b.jpg", "sentences": ["b1"]},
        {"id": 3, "img_path": "c.jpg", "sentences": ["c1"]},
    ])  # fmt: skip
    _iglue_file(tmp_path, "de", [
        {"id": 3, "img_path": "c.jpg", "sentences": ["c1-de"]},
        {"id": 1, "img_path": "a.jpg", "sentences": "a1-de"},
        {"id": 4, "img_path": "d.jpg", "sentences": ["d1-de"]},
    ])  # fmt: skip
    with pytest.warns(UserWarning, match=r"en: 1 \(e.g. \[4\]\), de: 1 \(e.g. \[2\]\)"):
        m = load_iglue(tmp_path, ["en", "de"], "test", image_root="imgs")
    assert m.image_ids == [1, 2, 3, 4]
    assert m.image_paths == [os.path.join("imgs", x) for x in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    assert m.missing == {"en": [4], "de": [2]}
    assert m.captions["de"] == ["c1-de", "a1-de", "d1-de"] and m.text_to_image["de"] == [2, 0, 3]
    assert m.text_to_image["en"] == [0, 0, 1, 2]
    with pytest.warns(UserWarning, match="dropped"):
        both = load_iglue(tmp_path, ["en", "de"], "test", intersection=True)
    assert both.image_ids == [1, 3]
    assert both.captions["en"] == ["a1", "a2", "c1"] and both.text_to_image["en"] == [0, 0, 1]
    assert both.captions["de"] == ["c1-de", "a1-de"] and both.text_to_image["de"] == [1, 0]


def test_iglue_malformed(tmp_path):
    _iglue_file(tmp_path, "en", [{"id": 1, "img_path": "a.jpg", "sentences": ["x"]}])
    _iglue_file(tmp_path, "fr", [{"id": 1, "img_path": "other.jpg", "sentences": ["x"]}])
    with pytest.raises(
        DatasetFormatError, match=r"fr/test.jsonl: line 1: field 'img_path': id 1 has img_path"
    ):
        load_iglue(tmp_path, ["en", "fr"])
    _iglue_file(
        tmp_path,
        "de",
        [
            {"id": 1, "img_path": "a.jpg", "sentences": ["x"]},
            {"id": 1, "img_path": "a.jpg", "sentences": []},
        ],
    )
    with pytest.raises(
        DatasetFormatError, match=r"de/test.jsonl: line 2: field 'id': duplicate id 1"
    ):
        load_iglue(tmp_path, ["de"])
    _write(
        tmp_path / "cs" / "test.jsonl",
        '{"id": 1, "img_path": "a.jpg", "sentences": ["x"]}\n{"id": 2,\n',
    )
    with pytest.raises(DatasetFormatError, match=r"cs/test.jsonl: line 2: invalid JSON"):
        load_iglue(tmp_path, ["cs"])
    _iglue_file(tmp_path, "ja", [{"id": 1.5, "img_path": "a.jpg", "sentences": ["x"]}])
    with pytest.raises(
        DatasetFormatError, match=r"line 1: field 'id': expected a string or an integer, got float"
    ):
        load_iglue(tmp_path, ["ja"])
    with pytest.raises(FileNotFoundError, match=r"IGLUE zh test file not found"):
        load_iglue(tmp_path, ["zh"])


def test_multi30k_and_xtd_read_generator_output(shapes):
    m = load_multi30k(
        shapes.multi30k_root, ["en", "de", "fr", "cs"], "test", image_root=shapes.images_dir
    )
    iglue = load_iglue(shapes.iglue_root, ["en", "de", "fr", "cs"], "test", image_root=shapes.root)
    assert m.num_images == SPLIT_SIZES["test"]
    assert [os.path.normpath(p) for p in m.image_paths] == [
        os.path.normpath(p) for p in iglue.image_paths
    ]
    for lang in ("en", "de", "fr", "cs"):
        assert m.text_to_image[lang] == list(range(6))
        assert m.captions[lang] == [iglue.captions[lang][5 * i] for i in range(6)]  # caption slot 0
    x = load_xtd(shapes.xtd_root, SUPPORTED_LANGUAGES, image_root=shapes.images_dir)
    assert x.image_paths == m.image_paths and x.captions["fr"] == m.captions["fr"]
    assert load_image(x.image_paths[-1]).size == (64, 64)


def test_line_aligned_loaders_check_alignment(tmp_path):
    _write(tmp_path / "test_images.txt", "a.jpg\nb.jpg\na.jpg\n\n")
    _write(tmp_path / "test.en", "first\nsecond\nthird\n")
    _write(tmp_path / "test.de", "erste\nzweite\n")
    m = load_multi30k(tmp_path, ["en"], "test")
    assert m.image_paths == [os.path.join(tmp_path, "a.jpg"), os.path.join(tmp_path, "b.jpg")]
    assert m.text_to_image["en"] == [0, 1, 0]  # a repeated name is the same image
    with pytest.raises(
        DatasetFormatError, match=r"test.de: has 2 captions but .*test_images.txt lists 3 images"
    ):
        load_multi30k(tmp_path, ["en", "de"], "test")
    _write(tmp_path / "test.fr", "un\n\ntrois\n")
    with pytest.raises(DatasetFormatError, match=r"test.fr: line 2: empty line"):
        load_multi30k(tmp_path, ["fr"], "test")
    with pytest.raises(FileNotFoundError, match="XTD image list not found"):
        load_xtd(tmp_path, ["en"])


# --------------------------------------------------------------------------- multilingual datasets


def _toy_split() -> MultilingualSplit:
    # image 0: en x2, de x2; image 1: en only; image 2: de only; image 3: nothing
    return MultilingualSplit(
        image_paths=["i0", "i1", "i2", "i3"],
        captions={"en": ["e0a", "e1", "e0b"], "de": ["d0a", "d2", "d0b"]},
        text_to_image={"en": [0, 1, 0], "de": [0, 2, 0]},
    )


class _FakeImages:
    """Replaces image loading in the datasets so toy splits need no files."""

    def __init__(self, monkeypatch):
        monkeypatch.setattr("mmret.data.images.load_image", lambda path: path)

    @staticmethod
    def transform(path):
        return torch.tensor([int(path[1:])])


def test_one_to_k_masks_missing_languages(monkeypatch):
    _FakeImages(monkeypatch)
    ds = OneToKDataset(_toy_split(), ["en", "de"], transform=_FakeImages.transform, seed=3)
    assert len(ds) == 3 and ds.image_indices == [0, 1, 2]  # image 3 has no caption at all
    # items are the collate's sample format: K captions in ds.langs order, None = missing
    assert ds.captions_per_sample == 2 and ds.langs == ["en", "de"]
    assert ds.sample_fields == ("image", "caption", "image_id")
    first = ds[0]
    assert set(first) == {"image", "caption", "image_id"}
    assert first["image"].item() == 0 and len(first["caption"]) == 2
    assert all(c is not None for c in first["caption"])
    assert (first["caption"][0][-1], first["caption"][1][-1]) in {
        ("a", "a"),
        ("b", "b"),
    }  # same slot
    second, third = ds[1], ds[2]
    assert second["caption"] == ["e1", None]  # never an empty-string "caption"
    assert third["caption"] == [None, "d2"]
    assert third["image_id"] == 2
    slots = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        slots.add(ds[0]["caption"][0])
        assert ds[0]["caption"] == ds[0]["caption"]  # same (seed, epoch, index), same draw
    assert slots == {"e0a", "e0b"}
    with pytest.raises(KeyError, match="available"):
        OneToKDataset(_toy_split(), ["en", "fr"])
    with pytest.raises(ValueError, match="duplicates"):
        OneToKDataset(_toy_split(), ["en", "en"])


def test_one_to_k_on_generator_output_keeps_captions_parallel(shapes):
    m = load_iglue(shapes.iglue_root, ["en", "de", "zh"], "val", image_root=shapes.root)
    tok = OneToKDataset(m, ["en", "de", "zh"], tokenizer=lambda texts: torch.ones(len(texts), 4))
    assert len(tok) == 6
    for index in range(len(tok)):
        item = tok[index]
        slots = {
            m.captions[lang].index(c)
            for lang, c in zip(tok.langs, item["caption"], strict=True)
        }
        assert len(slots) == 1  # caption c of the same image in every language
        assert item["text"].shape == (3, 4) and item["image"].shape == (3, 64, 64)


def test_random_language_dataset_is_reproducible_and_uses_available_languages(monkeypatch):
    _FakeImages(monkeypatch)
    split = _toy_split()
    ds = RandomLanguageDataset(split, ["en", "de"], transform=_FakeImages.transform, seed=5)
    draws = {}
    for epoch in range(20):
        ds.set_epoch(epoch)
        for index in (2, 1, 0):  # access order must not matter
            draws[epoch, index] = (ds[index]["lang"], ds[index]["caption"])
    again = RandomLanguageDataset(split, ["en", "de"], transform=_FakeImages.transform, seed=5)
    for (epoch, index), drawn in draws.items():
        again.set_epoch(epoch)
        assert (again[index]["lang"], again[index]["caption"]) == drawn
    assert {draws[e, 1] for e in range(20)} == {("en", "e1")}  # only language available
    assert {draws[e, 2] for e in range(20)} == {("de", "d2")}
    assert {draws[e, 0] for e in range(20)} == {
        ("en", "e0a"),
        ("en", "e0b"),
        ("de", "d0a"),
        ("de", "d0b"),
    }
    other = RandomLanguageDataset(split, ["en", "de"], transform=_FakeImages.transform, seed=6)
    assert any((other.set_epoch(e), other[0]["caption"])[1] != draws[e, 0][1] for e in range(20))


def test_random_language_draws_are_roughly_uniform(shapes, monkeypatch):
    m = load_iglue(shapes.iglue_root, SUPPORTED_LANGUAGES, "train", image_root=shapes.root)
    ds = RandomLanguageDataset(m, SUPPORTED_LANGUAGES, seed=0)
    item = ds[3]
    assert item["caption"] in m.captions[item["lang"]]
    assert (
        m.text_to_image[item["lang"]][m.captions[item["lang"]].index(item["caption"])]
        == item["image_id"]
    )
    _FakeImages(monkeypatch)
    ds = RandomLanguageDataset(m, SUPPORTED_LANGUAGES, transform=lambda path: 0, seed=0)
    counts = Counter()
    for epoch in range(10):
        ds.set_epoch(epoch)
        counts.update(ds[index]["lang"] for index in range(len(ds)))
    # 480 draws over 6 languages: 80 expected each; a 6-sigma band is about [38, 122]
    assert set(counts) == set(SUPPORTED_LANGUAGES) and min(counts.values()) > 40
    assert max(counts.values()) < 120


# --------------------------------------------------------------------------- CIRR / FashionIQ


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_cirr_reads_generator_output(shapes, split):
    c = load_cirr(shapes.cirr_root, split, image_root=shapes.root)
    assert len(c.gallery_names) == SPLIT_SIZES[split]
    manifest = json.loads(shapes.manifest.read_text())
    assert (
        c.num_queries
        == manifest["splits"][split]["triplets"]
        == 5 * manifest["splits"][split]["groups"]
    )
    assert c.has_targets
    for q in range(c.num_queries):
        assert len(c.members[q]) == 6
        assert c.reference_index[q] in c.members[q] and c.target_index[q] in c.members[q]
        assert c.reference_index[q] != c.target_index[q]
    t = c.triplet(0)
    assert load_image(t.reference).size == (64, 64) and load_image(t.target).size == (64, 64)
    assert t.reference in t.members and t.pair_id == 0
    for lang in ("de", "ja"):
        other = load_cirr(shapes.cirr_root, split, image_root=shapes.root, lang=lang)
        assert other.target_index == c.target_index and other.members == c.members
        assert other.modifications != c.modifications


def _cirr_files(root: Path, records: list, images: dict | None = None) -> None:
    images = images if images is not None else {"r": "./r.png", "t": "./t.png", "o": "./o.png"}
    _write(root / "image_splits" / "split.rc2.test1.json", images)
    _write(root / "captions" / "cap.rc2.test1.json", records)


def test_cirr_hidden_targets_and_errors(tmp_path):
    record = {
        "pairid": 4,
        "reference": "r",
        "caption": " make it red ",
        "img_set": {"id": 1, "members": ["r", "t"]},
    }
    _cirr_files(tmp_path, [record])
    c = load_cirr(tmp_path, "test1", image_root="/imgs")
    assert c.target_index == [None] and not c.has_targets and c.members == [[0, 1]]
    assert c.gallery_paths[2] == os.path.join("/imgs", "./o.png") and c.modifications == [
        "make it red"
    ]
    assert c.triplet(0).target is None and c.pair_ids == [4]
    with pytest.raises(ValueError, match="hidden targets"):
        ComposedTrainDataset(c)
    _cirr_files(tmp_path, [dict(record, reference="zzz")])
    with pytest.raises(
        DatasetFormatError,
        match=r"record 0: field 'reference': image 'zzz' is not in the split's image list",
    ):
        load_cirr(tmp_path, "test1")
    _cirr_files(tmp_path, [record, {k: v for k, v in record.items() if k != "caption"}])
    with pytest.raises(
        DatasetFormatError,
        match=r"cap.rc2.test1.json: record 1: field 'caption': missing required field",
    ):
        load_cirr(tmp_path, "test1")
    _cirr_files(tmp_path, [dict(record, target_hard="t"), record])
    with pytest.raises(DatasetFormatError, match="some records have target_hard and others not"):
        load_cirr(tmp_path, "test1")
    _cirr_files(tmp_path, [record], images={"r": 5})
    with pytest.raises(
        DatasetFormatError, match=r"split.rc2.test1.json: field 'r': expected a string"
    ):
        load_cirr(tmp_path, "test1")


@pytest.mark.parametrize("category", FASHIONIQ_CATEGORIES)
def test_fashioniq_reads_generator_output(shapes, category):
    f = load_fashioniq(shapes.fashioniq_root, category, "train", image_root=shapes.images_dir)
    assert f.gallery_paths[0].endswith(".png") and load_image(f.gallery_paths[0]).size == (64, 64)
    assert f.has_targets and all(" and " in m for m in f.modifications)
    raw = json.loads(
        (shapes.fashioniq_root / "captions" / f"cap.{category}.train.json").read_text()
    )
    assert f.modifications == [f"{r['captions'][0]} and {r['captions'][1]}" for r in raw]
    de = load_fashioniq(
        shapes.fashioniq_root,
        category,
        "train",
        image_root=shapes.images_dir,
        lang="de",
        template="{c1} und {c2}",
    )
    assert de.target_index == f.target_index and all(" und " in m for m in de.modifications)


def test_fashioniq_counts_cover_all_triplets(shapes):
    total = sum(
        load_fashioniq(shapes.fashioniq_root, cat, split, image_root=shapes.images_dir).num_queries
        for cat in FASHIONIQ_CATEGORIES
        for split in ("train", "val", "test")
    )
    manifest = json.loads(shapes.manifest.read_text())
    assert total == sum(s["triplets"] for s in manifest["splits"].values())
    gallery = sum(
        len(load_fashioniq(shapes.fashioniq_root, cat, "val").gallery_names)
        for cat in FASHIONIQ_CATEGORIES
    )
    assert gallery == SPLIT_SIZES["val"]


def test_fashioniq_templates_and_errors(tmp_path):
    _write(tmp_path / "image_splits" / "split.dress.val.json", ["a", "b"])
    _write(
        tmp_path / "captions" / "cap.dress.val.json",
        [{"candidate": "a", "target": "b", "captions": ["is red", "is long"]}],
    )
    f = load_fashioniq(tmp_path, "dress", "val", template="{c2}; {c1}", image_ext="jpg")
    assert f.modifications == ["is long; is red"]
    assert f.gallery_paths == [
        str(tmp_path / "images" / "a.jpg"),
        str(tmp_path / "images" / "b.jpg"),
    ]
    assert f.reference_index == [0] and f.target_index == [1] and f.members == [[]]
    assert join_captions(" x ", "y") == "x and y"
    with pytest.raises(ValueError, match=r"only use the fields \{c1\} and \{c2\}"):
        load_fashioniq(tmp_path, "dress", "val", template="{c3}")
    with pytest.raises(ValueError, match="category must be one of"):
        load_fashioniq(tmp_path, "shoes", "val")
    _write(
        tmp_path / "captions" / "cap.dress.val.json",
        [{"candidate": "a", "target": "b", "captions": ["only one"]}],
    )
    with pytest.raises(
        DatasetFormatError, match=r"record 0: field 'captions': expected 2 relative captions, got 1"
    ):
        load_fashioniq(tmp_path, "dress", "val")
    _write(
        tmp_path / "captions" / "cap.dress.val.json",
        [{"candidate": "a", "target": "c", "captions": ["x", "y"]}],
    )
    with pytest.raises(
        DatasetFormatError, match=r"field 'target': image 'c' is not in the split's image list"
    ):
        load_fashioniq(tmp_path, "dress", "val")


def test_composed_train_dataset(shapes):
    c = load_cirr(shapes.cirr_root, "val", image_root=shapes.root)
    ds = ComposedTrainDataset(
        c, tokenizer=lambda texts: torch.zeros(len(texts), 3, dtype=torch.long)
    )
    item = ds[2]
    assert item["reference_image"].shape == item["target_image"].shape == (3, 64, 64)
    assert not torch.equal(item["reference_image"], item["target_image"])  # a one-edit variant
    assert item["modification"] == c.modifications[2] and item["target_id"] == c.target_index[2]
    assert item["text"].shape == (3,)

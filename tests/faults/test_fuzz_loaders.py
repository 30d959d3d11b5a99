"""Hypothesis fuzzing of every annotation loader: random JSON / JSON-lines / text (with
tabs: TSV-like) / raw bytes, both fully random and shaped like the real schema. A loader
either returns a split or raises one of the documented errors
(:class:`DatasetFormatError`, ``FileNotFoundError``); never anything else.

``EXAMPLES`` per loader (7 loaders) keeps the suite fast; COUNTS records what ran.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmret.data.composed import load_cirr, load_fashioniq
from mmret.data.errors import DatasetFormatError
from mmret.data.multilingual import load_iglue, load_multi30k, load_xtd
from mmret.data.retrieval import load_albef, load_karpathy

EXAMPLES = 200
DOCUMENTED = (DatasetFormatError, FileNotFoundError)
COUNTS: Counter = Counter()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

names = st.sampled_from(["a.png", "b.png", "../x.png", "/etc/passwd", "", "a/../../y", "ü.png",
                         "a\tb", "c.png"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
                    st.text(max_size=6), names)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12)


def shaped(keys: list[str], extra=json_values):
    """Records with (a random subset of) the schema's keys and random values."""
    value = st.one_of(extra, names, st.lists(st.one_of(names, extra), max_size=3),
                      st.fixed_dictionaries({"raw": st.one_of(st.text(max_size=5), extra)}),
                      st.lists(st.fixed_dictionaries({"raw": st.one_of(st.text(max_size=5),
                                                                        extra)}), max_size=2),
                      st.fixed_dictionaries({"members": st.lists(names, max_size=3)}),
                      st.sampled_from(["train", "val", "test", "restval"]))
    return st.dictionaries(st.sampled_from(keys), value, max_size=len(keys))


def payload(top):
    """Bytes of a file: shaped JSON, random JSON, or random bytes."""
    return st.one_of(top.map(lambda v: json.dumps(v).encode()),
                     json_values.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=40))


def lines(record):
    return st.one_of(st.lists(record.map(json.dumps), max_size=4).map(lambda x: "\n".join(x).encode()),
                     st.lists(st.text(max_size=12), max_size=4).map(lambda x: "\n".join(x).encode()),
                     st.binary(max_size=40))


text_file = st.one_of(
    st.lists(st.one_of(names, st.text(max_size=8), st.just("")), max_size=4)
    .map(lambda x: "\n".join(x).encode()),
    st.binary(max_size=30))


def _run(loader_name, call) -> None:
    COUNTS[loader_name] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except DOCUMENTED:
            COUNTS[loader_name + ":error"] += 1


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


KARPATHY = ["images", "filename", "filepath", "imgid", "cocoid", "split", "sentences"]


def mutated(base: dict):
    """``base`` (a valid record) with up to two fields replaced or removed at random."""
    keys = st.sampled_from(sorted(base))
    change = st.tuples(keys, st.one_of(st.just(None), json_values, names), st.booleans())

    def apply(changes):
        out = dict(base)
        for key, value, remove in changes:
            if remove:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    return st.lists(change, max_size=2).map(apply)


good_karpathy = st.integers(0, 5).flatmap(lambda i: mutated(
    {"filename": f"{i}.png", "filepath": "images", "imgid": i, "split": "train",
     "sentences": [{"raw": f"caption {i}"}]}))
good_albef = st.integers(0, 5).flatmap(lambda i: mutated(
    {"image": f"{i}.png", "caption": [f"caption {i}"], "image_id": i}))


@FUZZ
@given(data=payload(st.one_of(
    st.fixed_dictionaries({"images": st.lists(shaped(KARPATHY), max_size=4)}),
    st.fixed_dictionaries({"images": st.lists(good_karpathy, max_size=5)}),
    st.lists(shaped(KARPATHY), max_size=3))),
    split=st.sampled_from(["train", "test"]))
def test_fuzz_karpathy(root, data, split):
    (root / "k.json").write_bytes(data)
    _run("karpathy", lambda: load_karpathy(root / "k.json", root, split))
    _run("karpathy", lambda: load_karpathy(root / "k.json", root, split, on_error="skip"))


@FUZZ
@given(data=payload(st.one_of(st.lists(shaped(["image", "caption", "image_id"]), max_size=4),
                              st.lists(good_albef, max_size=5))))
def test_fuzz_albef(root, data):
    (root / "a.json").write_bytes(data)
    _run("albef", lambda: load_albef(root / "a.json", root))
    _run("albef", lambda: load_albef(root / "a.json", root, on_error="skip"))


@FUZZ
@given(en=lines(shaped(["id", "img_path", "sentences"])),
       de=lines(shaped(["id", "img_path", "sentences"])))
def test_fuzz_iglue(root, en, de):
    for lang, data in (("en", en), ("de", de)):
        (root / "iglue" / lang).mkdir(parents=True, exist_ok=True)
        (root / "iglue" / lang / "test.jsonl").write_bytes(data)
    _run("iglue", lambda: load_iglue(root / "iglue", ["en", "de"]))
    _run("iglue", lambda: load_iglue(root / "iglue", ["en", "de"], on_error="skip",
                                     intersection=True))


@FUZZ
@given(images=text_file, en=text_file, de=text_file)
def test_fuzz_multi30k(root, images, en, de):
    base = root / "m30k"
    base.mkdir(exist_ok=True)
    (base / "test_images.txt").write_bytes(images)
    (base / "test.en").write_bytes(en)
    (base / "test.de").write_bytes(de)
    _run("multi30k", lambda: load_multi30k(base, ["en", "de"]))
    _run("multi30k", lambda: load_multi30k(base, ["en", "de"], on_error="skip"))


@FUZZ
@given(images=text_file, en=text_file)
def test_fuzz_xtd(root, images, en):
    base = root / "xtd"
    base.mkdir(exist_ok=True)
    (base / "test_image_names.txt").write_bytes(images)
    (base / "test_1kcaptions_en.txt").write_bytes(en)
    _run("xtd", lambda: load_xtd(base, ["en"]))
    _run("xtd", lambda: load_xtd(base, ["en"], on_error="skip"))


CIRR = ["pairid", "reference", "target_hard", "caption", "img_set"]


@FUZZ
@given(gallery=payload(st.dictionaries(st.sampled_from(["a.png", "b.png", "c.png"]),
                                       st.one_of(names, json_values), max_size=3)),
       captions=payload(st.lists(shaped(CIRR), max_size=4)))
def test_fuzz_cirr(root, gallery, captions):
    base = root / "cirr"
    (base / "image_splits").mkdir(parents=True, exist_ok=True)
    (base / "captions").mkdir(parents=True, exist_ok=True)
    (base / "image_splits" / "split.rc2.val.json").write_bytes(gallery)
    (base / "captions" / "cap.rc2.val.json").write_bytes(captions)
    _run("cirr", lambda: load_cirr(base, "val"))
    _run("cirr", lambda: load_cirr(base, "val", on_error="skip"))


@FUZZ
@given(gallery=payload(st.lists(st.one_of(st.sampled_from(["a", "b", "../c"]), json_values),
                                max_size=4)),
       captions=payload(st.lists(shaped(["candidate", "target", "captions"]), max_size=4)))
def test_fuzz_fashioniq(root, gallery, captions):
    base = root / "fiq"
    (base / "image_splits").mkdir(parents=True, exist_ok=True)
    (base / "captions").mkdir(parents=True, exist_ok=True)
    (base / "image_splits" / "split.dress.val.json").write_bytes(gallery)
    (base / "captions" / "cap.dress.val.json").write_bytes(captions)
    _run("fashioniq", lambda: load_fashioniq(base, "dress", "val"))
    _run("fashioniq", lambda: load_fashioniq(base, "dress", "val", on_error="skip"))


def test_fuzz_counts_report():
    """Runs last in this file: every loader was fuzzed (the numbers go to docs)."""
    loaders = ["karpathy", "albef", "iglue", "multi30k", "xtd", "cirr", "fashioniq"]
    ran = {name: COUNTS[name] for name in loaders}
    if not all(ran.values()):
        pytest.skip("run with the fuzz tests above (e.g. the whole file) to get the counts")
    print("fuzz calls per loader:", ran, "documented errors:",
          {n: COUNTS[n + ":error"] for n in loaders})
    assert all(ran[name] >= EXAMPLES for name in loaders)  # raise + skip mode per example

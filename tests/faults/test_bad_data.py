"""Bad data: broken and unusual image files, broken annotation records, paths escaping
the dataset root; default = a clear error naming the file and the record, up front;
``on_error=skip`` = the record is left out, counted and listed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmret.data.composed import load_cirr, load_fashioniq
from mmret.data.errors import DatasetFormatError, ImageFileError
from mmret.data.faults import ErrorPolicy, scan_images
from mmret.data.images import ImageStore, load_image
from mmret.data.multilingual import load_iglue, load_multi30k, load_xtd
from mmret.data.retrieval import load_albef, load_karpathy
from mmret.data.sources import karpathy_pairs, multilingual_train


def _png(path: Path, color=(200, 10, 10), size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


# ----------------------------------------------------------------------------- image files


def test_truncated_zero_byte_non_image_and_missing_files(tmp_path):
    good = _png(tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    for bad in (truncated, empty, text):
        with pytest.raises(ImageFileError, match=f"image file {bad}: cannot be decoded"):
            load_image(bad)
    with pytest.raises(FileNotFoundError, match="image file not found: .*missing.png"):
        load_image(tmp_path / "missing.png")
    store = ImageStore([str(good), str(text)], None)
    with pytest.raises(ImageFileError, match=r"notes.jpg.*\(image 1 of 2\)"):
        store[1]


def test_unusual_modes_become_rgb(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(cmyk)  # pure red in CMYK
    assert load_image(cmyk).mode == "RGB"
    assert np.asarray(load_image(cmyk))[0, 0].tolist()[0] > 200

    palette = tmp_path / "palette.png"
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.info["transparency"] = 0
    p.save(palette, transparency=0)
    assert np.asarray(load_image(palette))[0, 0].tolist() == [10, 200, 30]

    sixteen = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(sixteen)
    half = tmp_path / "half16.png"
    Image.fromarray(np.full((4, 4), 32896, np.uint16)).save(half)
    assert np.asarray(load_image(sixteen))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(load_image(half))[0, 0].tolist() == [128, 128, 128]  # scaled, not clipped


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (6, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))  # top-left pixel white
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=100)
    shown = load_image(path)
    assert shown.size == (2, 6)  # upright as a viewer shows it
    assert np.asarray(shown)[0, -1].mean() > 200  # top-left went to top-right


def test_image_scan_up_front_raises_or_skips(tmp_path):
    good = str(_png(tmp_path / "a.png"))
    broken = tmp_path / "b.png"
    broken.write_bytes(b"\x89PNG broken")
    paths = [good, str(broken), str(tmp_path / "c.png")]
    with pytest.raises(FileNotFoundError, match=r"c.png \(image 2 of 3\)"):
        scan_images(paths, "exists")
    with pytest.raises(ImageFileError, match=r"b.png.*\(image 1 of 3\); 1 more"):
        scan_images(paths, "decode")
    policy = ErrorPolicy("skip")
    assert scan_images(paths, "decode", policy) == [1, 2]
    assert [e["image"] for e in policy.skipped] == [1, 2]
    with pytest.raises(ValueError, match="check_images: expected one of"):
        scan_images(paths, "maybe")


# ----------------------------------------------------------------------------- annotations


def _karpathy(tmp_path, records, images=True):
    for r in records:
        if images and isinstance(r, dict) and isinstance(r.get("filename"), str):
            try:
                _png(tmp_path / "images" / r["filename"])
            except (OSError, ValueError):
                pass
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"images": records}))
    return path


def _rec(i, **kw):
    return {"filename": f"{i}.png", "imgid": i, "split": "train",
            "sentences": [{"raw": f"caption {i}"}], **kw}


@pytest.mark.parametrize("record,expected", [
    ({"imgid": 9, "split": "train", "sentences": []}, "record 1: field 'filename': missing"),
    (_rec(9, filename=7), "record 1: field 'filename': expected a string, got int"),
    (_rec(9, sentences=[{"raw": "  "}]), r"record 1: field 'sentences\[0\].raw': expected a non-empty"),
    (_rec(0, filename="other.png"), "record 1: field 'imgid': duplicate image id 0"),
    (_rec(9, imgid=[1]), "record 1: field 'imgid': expected an integer or a string"),
    (_rec(9, filename="../../etc/passwd"), "record 1: field 'filename': path '../../etc/passwd' leaves"),
    (_rec(9, filename="/etc/passwd"), "record 1: field 'filename': path '/etc/passwd' is absolute"),
])
def test_karpathy_bad_record_raises_or_is_skipped(tmp_path, record, expected):
    path = _karpathy(tmp_path, [_rec(0), record, _rec(2)])
    with pytest.raises(DatasetFormatError, match=expected):
        load_karpathy(path, tmp_path / "images", "train")
    policy = ErrorPolicy("skip")
    split = load_karpathy(path, tmp_path / "images", "train", on_error=policy)
    assert split.image_ids == [0, 2]
    assert len(policy.skipped) == 1 and policy.skipped[0]["record"] == 1
    assert str(path) in policy.skipped[0]["reason"]


def test_symlink_out_of_the_image_root_is_rejected(tmp_path):
    outside = _png(tmp_path / "secret" / "s.png")
    images = tmp_path / "data" / "images"
    _png(images / "0.png")
    os.symlink(outside, images / "link.png")
    path = tmp_path / "data" / "k.json"
    path.write_text(json.dumps({"images": [_rec(0), _rec(1, filename="link.png")]}))
    with pytest.raises(DatasetFormatError, match="resolves through a symbolic link to .*secret"):
        load_karpathy(path, images, "train")
    # the image root itself may be a link (datasets on another disk)
    linked_root = tmp_path / "linked"
    os.symlink(images, linked_root)
    path.write_text(json.dumps({"images": [_rec(0)]}))
    assert load_karpathy(path, linked_root, "train").image_paths == [str(linked_root / "0.png")]


def test_invalid_utf8_is_reported_with_file_and_line(tmp_path):
    bad = b'{"id": 1, "img_path": "a.png", "sentences": ["ok"]}\n{"id": 2, "img_path": "\xff"}\n'
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "test.jsonl").write_bytes(bad)
    with pytest.raises(DatasetFormatError, match=r"en/test.jsonl: line 2: not UTF-8"):
        load_iglue(tmp_path, ["en"])
    (tmp_path / "k.json").write_bytes(b'{"images": ["\xfe"]}')
    with pytest.raises(DatasetFormatError, match="k.json: not UTF-8"):
        load_karpathy(tmp_path / "k.json", tmp_path, "train")
    (tmp_path / "test_image_names.txt").write_bytes(b"a.png\nb\xff.png\n")
    with pytest.raises(DatasetFormatError, match="test_image_names.txt: line 2: not UTF-8"):
        load_xtd(tmp_path, ["en"])


def test_albef_errors(tmp_path):
    path = tmp_path / "a.json"
    records = [{"image": "x.png", "caption": "a", "image_id": 1},
               {"image": "y.png", "caption": "b", "image_id": 1},
               {"image": "z.png", "caption": ""},
               {"image": "../z.png", "caption": "c"},
               {"image": "w.png", "caption": 3}]
    path.write_text(json.dumps(records))
    with pytest.raises(DatasetFormatError, match="record 1: field 'image_id': image_id 1 names"):
        load_albef(path, tmp_path)
    policy = ErrorPolicy("skip")
    split = load_albef(path, tmp_path, on_error=policy)
    assert split.image_paths == [os.path.join(tmp_path, "x.png")]
    assert [e["record"] for e in policy.skipped] == [1, 2, 3, 4]


def _iglue(root, lang, lines):
    (root / lang).mkdir(parents=True, exist_ok=True)
    (root / lang / "test.jsonl").write_text("\n".join(json.dumps(x) for x in lines))


def test_iglue_empty_caption_duplicate_and_missing_language(tmp_path):
    _iglue(tmp_path, "en", [{"id": 1, "img_path": "1.png", "sentences": ["one"]},
                            {"id": 2, "img_path": "2.png", "sentences": ["two", " "]},
                            {"id": 1, "img_path": "1.png", "sentences": ["again"]}])
    _iglue(tmp_path, "de", [{"id": 1, "img_path": "1.png", "sentences": ["eins"]}])
    with pytest.raises(DatasetFormatError, match=r"line 2: field 'sentences\[1\]': empty caption"):
        load_iglue(tmp_path, ["en", "de"])
    policy = ErrorPolicy("skip")
    split = load_iglue(tmp_path, ["en", "de"], on_error=policy)
    assert split.image_ids == [1] and split.missing == {}
    assert [e["line"] for e in policy.skipped] == [2, 3]  # empty caption, duplicate id
    _iglue(tmp_path, "en", [{"id": 1, "img_path": "1.png", "sentences": ["one"]},
                            {"id": 2, "img_path": "2.png", "sentences": ["two"]}])
    with pytest.warns(UserWarning, match=r"de: 1 \(e.g. \[2\]\)"):  # a language missing
        split = load_iglue(tmp_path, ["en", "de"])
    assert split.missing == {"de": [2]}  # kept without captions, reported


def test_multi30k_name_escaping_root_drops_that_line_everywhere(tmp_path):
    (tmp_path / "test_images.txt").write_text("a.png\n../b.png\nc.png\n")
    (tmp_path / "test.en").write_text("A\nB\nC\n")
    (tmp_path / "test.de").write_text("Ax\nBx\nCx\n")
    with pytest.raises(DatasetFormatError, match="test_images.txt: line 2: path '../b.png' leaves"):
        load_multi30k(tmp_path, ["en", "de"])
    split = load_multi30k(tmp_path, ["en", "de"], on_error="skip")
    assert split.captions == {"en": ["A", "C"], "de": ["Ax", "Cx"]}
    (tmp_path / "test.de").write_text("Ax\nBx\n")  # misaligned: always an error
    with pytest.raises(DatasetFormatError, match="has 2 captions but"):
        load_multi30k(tmp_path, ["en", "de"], on_error="skip")


def _cirr(root, gallery, records):
    (root / "image_splits").mkdir(parents=True, exist_ok=True)
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "image_splits" / "split.rc2.val.json").write_text(json.dumps(gallery))
    (root / "captions" / "cap.rc2.val.json").write_text(json.dumps(records))


def _triplet(pairid, ref="a", target="b", caption="make it blue"):
    return {"pairid": pairid, "reference": ref, "target_hard": target, "caption": caption,
            "img_set": {"members": [ref, target]}}


def test_cirr_triplet_outside_the_split_and_empty_caption(tmp_path):
    _cirr(tmp_path, {"a": "a.png", "b": "b.png", "evil": "../../x.png"},
          [_triplet(0), _triplet(1, target="zzz"), _triplet(2, caption=" ")])
    with pytest.raises(DatasetFormatError, match="split.rc2.val.json: field 'evil': path"):
        load_cirr(tmp_path, "val")
    _cirr(tmp_path, {"a": "a.png", "b": "b.png"},
          [_triplet(0), _triplet(1, target="zzz"), _triplet(2, caption=" ")])
    with pytest.raises(DatasetFormatError,
                       match="record 1: field 'target_hard': image 'zzz' is not in the split"):
        load_cirr(tmp_path, "val")
    policy = ErrorPolicy("skip")
    split = load_cirr(tmp_path, "val", on_error=policy)
    assert split.pair_ids == [0]
    assert [e["record"] for e in policy.skipped] == [1, 2]


def test_fashioniq_triplet_outside_the_split_and_duplicates(tmp_path):
    (tmp_path / "image_splits").mkdir()
    (tmp_path / "captions").mkdir()
    (tmp_path / "image_splits" / "split.dress.val.json").write_text(json.dumps(["a", "b", "a"]))
    records = [{"candidate": "a", "target": "b", "captions": ["x", "y"]},
               {"candidate": "q", "target": "b", "captions": ["x", "y"]},
               {"candidate": "a", "target": "b", "captions": ["", " "]}]
    (tmp_path / "captions" / "cap.dress.val.json").write_text(json.dumps(records))
    with pytest.raises(DatasetFormatError, match="record 2: duplicate image name 'a'"):
        load_fashioniq(tmp_path, "dress", "val", image_ext="png")
    policy = ErrorPolicy("skip")
    split = load_fashioniq(tmp_path, "dress", "val", image_ext="png", on_error=policy)
    assert split.gallery_names == ["a", "b"] and split.num_queries == 1
    assert [e["record"] for e in policy.skipped] == [2, 1, 2]
    assert "candidate" in policy.skipped[1]["reason"]


# ----------------------------------------------------------------------------- sources


def test_sources_check_images_up_front_and_skip_with_a_count(tmp_path):
    records = [_rec(i) for i in range(4)]
    path = _karpathy(tmp_path, records)
    (tmp_path / "images" / "1.png").write_bytes(b"")  # zero bytes
    (tmp_path / "images" / "3.png").unlink()  # missing
    with pytest.raises(FileNotFoundError, match=r"3.png \(image 3 of 4\)"):
        karpathy_pairs(tmp_path, "k.json", None, image_root="images")
    with pytest.raises(ImageFileError, match=r"1.png: cannot be decoded.*\(image 1 of 4\)"):
        karpathy_pairs(tmp_path, "k.json", None, image_root="images", check_images="decode")
    data = karpathy_pairs(tmp_path, "k.json", None, image_root="images", on_error="skip",
                          check_images="decode")
    assert data.split.image_ids == [0, 2] and len(data) == 2
    assert sorted(e["image"] for e in data.skipped) == [1, 3]
    assert path.is_file()


def test_multilingual_source_skips_and_counts(tmp_path):
    _iglue(tmp_path / "iglue", "en", [{"id": i, "img_path": f"{i}.png", "sentences": ["s"]}
                                      for i in range(3)] + [{"id": 9}])
    for i in range(3):
        _png(tmp_path / f"{i}.png")
    (tmp_path / "iglue" / "en" / "train.jsonl").write_text(
        (tmp_path / "iglue" / "en" / "test.jsonl").read_text())
    with pytest.raises(DatasetFormatError, match="line 4: field 'img_path': missing"):
        multilingual_train(tmp_path, ["en"], None)
    data = multilingual_train(tmp_path, ["en"], None, on_error="skip")
    assert len(data) == 3 and len(data.skipped) == 1

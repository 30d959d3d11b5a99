"""Faults of the negative bank (mmret.bank) and the teacher-feature cache
(mmret.teachers.cache): corrupted, truncated and mismatched files are detected at load;
empty inputs and NaN/inf (or float16-overflowing) features are rejected, naming the row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _flip_last_tensor_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- bank


@pytest.fixture()
def bank_mod():
    return pytest.importorskip("mmret.bank")


def _bank(bank_mod, n=4, d=3, fingerprint="sha256:model-a"):
    features = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    return bank_mod.NegativeBank(features, [f"img{i}" for i in range(n)], fingerprint)


@pytest.mark.parametrize("damage", ["flip", "truncate", "not_safetensors", "missing"])
def test_bank_damaged_file_is_detected(bank_mod, tmp_path, damage):
    path = _bank(bank_mod).save(tmp_path / "bank.safetensors")
    if damage == "flip":
        _flip_last_tensor_byte(path)
        expected = "corrupted"
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
        expected = "bank.safetensors"
    elif damage == "not_safetensors":
        path.write_text("hello")
        expected = "not a readable safetensors file"
    else:
        path.unlink()
        expected = "not found"
    with pytest.raises(bank_mod.BankFileError, match=expected):
        bank_mod.NegativeBank.load(path)


def test_bank_mismatch_is_detected(bank_mod, tmp_path):
    path = _bank(bank_mod).save(tmp_path / "bank.safetensors")
    with pytest.raises(bank_mod.BankMismatchError, match="another model"):
        bank_mod.NegativeBank.load(path, expect_model_fingerprint="sha256:model-b")
    other = bank_mod.images_fingerprint(["img0", "img1", "img2", "other"])
    with pytest.raises(bank_mod.BankMismatchError):
        bank_mod.NegativeBank.load(path, expect_images_fingerprint=other)


def test_bank_rejects_empty_and_out_of_range(bank_mod):
    with pytest.raises(ValueError, match="non-empty"):
        bank_mod.NegativeBank(torch.zeros(0, 3), [], "sha256:x")
    with pytest.raises(ValueError, match="image_ids"):
        bank_mod.NegativeBank(torch.zeros(2, 3), ["a"], "sha256:x")
    with pytest.raises(ValueError, match="bank rows must be in"):
        _bank(bank_mod).reference_features([0, 9])


def test_bank_rejects_nan_features(bank_mod):
    features = torch.ones(2, 3)
    features[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        bank_mod.NegativeBank(features, ["a", "b"], "sha256:x")


# ----------------------------------------------------------------------------- cache


@pytest.fixture()
def cache_mod():
    return pytest.importorskip("mmret.teachers.cache")


def _text_teacher(name="toy-text", dim=3, value=None):
    from mmret.teachers.base import Teacher

    class ToyText(Teacher):
        modality = "text"

        def _encode(self, batch):
            out = torch.stack([torch.tensor([len(t), 1.0, 2.0])[:dim] for t in batch])
            if value is not None:
                out[0, 0] = value
            return out

    return ToyText(name, dim, "len", normalize=False)


def _cache(cache_mod, tmp_path, teacher=None, fingerprint="annotation_sha256=aa;split=train"):
    return cache_mod.build_teacher_cache(
        None, teacher or _text_teacher(), [], [("c0", "a cat"), ("c1", "two dogs")],
        tmp_path / "cache.safetensors", fingerprint, progress=False)


@pytest.mark.parametrize("damage", ["flip", "truncate", "not_safetensors", "missing"])
def test_cache_damaged_file_is_detected(cache_mod, tmp_path, damage):
    path = _cache(cache_mod, tmp_path)
    if damage == "flip":
        _flip_last_tensor_byte(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "not_safetensors":
        path.write_text("hello")
    else:
        path.unlink()
    error = FileNotFoundError if damage == "missing" else cache_mod.TeacherCacheError
    with pytest.raises(error, match="cache"):
        cache_mod.TeacherCache.load(path)


def test_cache_mismatch_is_detected(cache_mod, tmp_path):
    path = _cache(cache_mod, tmp_path)
    with pytest.raises(cache_mod.TeacherCacheError, match="split"):
        cache_mod.TeacherCache.load(path, expect_fingerprint="annotation_sha256=aa;split=val")
    with pytest.raises(cache_mod.TeacherCacheError):
        cache_mod.TeacherCache.load(path, expect_text_teacher="other-teacher")
    with pytest.raises(cache_mod.TeacherCacheError):
        cache_mod.TeacherCache.load(path, expect_text_ids=["c0", "c9"])


def test_cache_rejects_empty_input(cache_mod, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        cache_mod.build_teacher_cache(None, _text_teacher(), [], [], tmp_path / "c.safetensors",
                                      "x", progress=False)


def test_cache_teacher_with_wrong_dimension_is_rejected(cache_mod, tmp_path):
    from mmret.teachers.base import Teacher

    class Wrong(Teacher):
        modality = "text"

        def _encode(self, batch):
            return torch.zeros(len(batch), 5)

    with pytest.raises(ValueError, match=r"expected \(B, 3\)"):
        _cache(cache_mod, tmp_path, Wrong("wrong", 3, "none", normalize=False))


def test_cache_rejects_nan_features(cache_mod, tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        _cache(cache_mod, tmp_path, _text_teacher(value=float("nan")))


def test_cache_rejects_float16_overflow_and_writes_nothing(cache_mod, tmp_path):
    """A finite float32 feature that overflows float16 is caught after the conversion, and
    names the item; no (partial) cache file is left behind."""
    with pytest.raises(ValueError, match=r"id 'c0'.*no cache was written"):
        cache_mod.build_teacher_cache(
            None, _text_teacher(value=1e6), [], [("c0", "a cat"), ("c1", "two dogs")],
            tmp_path / "cache.safetensors", "fp", progress=False, dtype=torch.float16)
    assert list(tmp_path.iterdir()) == []


def test_bank_error_names_the_image(bank_mod):
    features = torch.ones(3, 2)
    features[2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"row 2, image id 'c'"):
        bank_mod.NegativeBank(features, ["a", "b", "c"], "sha256:x")

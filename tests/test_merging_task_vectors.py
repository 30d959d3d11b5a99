"""Task vectors (mmret.merging.task_vectors): V_i = θ_i − θ_0, frozen / non-floating /
absent-from-the-base tensors handled with a note, safetensors deltas round-trip."""

from __future__ import annotations

import pytest
import torch

from mmret.merging.checkpoint import MergeError, ModelWeights
from mmret.merging.task_vectors import load_task_vector, save_task_vectors, task_vectors


def weights(name: str, seed: int, extra: dict | None = None) -> ModelWeights:
    g = torch.Generator().manual_seed(seed)
    tensors = {"model/w": torch.randn(4, 3, generator=g), "model/frozen": torch.ones(5),
               "model/ids": torch.arange(6), **(extra or {})}
    return ModelWeights(name, tensors, {"name": "tiny", "kwargs": {"d": 3}})


def test_task_vectors_and_explicit_handling(tmp_path):
    base = weights("base", 0)
    a = weights("a", 1, {"objective/t": torch.tensor(2.0)})
    b = weights("b", 2, {"objective/t": torch.tensor(4.0)})
    expect = [a.tensors["model/w"] - base.tensors["model/w"],
              b.tensors["model/w"] - base.tensors["model/w"]]
    tv = task_vectors(base, [a, b], check_origin=False)
    assert list(tv.base) == ["model/w"]
    for got, want in zip(tv.vectors, expect, strict=True):
        assert torch.equal(got["model/w"], want)
    assert torch.equal(tv.kept["model/frozen"], torch.ones(5))      # frozen: from the base
    assert torch.equal(tv.kept["model/ids"], torch.arange(6))       # non-floating: base
    assert tv.kept["objective/t"].item() == pytest.approx(3.0)     # absent: models' mean
    notes = " ".join(tv.notes)
    assert "model/frozen" in notes and "model/ids" in notes and "objective/t" in notes
    save_task_vectors(tv, tmp_path)
    delta, meta = load_task_vector(tmp_path / "task_vector_1.safetensors")
    assert torch.equal(delta["model/w"], expect[1]) and meta["model"] == "b"


def test_refusals_name_model_and_tensor():
    base = weights("base", 0)
    with pytest.raises(MergeError, match=r"model 'b': tensor 'objective/t' is missing"):
        task_vectors(base, [weights("a", 1, {"objective/t": torch.tensor(1.0)}),
                            weights("b", 2)], check_origin=False)
    with pytest.raises(MergeError, match=r"tensor 'objective/t' is absent from the base"):
        task_vectors(base, [weights("a", 1, {"objective/t": torch.tensor(1.0)})],
                     absent_in_base="error", check_origin=False)
    bad = weights("c", 3)
    bad.tensors["model/w"] = torch.zeros(3, 4)
    with pytest.raises(MergeError, match=r"model 'c': tensor 'model/w' has shape \(3, 4\)"):
        task_vectors(base, [bad], check_origin=False)
    same = weights("d", 0)
    with pytest.raises(MergeError, match="nothing to merge"):
        task_vectors(base, [same], check_origin=False)


def test_read_safetensors_equals_safetensors_and_refuses_a_truncated_file(tmp_path):
    from safetensors.torch import load_file, save_file

    from mmret.checkpoint import CheckpointError
    from mmret.merging.checkpoint import read_safetensors

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "c": torch.randn(2).half(),
               "d": torch.zeros(0), "e": torch.tensor(True)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    ours, ref = read_safetensors(tmp_path / "x.safetensors"), load_file(str(tmp_path / "x.safetensors"))
    assert ours.keys() == ref.keys()
    assert all(ours[k].dtype == ref[k].dtype and torch.equal(ours[k], ref[k]) for k in ref)
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "y.safetensors").write_bytes(data[:-6])
    with pytest.raises(CheckpointError, match="y.safetensors: unreadable safetensors file"):
        read_safetensors(tmp_path / "y.safetensors")

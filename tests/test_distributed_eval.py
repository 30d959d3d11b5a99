"""Sharded encoding over ranks: shard_range, gather_encoded (uneven and empty shards) and
the image_text / cross_lingual protocols with 2 gloo processes = one process, exactly."""

from __future__ import annotations

import pytest
import torch

from mmret.distributed import gather_encoded, shard_range
from tests.distributed_utils import run_distributed


@pytest.mark.parametrize("total,world,align", [(0, 2, 4), (1, 2, 4), (7, 2, 1), (23, 2, 5),
                                               (23, 3, 5), (10, 4, 4), (64, 2, 64)])
def test_shard_range_covers_rows_once_in_whole_batches(total, world, align):
    ranges = [shard_range(total, r, world, align) for r in range(world)]
    rows = [i for r in ranges for i in r]
    assert rows == list(range(total))  # contiguous, rank-major, each row once
    for r in ranges[:-1]:
        assert len(r) % align == 0  # only the last non-empty shard ends in a partial batch
    sizes = [-(-len(r) // align) for r in ranges]
    assert max(sizes) - min(sizes) <= 1  # batches balanced
    with pytest.raises(ValueError, match="rank 2 outside"):
        shard_range(total, 2, 2)


def test_single_process_is_the_plain_loop():
    from mmret.encoding import EncodeOptions, encode_with

    calls = []

    def encode(rows: torch.Tensor) -> torch.Tensor:
        calls.append((int(rows[0]), int(rows[-1]) + 1))
        return rows.float()[:, None].repeat(1, 3)

    out = encode_with(encode, list(range(11)), EncodeOptions(batch_size=4, normalize=False),
                      prepare=torch.tensor)
    assert calls == [(0, 4), (4, 8), (8, 11)]
    assert torch.equal(out[:, 0], torch.arange(11.0))
    assert torch.equal(gather_encoded(out, 11), out)
    with pytest.raises(ValueError, match="expected 12"):
        gather_encoded(out, 12)


def _gather(rank: int, world: int):
    results = {}
    for total, align in [(7, 1), (5, 4), (1, 4), (9, 2)]:
        shard = shard_range(total, align=align)
        local = torch.arange(shard.start, shard.stop, dtype=torch.float64)[:, None] * \
            torch.tensor([[1.0, -1.0]], dtype=torch.float64)
        results[f"{total}_{align}"] = gather_encoded(local, total)
        results[f"{total}_{align}_len"] = torch.tensor(len(shard))
    return results


def test_gather_encoded_unpads_uneven_and_empty_shards_exactly(two_process_results):
    per_rank = two_process_results
    for total, align in [(7, 1), (5, 4), (1, 4), (9, 2)]:
        expected = torch.arange(total, dtype=torch.float64)[:, None] * torch.tensor([[1.0, -1.0]])
        for res in per_rank:
            assert torch.equal(res[f"{total}_{align}"], expected)
    assert [int(r["1_4_len"]) for r in per_rank] == [0, 1]  # rank 0 had nothing to encode
    assert [int(r["5_4_len"]) for r in per_rank] == [4, 1]


def _eval_sets(root):
    from mmret.data.sources import karpathy_eval, multilingual_eval
    from mmret.towers import create_towers

    torch.manual_seed(0)
    towers = create_towers("mmret-tiny")
    image_text = karpathy_eval(root, "karpathy/dataset_shapes.json", "train",
                               towers.eval_transform, max_images=23)
    cross = multilingual_eval(root, ["en", "de"], "train", towers.eval_transform,
                              source="iglue", max_images=13)
    return towers, image_text, cross


def _metrics(towers, image_text, cross, distributed: bool):
    from mmret.evaluation import EvalOptions, run_protocol

    options = EvalOptions(tokenizer=towers.tokenizer, batch_size=5, chunk_size=7,
                          distributed=distributed)
    out = {}
    for name, data in (("image_text", image_text), ("cross_lingual", cross)):
        metrics, _ = run_protocol(name, towers.model, data, options)
        out.update({f"{name}/{k}": torch.tensor(v, dtype=torch.float64)
                    for k, v in metrics.items() if isinstance(v, float)})
    return out


def _both(rank: int, world: int, root: str):
    return {**_gather(rank, world), **_metrics(*_eval_sets(root), distributed=True)}


@pytest.fixture(scope="module")
def shapes40(tmp_path_factory):
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes40")
    generate(root, num_images=40, image_size=32, seed=0, workers=1, progress=False,
             overwrite=True)
    return root


@pytest.fixture(scope="module")
def two_process_results(shapes40):
    """One pair of gloo processes for both tests (process start-up dominates)."""
    return run_distributed(_both, 2, str(shapes40))


def test_two_process_evaluation_equals_one_process_exactly(shapes40, two_process_results):
    torch.set_num_threads(1)
    single = _metrics(*_eval_sets(shapes40), distributed=False)
    per_rank = [{k: v for k, v in r.items() if "/" in k} for r in two_process_results]
    assert "image_text/text_to_image_R@1" in single and "cross_lingual/text_to_image_R@1" in single
    for res in per_rank:
        assert res.keys() == single.keys()
        for key, value in single.items():  # exactly, NaN included
            assert torch.equal(res[key], value) or (value.isnan() and res[key].isnan()), key

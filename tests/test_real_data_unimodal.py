"""Uni-modal evaluation of real (Karpathy-format) data with one override,
``data=karpathy_unimodal``: image groups from shared captions, counts as integers
(issue 20, point 10)."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmret.data.retrieval import RetrievalSplit, load_karpathy
from mmret.data.unimodal import shared_caption_groups, unimodal_eval
from mmret.metrics.unimodal import image_to_image_retrieval
from tests.real_data_utils import ANNOTATION, compose_train, write_karpathy_photos


def _naive_groups(split: RetrievalSplit) -> list[int]:
    """Direct transcription of the rule: images i, j are linked when some caption of i
    equals some caption of j (lower-case, single spaces, no final full stop); groups are
    the connected components with >= 2 images, numbered by their first image."""
    def norm(text: str) -> str:
        return " ".join(text.lower().split()).rstrip(".").rstrip()

    captions = [{norm(split.captions[t]) for t in ts} for ts in split.image_to_texts()]
    n = split.num_images
    component = list(range(n))
    changed = True
    while changed:  # propagate the smallest index along links until stable
        changed = False
        for i, j in itertools.combinations(range(n), 2):
            if captions[i] & captions[j] and component[i] != component[j]:
                low = min(component[i], component[j])
                component[i] = component[j] = low
                changed = True
    sizes = {c: component.count(c) for c in component}
    numbering: dict[int, int] = {}
    return [numbering.setdefault(c, len(numbering)) if sizes[c] > 1 else -1
            for c in component]


def test_shared_caption_groups_follow_the_rule():
    captions = ["A dog on a bed.", "a cat", "A  DOG on a bed", "two birds", "Two birds.",
                "a cat", "a lone tree", "x"]
    owners = [0, 1, 2, 3, 4, 5, 6, 6]  # 0~2 (case, spaces, full stop), 3~4, 1~5; 6 alone
    split = RetrievalSplit([f"{i}.jpg" for i in range(7)], captions, owners, list(range(7)))
    groups = shared_caption_groups(split)
    assert groups.tolist() == [0, 1, 0, 2, 2, 1, -1] == _naive_groups(split)
    # transitive: 0 shares with 1, 1 with 2 -> one group of three
    chain = RetrievalSplit(["a", "b", "c", "d"], ["p", "p", "q", "q", "r"], [0, 1, 1, 2, 3],
                           [0, 1, 2, 3])
    assert shared_caption_groups(chain).tolist() == [0, 0, 0, -1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_caption_groups_match_a_naive_reference_on_random_captions(seed):
    g = torch.Generator().manual_seed(seed)
    n = 30
    words = ["a red bus", "A red bus.", "a kite", "the sea", "a dog", "A dog", "sky"]
    owners = torch.randint(0, n, (60,), generator=g).tolist()
    captions = [words[int(i)] if int(i) < len(words) else f"own {k}" for k, i in
                enumerate(torch.randint(0, 3 * len(words), (60,), generator=g))]
    split = RetrievalSplit([str(i) for i in range(n)], captions, owners, list(range(n)))
    assert shared_caption_groups(split).tolist() == _naive_groups(split)


def test_unimodal_source_on_photos(tmp_path):
    write_karpathy_photos(tmp_path)
    data = unimodal_eval(tmp_path, ANNOTATION, "test", None, image_groups="shared_caption")
    split = load_karpathy(tmp_path / ANNOTATION, tmp_path, "test")
    # the 6 test photos: 16&17, 18&19, 20&21 share their first caption
    assert data.image_groups.tolist() == [0, 0, 1, 1, 2, 2] == _naive_groups(split)
    with pytest.raises(ValueError, match="image_groups: expected one of .*shared_caption"):
        unimodal_eval(tmp_path, ANNOTATION, "test", None, image_groups="captions")
    out = image_to_image_retrieval(torch.eye(6), data.image_groups)
    assert out["image_to_image_num_queries"] == 6
    assert isinstance(out["image_to_image_num_queries"], int)


def test_karpathy_unimodal_is_one_override(tmp_path):
    """data=karpathy_unimodal with the usual data=karpathy path overrides evaluates
    image_text and unimodal (image->image from shared captions) on the same split;
    results.md prints the query counts as integers."""
    from mmret.engine.run import run_training

    root = tmp_path / "coco"
    write_karpathy_photos(root)
    cfg = compose_train("data=karpathy_unimodal", f"data.root={root}",
                        f"data.check_file={ANNOTATION}", f"data.train.annotation={ANNOTATION}",
                        f"data.eval.image_text.annotation={ANNOTATION}")
    assert cfg.data.eval.unimodal.annotation == ANNOTATION
    out = run_training(cfg, tmp_path / "run")
    by_protocol = {m["protocol"]: m for m in out["results"].values()}
    assert set(by_protocol) == {"image_text", "unimodal"}
    uni = by_protocol["unimodal"]
    assert uni["text_to_text_num_queries"] == 30 and uni["image_to_image_num_queries"] == 6
    assert isinstance(uni["image_to_image_num_queries"], int)
    assert 0 <= uni["image_to_image_mAP"] <= 100
    table = (tmp_path / "run" / "results.md").read_text()
    section = [line for line in table[table.index("## unimodal"):].splitlines()
               if line.startswith("|")]
    header = [c.strip() for c in section[0].strip("|").split("|")]
    cells = [c.strip() for c in section[2].strip("|").split("|")]
    row = dict(zip(header, cells, strict=True))
    assert row["text_to_text_num_queries"] == "30" and row["image_to_image_num_queries"] == "6"
    assert row["text_to_text_mAP"] == f"{uni['text_to_text_mAP']:.2f}"

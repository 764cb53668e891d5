"""Corpus readers on the shared corpora and on hand-made damaged input."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from bertwwm.text import corpus
from bertwwm.text.corpus import CorpusCounts, list_input_files, read_documents
from bertwwm.core.errors import UserError


def _docs(paths, **kw):
    counts = CorpusCounts()
    docs = list(read_documents(paths, counts=counts, **kw))
    return docs, counts


def test_blank_line_separated_gzip_matches_an_independent_split(resources):
    path = resources / "corpus" / "prc-laws-sample.txt.gz"  # the shared file's first 333 documents, same format
    docs, counts = _docs([path])
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    expected = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    assert len(docs) == len(expected) == counts.documents
    assert [d.text for d in docs[:50]] == expected[:50]
    assert sum(len(d.text) for d in docs) == sum(len(e) for e in expected)
    assert counts.input_bytes == path.stat().st_size
    assert counts.skipped_invalid_utf8 == counts.skipped_nul == counts.split_long_lines == 0


def test_clue_sample_has_2500_documents_of_sentence_lines(shared_data):
    docs, counts = _docs([shared_data / "corpus" / "clue-small-sample.txt"])
    assert len(docs) == 2500  # as its README says
    assert all("\n\n" not in d.text for d in docs)
    assert docs[0].line == 1 and docs[1].line > 2


def test_wikiextractor_documents_drop_title_and_tags(shared_data):
    path = shared_data / "corpus" / "zhwiki-sample.wikiextractor.txt"
    docs, counts = _docs([path])
    raw = path.read_text(encoding="utf-8")
    titles = re.findall(r'<doc [^>]*title="([^"]*)"', raw)
    assert len(docs) == len(titles) == 64
    assert not any("<doc" in d.text or "</doc>" in d.text for d in docs)
    assert docs[0].text.startswith("数学是利用符号语言")  # the "数学" title line is gone
    for d, title in zip(docs, titles):
        assert d.text.split("\n", 1)[0] != title


def test_doc_per_line_mode(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("第一篇。\n\n第二篇。\n第三篇。\n", encoding="utf-8")
    docs, _ = _docs([p], doc_per_line=True)
    assert [d.text for d in docs] == ["第一篇。", "第二篇。", "第三篇。"]
    assert [d.line for d in docs] == [1, 3, 4]
    docs, _ = _docs([p])
    assert [d.text for d in docs] == ["第一篇。", "第二篇。\n第三篇。"]


def test_text_without_blank_lines_is_ambiguous(tmp_path):
    p = tmp_path / "lines.txt"
    p.write_text("一句。\n两句。\n三句。\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        _docs([p])
    assert "--doc-per-line" in str(e.value) and str(p) in str(e.value)
    one = tmp_path / "one.txt"
    one.write_text("只有一行的文档。\n", encoding="utf-8")
    assert [d.text for d in _docs([one])[0]] == ["只有一行的文档。"]


def test_jsonl_reads_text_and_reports_bad_lines(tmp_path):
    good = tmp_path / "c.jsonl.gz"
    with gzip.open(good, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "你好。\n世界。", "id": 1}, ensure_ascii=False) + "\n\n")
        f.write(json.dumps({"text": ""}) + "\n")
        f.write(json.dumps({"text": "再见"}, ensure_ascii=False) + "\n")
    docs, counts = _docs([good])
    assert [d.text for d in docs] == ["你好。\n世界。", "再见"]
    assert counts.skipped_empty_documents == 1
    assert [d.line for d in docs] == [1, 4]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(UserError) as e:
        _docs([bad])
    assert (e.value.path, e.value.line) == (str(bad), 2)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"text": "a"}\n{"body": "b"}\n', encoding="utf-8")
    with pytest.raises(UserError, match='"text" field') as e:
        _docs([missing])
    assert e.value.line == 2


def test_jsonl_is_recognised_by_content_as_wikiextractor_json_writes_it(tmp_path):
    p = tmp_path / "wiki_00"
    p.write_text('{"id": "1", "url": "u", "title": "甲", "text": "甲\\n\\n正文。"}\n{"id": "2", "text": "乙文。"}\n',
                 encoding="utf-8")
    assert [d.text for d in _docs([p])[0]] == ["甲\n\n正文。", "乙文。"]
    plain = tmp_path / "braces.txt"  # a plain text line that merely starts with a brace stays text
    plain.write_text("{注意} 这不是 JSON。\n\n第二篇。\n", encoding="utf-8")
    assert [d.text for d in _docs([plain])[0]] == ["{注意} 这不是 JSON。", "第二篇。"]


def test_invalid_utf8_nul_and_empty_documents_are_skipped_and_counted(tmp_path):
    p = tmp_path / "dirty.txt"
    p.write_bytes("好的文本。\n".encode() + b"\xff\xfe broken\n" + b"nul\x00byte\n\n"
                  + b"\xc3\x28\n\n" + "最后一篇。\n".encode())
    docs, counts = _docs([p])
    assert [d.text for d in docs] == ["好的文本。", "最后一篇。"]
    assert counts.skipped_invalid_utf8 == 2
    assert counts.skipped_nul == 1
    assert counts.skipped_empty_documents == 1  # the middle document had only an undecodable line


def test_binary_file_is_an_error(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"\x00\x01\x02\xff" * 100)
    with pytest.raises(UserError, match="no readable text"):
        _docs([p])


def test_long_lines_are_split_between_characters(tmp_path):
    p = tmp_path / "long.txt"
    line = "汉字" * 300_000  # 600,000 characters, 1.8 MB of UTF-8: over the 1 MiB line limit
    p.write_text(line + "\n\n短文档。\n", encoding="utf-8")
    docs, counts = _docs([p])
    assert counts.split_long_lines == 1
    assert docs[0].text.replace("\n", "") == line  # nothing lost, no character broken
    assert max(len(x.encode()) for x in docs[0].text.split("\n")) <= corpus.MAX_LINE_BYTES
    assert docs[1].text == "短文档。"


def test_oversized_documents_are_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "MAX_DOCUMENT_CHARS", 1000)
    p = tmp_path / "big.txt"
    paragraphs = [f"第{i}段。" + "字" * 90 for i in range(30)]
    p.write_text("小。\n\n" + "\n".join(paragraphs) + "\n\n小。\n", encoding="utf-8")
    docs, counts = _docs([p])
    assert counts.split_long_documents >= 1
    assert all(len(d.text) <= 1000 for d in docs)
    assert "\n".join(d.text for d in docs[1:-1]) == "\n".join(paragraphs)
    first = tmp_path / "first.txt"  # no blank line yet and already over the limit: ambiguous
    first.write_text("\n".join(paragraphs) + "\n\n小。\n", encoding="utf-8")
    with pytest.raises(UserError, match="--doc-per-line"):
        _docs([first])


def test_wikiextractor_errors_name_file_and_line(tmp_path):
    unclosed = tmp_path / "wiki_00"
    unclosed.write_text('<doc id="1" url="u" title="甲">\n甲\n内容。\n</doc>\n<doc id="2" url="u" title="乙">\n乙\n正文\n',
                        encoding="utf-8")
    with pytest.raises(UserError, match="not closed") as e:
        _docs([unclosed])
    assert e.value.line == 5
    stray = tmp_path / "wiki_01"
    stray.write_text('<doc id="1" url="u" title="甲">\n甲\n内容。\n</doc>\n游离的文字\n', encoding="utf-8")
    with pytest.raises(UserError, match="outside") as e:
        _docs([stray])
    assert e.value.line == 5


def test_directories_are_read_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "z").mkdir(parents=True)
    (tmp_path / "b" / "1.txt").write_text("乙。\n", encoding="utf-8")
    (tmp_path / "a" / "z" / "2.txt").write_text("甲。\n", encoding="utf-8")
    (tmp_path / "a" / "3.txt").write_text("丙。\n", encoding="utf-8")
    (tmp_path / ".hidden").write_text("不读。\n", encoding="utf-8")
    assert [p.relative_to(tmp_path).as_posix() for p in list_input_files([tmp_path])] == [
        "a/3.txt", "a/z/2.txt", "b/1.txt"]
    assert [d.text for d in _docs([tmp_path])[0]] == ["丙。", "甲。", "乙。"]


def test_missing_input_and_corrupt_gzip(tmp_path):
    with pytest.raises(UserError, match="not found"):
        _docs([tmp_path / "nope.txt"])
    broken = tmp_path / "cut.txt.gz"
    text = "".join(f"第{i}篇文档，编号{i * 7919 % 100003}。\n\n" for i in range(5000)).encode()
    whole = gzip.compress(text)
    broken.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError) as e:
        _docs([broken])
    assert e.value.path == str(broken)
    damaged = tmp_path / "flipped.txt.gz"  # corrupt deflate data raises zlib.error, not OSError
    flipped = bytearray(whole)
    for k in range(200, 260):
        flipped[k] ^= 0x5A
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(UserError, match="cannot read") as e:
        _docs([damaged])
    assert e.value.path == str(damaged)


def test_reading_streams_instead_of_loading_the_file(shared_data):
    path = shared_data / "corpus" / "prc-laws.txt.gz"
    counts = CorpusCounts()
    docs = read_documents([path], counts=counts)
    for _ in range(3):
        next(docs)
    assert 0 < counts.input_bytes < path.stat().st_size // 4  # only a small part of the file has been read
    docs.close()

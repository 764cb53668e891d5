"""`bertwwm prepare` end to end on slices of the shared corpora: invariants, determinism, resume, errors."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bertwwm.cli import main
from bertwwm.text.corpus import read_documents
from bertwwm.core.errors import UserError
from bertwwm.data.masking import MaskingConfig, budget
from bertwwm.data.prepare import prepare
from bertwwm.data.storage import PreparedDataset, read_manifest
from bertwwm.text.tokens import CLS_ID, MASK_ID, SEP_ID, VocabInfo, chinese_tokenizer

VOCAB = VocabInfo.from_vocab()
SPECIAL = set(VOCAB.special_ids.tolist())
RANDOM_OK = np.zeros(VOCAB.size, dtype=bool)
RANDOM_OK[VOCAB.random_ids] = True


@pytest.fixture(scope="module")
def slices(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Small slices of the three shared corpora, in their original formats."""
    root = tmp_path_factory.mktemp("corpora")
    corpus = shared_data / "corpus"
    laws = [d.text for d in itertools.islice(read_documents([corpus / "prc-laws.txt.gz"]), 20)]
    with gzip.open(root / "laws.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n\n".join(laws) + "\n")
    clue = (corpus / "clue-small-sample.txt").read_text(encoding="utf-8").split("\n\n")[:250]
    (root / "clue.txt").write_text("\n\n".join(clue) + "\n", encoding="utf-8")
    wiki = (corpus / "zhwiki-sample.wikiextractor.txt").read_text(encoding="utf-8")
    cut = [m for m in range(len(wiki)) if wiki.startswith("</doc>\n", m)][:6][-1] + len("</doc>\n")
    (root / "wiki_00").write_text(wiki[:cut], encoding="utf-8")
    return {"laws": root / "laws.txt.gz", "clue": root / "clue.txt", "wiki": root / "wiki_00"}


def _source_ids(paths) -> bytes:
    """All documents tokenised independently by the fast tokenizer, as one uint16 byte string with a 0xFFFF
    byte pair between documents (so a found segment never spans two documents)."""
    tok = chinese_tokenizer()
    docs = [d.text for d in read_documents(paths)]
    parts = [np.array(ids + [0xFFFF], dtype=np.uint16).tobytes()
             for ids in tok(docs, add_special_tokens=False)["input_ids"]]
    return b"".join(parts)


def _occurs(needle: np.ndarray, haystack: bytes) -> bool:
    key = needle.astype(np.uint16).tobytes()
    pos = haystack.find(key)
    while pos >= 0 and pos % 2:  # only matches aligned to whole tokens count
        pos = haystack.find(key, pos + 1)
    return pos >= 0


def _word_groups(ids: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
    specials = np.isin(ids, list(SPECIAL))
    first = np.flatnonzero(starts | specials | np.r_[False, specials[:-1]])
    return [g for g in np.split(np.arange(len(ids)), first[1:]) if not specials[g[0]]]


def check_folder(folder: Path, sources, *, sample: int = 300, wwm: bool = True) -> dict:
    """Every invariant of a prepared folder, checked item by item (on up to `sample` items)."""
    manifest = read_manifest(folder)
    ds = PreparedDataset(folder)
    seq = manifest["max_seq_length"]
    assert len(ds) == manifest["counts"]["instances"] > 0
    assert sum(s["tokens"] for s in manifest["shards"]) == manifest["counts"]["tokens"]
    haystack = _source_ids(sources)
    cfg = MaskingConfig(max_predictions=manifest["config"]["max_predictions"])
    picks = np.unique(np.linspace(0, len(ds) - 1, min(sample, len(ds))).astype(int))
    for i in picks:
        item = ds[int(i)]
        ids = item["input_ids"].copy()
        n = len(ids)
        assert 3 <= n <= seq
        if "labels" in item:  # static: recover the original ids, check the masks
            chosen = item["labels"] != -100
            original = ids.copy()
            original[chosen] = item["labels"][chosen]
            positions = np.flatnonzero(chosen)
            assert 1 <= len(positions) <= budget(n, cfg)
            assert not any(int(t) in SPECIAL for t in original[positions])
            given = ids[positions]
            assert all(g == MASK_ID or g == o or RANDOM_OK[g] for g, o in zip(given, original[positions]))
            if wwm:  # whole words only: each word is masked completely or not at all
                for g in _word_groups(original, item["word_starts"]):
                    assert chosen[g].all() or not chosen[g].any()
            ids = original
        assert ids[0] == CLS_ID and ids[-1] == SEP_ID
        tt = item["token_type_ids"]
        if manifest["nsp"]:
            assert item["next_sentence_label"] in (0, 1)
            b = int(np.argmax(tt))
            assert b > 2 and tt[:b].sum() == 0 and tt[b:].all()
            assert ids[b - 1] == SEP_ID and (ids[1:-1] == SEP_ID).sum() == 1
            segments = [ids[1:b - 1], ids[b:-1]]
        else:
            assert not tt.any()
            inner = ids[1:-1]
            segments = np.split(inner, np.flatnonzero(inner == SEP_ID))
            segments = [s[s != SEP_ID] for s in segments]
        for seg in segments:
            assert len(seg) >= 1
            assert _occurs(seg, haystack), "a segment is not a piece of any source document"
    return manifest


def test_static_bert_wwm_on_laws_and_wikipedia(slices, tmp_path):
    out = tmp_path / "out"
    m = prepare([slices["laws"], slices["wiki"]], out, segmenter="rjieba", dupe_factor=3, shard_chars=40_000,
                seed=7, progress=False)
    assert m["complete"] and m["masking"] == "static" and m["nsp"] and m["dupe_factor"] == 3
    assert m["counts"]["documents"] == 26 and m["counts"]["files"] == 2
    assert len(m["shards"]) >= 3 and m["counts"]["alignment_fallbacks"] == 0
    check_folder(out, [slices["laws"], slices["wiki"]])
    labels = np.concatenate([np.load(out / s["name"] / "nsp_labels.npy") for s in m["shards"]])
    assert 0.45 < labels.mean() < 0.62  # about half random, as Google's script gives on long documents
    # three differently drawn copies: about three times the input tokens, each copy masked differently
    assert 2.5 < m["counts"]["tokens"] / m["counts"]["input_tokens"] < 4.0


def test_dynamic_roberta_packing_on_clue_keeps_all_text(slices, tmp_path):
    out = tmp_path / "out"
    m = prepare(slices["clue"], out, segmenter="rjieba", nsp=False, dynamic=True, max_seq_length=512,
                progress=False)
    assert m["masking"] == "dynamic" and not m["nsp"] and m["dupe_factor"] == 1
    assert not list(out.glob("shard-*/mlm_*.npy")) and not list(out.glob("shard-*/nsp_labels.npy"))
    check_folder(out, [slices["clue"]])
    ds = PreparedDataset(out)
    body = sum(int((~np.isin(ds[i]["input_ids"], [CLS_ID, SEP_ID])).sum()) for i in range(len(ds)))
    reference = len(_source_ids([slices["clue"]])) // 2 - m["counts"]["documents"]
    assert body == m["counts"]["input_tokens"] == reference  # every token of the input, exactly once


def test_default_jieba_char_masking_and_ngram(slices, tmp_path):
    m = prepare(slices["wiki"], tmp_path / "char", masking="char", dupe_factor=1, progress=False)
    assert m["config"]["segmenter"] == "jieba" and m["config"]["masking_policy"] == "char"
    check_folder(tmp_path / "char", [slices["wiki"]], sample=100, wwm=False)
    prepare(slices["wiki"], tmp_path / "ngram", segmenter="rjieba", masking="ngram", dupe_factor=1,
            max_seq_length=64, progress=False)
    check_folder(tmp_path / "ngram", [slices["wiki"]], sample=100)


def _checksums(folder: Path) -> dict[str, dict]:
    return {s["name"]: s["sha256"] for s in read_manifest(folder)["shards"]}


def test_output_does_not_depend_on_workers(slices, tmp_path):
    kw = dict(segmenter="rjieba", dupe_factor=2, shard_chars=20_000, progress=False)
    one = prepare(slices["laws"], tmp_path / "w1", workers=1, **kw)
    two = prepare(slices["laws"], tmp_path / "w2", workers=2, **kw)
    assert len(one["shards"]) >= 3
    assert _checksums(tmp_path / "w1") == _checksums(tmp_path / "w2")
    assert one["counts"] == two["counts"]
    other = prepare(slices["laws"], tmp_path / "seed", workers=1, seed=99, **kw)
    assert _checksums(tmp_path / "seed") != _checksums(tmp_path / "w1")
    assert other["counts"]["input_tokens"] == one["counts"]["input_tokens"]


def test_split_across_machines_gives_the_same_shards(slices, tmp_path):
    kw = dict(segmenter="rjieba", dupe_factor=1, shard_chars=30_000, progress=False)
    whole = prepare(slices["laws"], tmp_path / "whole", **kw)
    part0 = prepare(slices["laws"], tmp_path / "split", num_shards=2, shard_index=0, **kw)
    assert not (tmp_path / "split" / "manifest.json").exists()  # the other part is still missing
    assert all(s["index"] % 2 == 0 for s in part0["shards"])
    merged = prepare(slices["laws"], tmp_path / "split", num_shards=2, shard_index=1, **kw)
    assert merged["complete"] and (tmp_path / "split" / "manifest.json").exists()
    assert _checksums(tmp_path / "split") == _checksums(tmp_path / "whole")
    assert merged["counts"]["instances"] == whole["counts"]["instances"]
    assert len(PreparedDataset(tmp_path / "split")) == len(PreparedDataset(tmp_path / "whole"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bertwwm", "prepare", *args]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_checksums(slices, tmp_path):
    opts = ["--segmenter", "rjieba", "--dupe-factor", "2", "--shard-chars", "1000", "--seed", "3", "--quiet"]
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(_cli(str(slices["laws"]), "--out", str(out), *opts), env=env,
                            start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("shard-*"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    done_before = len(list(out.glob("shard-*")))
    assert done_before >= 3
    assert not read_manifest(out, require_complete=False)["complete"]
    with pytest.raises(Exception, match="has not finished"):
        PreparedDataset(out)

    result = subprocess.run(_cli(str(slices["laws"]), "--out", str(out), *opts), env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fresh = prepare(slices["laws"], tmp_path / "fresh", segmenter="rjieba", dupe_factor=2, shard_chars=1000,
                    seed=3, workers=2, progress=False)
    assert len(fresh["shards"]) > done_before
    assert _checksums(out) == _checksums(tmp_path / "fresh")
    assert not list(out.glob(".shard-*"))  # no half-written leftovers


def test_rerun_skips_finished_shards_and_refuses_other_options(slices, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(slices["wiki"]), "--out", str(out), "--segmenter", "rjieba", "--dupe-factor", "1", "--quiet"]
    assert main(["prepare", *args]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.glob("shard-*/input_ids.npy")}
    assert main(["prepare", *args]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("shard-*/input_ids.npy")} == before  # nothing rebuilt
    capsys.readouterr()
    assert main(["prepare", *args, "--max-seq-length", "256"]) == 2
    err = capsys.readouterr().err
    assert "different options" in err and "max_seq_length" in err and "manifest.json" in err
    with pytest.raises(UserError, match="drop --dupe-factor"):
        prepare(slices["wiki"], tmp_path / "x", dynamic=True, dupe_factor=3)


@pytest.mark.parametrize("name, content, where", [
    ("bad.jsonl", '{"text": "好"}\n{"text": 好}\n', ":2: invalid JSON"),
    ("no_field.jsonl", '{"text": "好"}\n{"title": "坏"}\n', ':2: expected a JSON object with a "text" field'),
    ("wiki_00", '<doc id="1" url="u" title="甲">\n甲\n正文。\n', ":1: <doc> is not closed"),
    ("lines.txt", "第一句。\n第二句。\n", ":2: no blank line separates documents"),
])
def test_malformed_input_exits_2_with_file_and_line(tmp_path, capsys, name, content, where):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert main(["prepare", str(path), "--out", str(tmp_path / "out"), "--segmenter", "rjieba", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}{where}" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_prints_a_summary(slices, tmp_path, capsys):
    assert main(["prepare", str(slices["wiki"]), "--out", str(tmp_path / "o"), "--segmenter", "rjieba",
                 "--dupe-factor", "2", "--max-seq-length", "64", "--max-predictions", "5"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "100%" in captured.err and "tokens/s" in captured.err  # the progress bar
    m = json.loads((tmp_path / "o" / "manifest.json").read_text(encoding="utf-8"))
    assert f"prepared {m['counts']['instances']:,} instances" in out
    assert m["config"]["max_predictions"] == 5 and m["max_seq_length"] == 64
    ds = PreparedDataset(tmp_path / "o")
    assert max(int((ds[i]["labels"] != -100).sum()) for i in range(0, len(ds), 7)) <= 5


def test_user_dictionary_and_doc_per_line_reach_the_word_starts(tmp_path):
    src = tmp_path / "lines.txt"
    src.write_text("我们使用语言模型来预测下一个词。\n他们也用语言模型来预测句子。\n\n第三篇文档在这里。\n", encoding="utf-8")
    udict = tmp_path / "dict.txt"
    udict.write_text("模型来预 100000\n", encoding="utf-8")
    target = chinese_tokenizer().convert_tokens_to_ids(list("模型来预"))

    def starts_of_target(folder: Path) -> list[list[int]]:
        ds = PreparedDataset(folder)
        found = []
        for i in range(len(ds)):
            ids, starts = ds[i]["input_ids"].tolist(), ds[i]["word_starts"].astype(int).tolist()
            found += [starts[k:k + 4] for k in range(len(ids) - 3) if ids[k:k + 4] == target]
        return found

    m = prepare(src, tmp_path / "plain", segmenter="rjieba", dynamic=True, nsp=False, doc_per_line=True,
                progress=False)
    assert m["counts"]["documents"] == 3 and m["config"]["doc_per_line"]
    assert starts_of_target(tmp_path / "plain") == [[1, 0, 1, 1]] * 2  # 模型 / 来 / 预测
    m = prepare(src, tmp_path / "dict", segmenter="rjieba", user_dict=udict, dynamic=True, nsp=False,
                progress=False)
    assert m["counts"]["documents"] == 2 and m["config"]["user_dict_sha256"]
    assert starts_of_target(tmp_path / "dict") == [[1, 0, 0, 0]] * 2  # the user's word 模型来预

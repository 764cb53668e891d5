"""One shard of `bertwwm prepare`: its documents -> sentences -> aligned tokens -> instances -> masks -> arrays.

A shard is built from its documents, its index and the job's config alone (deterministic in (seed, index)),
in whichever process builds it. Each process keeps its aligner, masking config and vocabulary in `_STATE`,
built once per config; worker processes inherit it on fork. `bertwwm.data.prepare` runs the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
from typing import Any, Sequence

import numpy as np

from bertwwm.data.instances import Pieces, TokenizedDocs, assemble, bert_pairs, packed_sequences, split_sentences
from bertwwm.data.prepare_config import masking_config, vocab_path
from bertwwm.data.storage import write_shard

ALIGN_BATCH = 2048  # sentences per align_many call

_STATE: dict[str, Any] = {}  # per process: the aligner, masking config, vocab (built once, inherited on fork)


def init_state(config: dict) -> None:
    """Build this process's aligner, masking config and vocabulary for `config` (once; a no-op after)."""
    key = json.dumps(config, sort_keys=True)
    if _STATE.get("key") == key:
        return
    from bertwwm.text.align import WordAligner
    from bertwwm.text.tokens import VocabInfo

    _STATE.clear()
    aligner = WordAligner(config["segmenter"], user_dict=config["user_dict"], vocab=vocab_path(config))
    # Builds the tokenizer's lookup tables now, so forked workers share them. No joined ASCII ("warm-up"):
    # with rjieba that would also load Python jieba (~1 s), which only rjieba's rare re-cuts need.
    aligner.align("预热 warmup")
    vocab = VocabInfo.from_vocab(vocab_path(config))
    similar = None
    if config.get("similar_words"):
        from bertwwm.data.similar_words import SimilarWords

        similar = SimilarWords.load(config["similar_words"]["path"], vocab.size)
    _STATE.update(key=key, config=config, aligner=aligner, masking=masking_config(config), vocab=vocab,
                  similar=similar)


def worker_init(config: dict, parent_pid: int | None = None) -> None:
    """The initializer of `prepare`'s worker processes."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core per worker; no oversubscription
    _die_with_parent(parent_pid)
    init_state(config)


def _die_with_parent(parent_pid: int | None) -> None:
    """Workers must not outlive a killed `prepare` (kill -9 gives the pool no chance to stop them)."""
    if parent_pid is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def tokenize_documents(texts: Sequence[str], aligner, max_sentence_tokens: int) -> tuple[TokenizedDocs, int]:
    """Documents -> sentences -> aligned tokens; returns the flat TokenizedDocs and the alignment fallbacks."""
    sentences: list[str] = []
    per_doc: list[int] = []
    for text in texts:
        s = split_sentences(text)
        sentences.extend(s)
        per_doc.append(len(s))
    aligned = []
    for b in range(0, len(sentences), ALIGN_BATCH):
        aligned.extend(aligner.align_many(sentences[b:b + ALIGN_BATCH]))
    fallbacks = sum(a.fallbacks for a in aligned)
    docs, k = [], 0
    for n in per_doc:
        docs.append([(a.ids, a.word_starts) for a in aligned[k:k + n]])
        k += n
    return TokenizedDocs.from_sentences(docs, max_sentence_tokens), fallbacks


ASSEMBLE_CHUNK = 32768  # instances assembled and masked at a time (bounds the temporary index arrays)


def build_shard(index: int, texts: Sequence[str], config: dict) -> dict[str, Any]:
    """The arrays of shard `index` (see bertwwm.data.storage) from its documents; deterministic in (seed, index)."""
    init_state(config)
    seq = config["max_seq_length"]
    nsp = config["nsp"]
    docs, fallbacks = tokenize_documents(texts, _STATE["aligner"], seq - 3 if nsp else seq - 2)
    if nsp:  # Google re-draws the pairs for every copy: copies differ in segmentation as well as in masks
        pieces = bert_pairs(docs, seq, random.Random(f"{config['seed']}/{index}/0"), config["short_seq_prob"])
        for dupe in range(1, config["dupe_factor"]):
            pieces += bert_pairs(docs, seq, random.Random(f"{config['seed']}/{index}/{dupe}"),
                                 config["short_seq_prob"])
    else:  # packing has no randomness: the copies differ only in their masks
        once = packed_sequences(docs, seq)
        pieces = Pieces(once.ranges * config["dupe_factor"], once.segment_b_start * config["dupe_factor"], None)
    # Shuffled within the shard (Google shuffles its whole output) so that copies are not next to each other.
    order = np.random.default_rng([config["seed"], index, 2]).permutation(len(pieces))
    mask_rng = np.random.default_rng([config["seed"], index, 1])
    static = config["masking"] == "static"
    parts: dict[str, list[np.ndarray]] = {}
    token_base = mlm_base = 0
    for c in range(0, max(len(order), 1), ASSEMBLE_CHUNK):
        inst = assemble(docs, pieces, order[c:c + ASSEMBLE_CHUNK])
        chunk = {"input_ids": inst.ids, "word_starts": inst.word_starts,
                 "offsets": inst.offsets[:-1] + token_base, "segment_b_start": inst.segment_b_start}
        if nsp:
            chunk["nsp_labels"] = inst.nsp_labels
        if static:
            masks = _static_masks(inst.ids, inst.word_starts, inst.offsets, mask_rng)
            chunk.update(mlm_positions=masks["mlm_positions"], mlm_input_ids=masks["mlm_input_ids"],
                         mlm_offsets=masks["mlm_offsets"][:-1] + mlm_base)
            mlm_base += int(masks["mlm_offsets"][-1])
        token_base += int(inst.offsets[-1])
        for key, value in chunk.items():
            parts.setdefault(key, []).append(value)
    arrays = {key: np.concatenate(values) for key, values in parts.items()}
    arrays["offsets"] = np.append(arrays["offsets"], token_base)
    if static:
        arrays["mlm_offsets"] = np.append(arrays["mlm_offsets"], mlm_base)
    return {"arrays": arrays, "documents": docs.num_documents, "input_tokens": docs.num_tokens,
            "alignment_fallbacks": int(fallbacks)}


MASK_CHUNK = 512  # instances per mask_batch call: small batches stay in cache (5M tokens/s vs 2M at 32k)


def _static_masks(ids: np.ndarray, starts: np.ndarray, offsets: np.ndarray, rng: np.random.Generator
                  ) -> dict[str, np.ndarray]:
    """mlm_offsets / mlm_positions / mlm_input_ids of a batch of instances (vectorised mask_batch calls)."""
    from bertwwm.data.masking import mask_batch

    n = len(offsets) - 1
    positions, placed = [], []
    per_instance = np.zeros(n, dtype=np.int64)
    for a in range(0, n, MASK_CHUNK):
        b = min(n, a + MASK_CHUNK)
        s, e = int(offsets[a]), int(offsets[b])
        masked, chosen = mask_batch(ids[s:e], starts[s:e], np.diff(offsets[a:b + 1]), _STATE["masking"], rng,
                                    _STATE["vocab"], _STATE.get("similar"))
        flat = np.flatnonzero(chosen)
        row = np.searchsorted(offsets[a:b + 1], flat + s, side="right") - 1
        positions.append((flat + s - offsets[a:b][row]).astype(np.uint16))
        placed.append(masked[flat].astype(np.uint16))
        per_instance[a:b] = np.bincount(row, minlength=b - a)
    mlm_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_instance, out=mlm_offsets[1:])
    empty = np.zeros(0, np.uint16)
    return {"mlm_offsets": mlm_offsets,
            "mlm_positions": np.concatenate(positions) if positions else empty,
            "mlm_input_ids": np.concatenate(placed) if placed else empty}


def build_and_write(out: str, index: int, texts: list[str], config: dict, input_chars: int) -> dict:
    """Build shard `index` and write it into `out`; returns its manifest entry (what a worker process runs)."""
    built = build_shard(index, texts, config)
    return write_shard(out, index, built["arrays"], {
        "index": index, "documents": built["documents"], "input_chars": input_chars,
        "input_tokens": built["input_tokens"], "alignment_fallbacks": built["alignment_fallbacks"]})

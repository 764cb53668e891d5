"""Similar words for the `macbert` masking policy, built from the corpus itself (no network, no model).

MacBERT ("MLM as correction", Cui et al. 2020) replaces a chosen word by a similar word instead of [MASK].
Its authors used word2vec neighbours; here a word's neighbours are the words of the same length in tokens
whose co-occurrence vectors are closest by cosine: PPMI of a small window (context counts smoothed with
the 0.75 power, Levy et al. 2015), reduced with a truncated SVD in numpy. A word is a segmenter word as the
aligner makes it (a tuple of token ids, exactly what `bertwwm.data.masking` sees as a word group), so lookups at
masking time need no tokenizing.

Table file (JSON): {"format": "bertwwm-similar-words", "version": 1, "vocab_size", "settings",
"words": [{"word": "模型", "ids": [3563, 1798], "similar": [index, ...]}, ...]}, `similar` indexing "words",
nearest first. Building is deterministic: the same corpus, settings and vocabulary give the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bertwwm.core.errors import UserError

FORMAT = "bertwwm-similar-words"
VERSION = 1
DEFAULT_MAX_CHARS = 20_000_000  # prepare builds its table from at most this much of the input
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: word hashes are polynomials in it


@dataclass(frozen=True)
class TableSettings:
    min_count: int = 5  # words seen fewer times get no neighbours (their vectors are noise)
    max_words: int = 6000  # most frequent words that get neighbours
    max_contexts: int = 1000  # most frequent words used as context dimensions
    window: int = 2  # words either side
    dims: int = 50  # SVD dimensions
    neighbours: int = 5  # similar words kept per word

    def __post_init__(self):
        for name in ("min_count", "max_words", "max_contexts", "window", "dims", "neighbours"):
            if getattr(self, name) < 1:
                raise UserError(f"similar-words setting {name} must be at least 1, got {getattr(self, name)}")


def _word_hashes(ids: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit hash per word (ids[first[i]:first[i]+lengths[i]]), vectorised; lengths must be >= 1."""
    if len(first) == 0:
        return np.zeros(0, dtype=np.uint64)
    pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = np.repeat(first, lengths) + pos
    powers = np.ones(int(lengths.max()), dtype=np.uint64)
    with np.errstate(over="ignore"):  # products wrap modulo 2**64, as intended
        for k in range(1, len(powers)):
            powers[k] = powers[k - 1] * _HASH_MULT
        terms = (ids[flat].astype(np.uint64) + np.uint64(1)) * powers[pos]
        starts = np.cumsum(lengths) - lengths
        return np.add.reduceat(terms, starts) ^ (lengths.astype(np.uint64) << np.uint64(56))


class SimilarWords:
    """A loaded table, ready for vectorised lookups by `bertwwm.data.masking.mask_batch`."""

    def __init__(self, words: Sequence[Sequence[int]], similar: Sequence[Sequence[int]],
                 names: Sequence[str] | None = None, vocab_size: int | None = None, settings: dict | None = None):
        self.names = list(names) if names is not None else [" ".join(map(str, w)) for w in words]
        self.vocab_size = vocab_size
        self.settings = settings or {}
        self.word_ids = [tuple(int(i) for i in w) for w in words]
        self.similar = [list(map(int, s)) for s in similar]
        lengths = np.array([len(w) for w in self.word_ids], dtype=np.int64)
        self._flat = np.array([i for w in self.word_ids for i in w], dtype=np.int64)
        self._first = np.cumsum(lengths) - lengths
        self._len = lengths
        hashes = _word_hashes(self._flat, self._first, lengths)
        self._order = np.argsort(hashes, kind="stable")
        self._sorted_hashes = hashes[self._order]
        self._n_similar = np.array([len(s) for s in self.similar], dtype=np.int64)
        self._similar_first = np.cumsum(self._n_similar) - self._n_similar
        self._similar_flat = np.array([j for s in self.similar for j in s], dtype=np.int64)
        self._entry_of: dict[tuple[int, ...], int] = {}  # word -> its first entry, for `neighbours`
        for e, w in enumerate(self.word_ids):
            self._entry_of.setdefault(w, e)

    def __len__(self) -> int:
        return len(self.word_ids)

    def neighbours(self, word: Sequence[int]) -> list[tuple[int, ...]]:
        """The similar words of `word` (token ids), nearest first; [] when it has none."""
        e = self._entry_of.get(tuple(int(i) for i in word))
        return [] if e is None else [self.word_ids[j] for j in self.similar[e]]

    def lookup(self, ids: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Entry index of each word ids[first[i]:first[i]+lengths[i]], -1 where the table has no neighbours
        for it. Hash matches are verified token by token, so a collision can never give a wrong word."""
        first = np.asarray(first, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        entry = np.full(len(first), -1, dtype=np.int64)
        if len(first) == 0 or len(self) == 0:
            return entry
        hashes = _word_hashes(np.asarray(ids), first, lengths)
        at = np.minimum(np.searchsorted(self._sorted_hashes, hashes), len(self) - 1)
        cand = self._order[at]
        ok = (self._sorted_hashes[at] == hashes) & (self._len[cand] == lengths) & (self._n_similar[cand] > 0)
        idx = np.flatnonzero(ok)
        if len(idx):
            n = lengths[idx]
            pos = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
            same = ids[np.repeat(first[idx], n) + pos] == self._flat[np.repeat(self._first[cand[idx]], n) + pos]
            all_same = np.logical_and.reduceat(same, np.cumsum(n) - n)
            entry[idx[all_same]] = cand[idx[all_same]]
        return entry

    def draw(self, entries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One similar word per entry (all >= 0), uniformly among its neighbours: their entry indices."""
        pick = (rng.random(len(entries)) * self._n_similar[entries]).astype(np.int64)
        return self._similar_flat[self._similar_first[entries] + pick]

    def tokens_of(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat token ids, lengths) of the given entries, concatenated in order."""
        n = self._len[entries]
        pos = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        return self._flat[np.repeat(self._first[entries], n) + pos], n

    # -- files ----------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        lines = [json.dumps({"word": name, "ids": list(w), "similar": s}, ensure_ascii=False)
                 for name, w, s in zip(self.names, self.word_ids, self.similar)]
        head = json.dumps({"format": FORMAT, "version": VERSION, "vocab_size": self.vocab_size,
                           "settings": self.settings}, ensure_ascii=False)
        return head[:-1] + ', "words": [\n' + ",\n".join(lines) + "\n]}\n"

    def save(self, path: str | Path) -> None:
        from bertwwm.core.fileio import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path, vocab_size: int | None = None) -> "SimilarWords":
        """Read a table file; `vocab_size` (when given) must match the one it was built with."""
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError("similar-words table not found", path) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read the similar-words table: {e}", path) from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise UserError(f"not a similar-words table (no \"format\": \"{FORMAT}\")", path)
        if obj.get("version") != VERSION:
            raise UserError(f"similar-words table version {obj.get('version')!r}; this bertwwm reads {VERSION}",
                            path)
        if vocab_size is not None and obj.get("vocab_size") not in (None, vocab_size):
            raise UserError(f"the similar-words table was built for a vocabulary of {obj['vocab_size']} entries, "
                            f"this one has {vocab_size}; rebuild it", path)
        try:
            words = obj["words"]
            ids = [[int(i) for i in w["ids"]] for w in words]
            similar = [[int(j) for j in w["similar"]] for w in words]
            names = [str(w["word"]) for w in words]
        except (KeyError, TypeError, ValueError):
            raise UserError("malformed similar-words table: each word needs \"word\", \"ids\" and \"similar\"",
                            path) from None
        limit = obj.get("vocab_size") or vocab_size
        for e, (w, s) in enumerate(zip(ids, similar)):
            if not w or (limit and not all(0 <= i < limit for i in w)) \
                    or not all(0 <= j < len(ids) and len(ids[j]) == len(w) for j in s):
                raise UserError(f"malformed similar-words table: word {e} ({names[e]!r}) has bad ids or "
                                "neighbours (neighbours must be words of the table with as many tokens)", path)
        return cls(ids, similar, names, obj.get("vocab_size"), obj.get("settings"))


def build_table(sentences: Iterable[tuple[np.ndarray, np.ndarray]], vocab_path: str | None = None,
                settings: TableSettings = TableSettings()) -> SimilarWords:
    """Build a table from a segmented, tokenized corpus: (ids, word_starts) per sentence, as
    `bertwwm.text.align.WordAligner` gives them (AlignedText objects work too).

    Words: the aligner's word groups, special tokens ([UNK]) excluded. The `max_words` most frequent words
    seen at least `min_count` times get the `neighbours` nearest words with as many tokens."""
    from bertwwm.text.tokens import VocabInfo, load_vocab

    vocab = VocabInfo.from_vocab(vocab_path)
    special = np.zeros(vocab.size, dtype=bool)
    special[vocab.special_ids] = True
    index: dict[tuple[int, ...], int] = {}
    sequences: list[list[int]] = []  # per sentence, the index of each word
    for item in sentences:
        ids, starts = (item.ids, item.word_starts) if hasattr(item, "ids") else item
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            continue
        bounds = np.append(np.flatnonzero(np.asarray(starts, dtype=bool) | (np.arange(len(ids)) == 0)), len(ids))
        tokens = ids.tolist()
        seq = []
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            word = tuple(tokens[a:b])
            seq.append(index.setdefault(word, len(index)))
        sequences.append(seq)
    words = list(index)
    if not words:
        return SimilarWords([], [], [], vocab.size, _settings_dict(settings))
    flat = np.array([w for s in sequences for w in s], dtype=np.int64)
    sentence = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    counts = np.bincount(flat, minlength=len(words))
    has_special = np.array([bool(special[list(w)].any()) for w in words])
    # Frequency order, ties broken by first appearance: deterministic for a given corpus.
    by_freq = np.lexsort((np.arange(len(words)), -counts))
    targets = [w for w in by_freq if counts[w] >= settings.min_count and not has_special[w]][:settings.max_words]
    contexts = by_freq[:settings.max_contexts]
    if len(targets) < 2:
        return SimilarWords([], [], [], vocab.size, _settings_dict(settings))
    target_of = np.full(len(words), -1, dtype=np.int64)
    target_of[targets] = np.arange(len(targets))
    context_of = np.full(len(words), -1, dtype=np.int64)
    context_of[contexts] = np.arange(len(contexts))

    # Co-occurrence counts within `window` words, inside one sentence, both directions.
    n_t, n_c = len(targets), len(contexts)
    cooc = np.zeros(n_t * n_c, dtype=np.float64)
    for d in range(1, settings.window + 1):
        same = sentence[:-d] == sentence[d:]
        for left, right in ((flat[:-d], flat[d:]), (flat[d:], flat[:-d])):
            t, c = target_of[left[same]], context_of[right[same]]
            keep = (t >= 0) & (c >= 0)
            cooc += np.bincount(t[keep] * n_c + c[keep], minlength=n_t * n_c)
    cooc = cooc.reshape(n_t, n_c)

    # PPMI with context distribution smoothing (counts ** 0.75).
    total = cooc.sum()
    if total == 0:
        return SimilarWords([], [], [], vocab.size, _settings_dict(settings))
    row = cooc.sum(axis=1, keepdims=True)
    col = cooc.sum(axis=0) ** 0.75
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(cooc * col.sum() / (row * col[None, :]))
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)

    # Truncated SVD by a randomized range finder with a fixed seed (deterministic, and far cheaper than a
    # full decomposition); row vectors U * sqrt(S). Cosines do not depend on the signs of the vectors.
    rank = min(settings.dims, n_t, n_c)
    probe = np.random.default_rng(0).standard_normal((n_c, min(rank + 10, n_c)))
    basis = np.linalg.qr(ppmi @ probe)[0]
    for _ in range(2):  # power iterations sharpen the leading directions
        basis = np.linalg.qr(ppmi @ (ppmi.T @ basis))[0]
    u_small, values, _ = np.linalg.svd(basis.T @ ppmi, full_matrices=False)
    keep = values[:rank] > 1e-9 * max(float(values[0]), 1e-300)
    emb = (basis @ u_small[:, :rank][:, keep]) * np.sqrt(values[:rank][keep])[None, :]
    norms = np.linalg.norm(emb, axis=1)
    usable = norms > 1e-12
    emb = emb / np.where(usable, norms, 1.0)[:, None]

    lengths = np.array([len(words[w]) for w in targets])
    similar: list[list[int]] = [[] for _ in targets]
    k = settings.neighbours
    for n in np.unique(lengths).tolist():
        group = np.flatnonzero((lengths == n) & usable)
        if len(group) < 2:
            continue
        vecs = emb[group]
        for a in range(0, len(group), 1024):
            sims = vecs[a:a + 1024] @ vecs.T
            sims[np.arange(sims.shape[0]), np.arange(a, a + sims.shape[0])] = -np.inf  # not itself
            # Nearest first, ties by frequency rank (group is in frequency order; a stable sort keeps it).
            order = np.argsort(-np.round(sims, 9), axis=1, kind="stable")[:, :k]
            for r, cols in enumerate(order):
                similar[group[a + r]] = [int(group[c]) for c in cols if np.isfinite(sims[r, c])]

    # Keep only words with neighbours, and the words they point to; renumber.
    needed = sorted({t for t, s in enumerate(similar) if s} | {j for s in similar for j in s})
    new = {t: i for i, t in enumerate(needed)}
    token_of = {i: t for t, i in load_vocab(vocab_path).items()}
    ids_out = [words[targets[t]] for t in needed]
    names = ["".join(token_of[i][2:] if token_of[i].startswith("##") else token_of[i] for i in w) for w in ids_out]
    return SimilarWords(ids_out, [[new[j] for j in similar[t]] for t in needed], names, vocab.size,
                        _settings_dict(settings))


def _settings_dict(settings: TableSettings) -> dict:
    from dataclasses import asdict

    return asdict(settings)


def sample_corpus_path() -> Path:
    """The corpus sample shipped with bertwwm (Chinese laws and regulations, about 2M characters)."""
    from importlib import resources

    return Path(str(resources.files("bertwwm") / "resources" / "corpus" / "prc-laws-sample.txt.gz"))


def build_from_corpus(inputs: Sequence[str | Path], *, segmenter: str = "jieba", user_dict: str | None = None,
                      vocab_path: str | None = None, doc_per_line: bool = False,
                      max_chars: int = DEFAULT_MAX_CHARS, settings: TableSettings = TableSettings()
                      ) -> SimilarWords:
    """Read (at most `max_chars` of) a corpus, segment and tokenize it as `prepare` does, build a table."""
    from bertwwm.text.align import WordAligner
    from bertwwm.text.corpus import read_documents

    aligner = WordAligner(segmenter, user_dict=user_dict, vocab=vocab_path)
    lines: list[str] = []
    used = 0
    for doc in read_documents(inputs, doc_per_line=doc_per_line):
        for line in doc.text.split("\n"):
            if line.strip() and used < max_chars:
                lines.append(line[:max_chars - used])
                used += len(lines[-1])
        if used >= max_chars:
            break

    def aligned():
        for a in range(0, len(lines), 2048):
            yield from aligner.align_many(lines[a:a + 2048])

    return build_table(aligned(), vocab_path, settings)

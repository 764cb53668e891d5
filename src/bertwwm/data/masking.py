"""Masking policies over word groups: choose which tokens a masked language model must predict.

* `wwm` (default): whole words, as in the BERT-wwm report. Words are visited in random order; a word that
  would overflow the budget is skipped and the next one tried (Google's `continue`), until the budget is met.
* `char`: every token on its own, as the original Chinese BERT did (for ablations).
* `ngram`: whole-word n-grams, n <= max_ngram drawn with p(n) proportional to 1/n (ERNIE / MacBERT style,
  following ALBERT's create_pretraining_data: a drawn n-gram that overflows the budget is shortened).
* `macbert`: MacBERT's "MLM as correction": n-grams chosen as `ngram` chooses them, but the [MASK] branch
  replaces each chosen word by a similar word with as many tokens (`bertwwm.data.similar_words`), or by random
  tokens where the table has none; the 80/10/10 draw is made per word.

Budget per instance = min(max_predictions, max(1, round(mask_prob * length))), length counting [CLS]/[SEP].
Each chosen token becomes [MASK] 80%, a random token 10% (never a special, [unused] or ## entry) and stays
itself 10%, decided per token (Google, the report) or per word.

All of it runs vectorised over a batch of instances (`mask_batch`); `mask_instance` is the one-instance case,
so the static masks of `prepare` and the dynamic masks of the collator follow exactly the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.data.similar_words import SimilarWords
from bertwwm.text.tokens import VocabInfo

POLICIES = ("wwm", "char", "ngram", "macbert")
DECIDE_PER = ("token", "word")


@dataclass(frozen=True)
class MaskingConfig:
    policy: str = "wwm"  # wwm | char | ngram | macbert
    mask_prob: float = 0.15
    max_predictions: int = 20  # per sequence (Google: 20 at seq 128, 80 at 512)
    decide_per: str = "token"  # "token" (Google/report: 80/10/10 decided per token) or "word"
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    max_ngram: int = 3  # ngram and macbert policies; n drawn with p proportional to 1/n

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise UserError(f"unknown masking policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.decide_per not in DECIDE_PER:
            raise UserError(f"decide_per must be one of {', '.join(DECIDE_PER)}, got {self.decide_per!r}")
        if not 0.0 < self.mask_prob <= 1.0:
            raise UserError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        if self.max_predictions < 1:
            raise UserError(f"max_predictions must be at least 1, got {self.max_predictions}")
        if (self.mask_token_prob < 0 or self.random_token_prob < 0
                or self.mask_token_prob + self.random_token_prob > 1.0 + 1e-9):
            raise UserError("mask_token_prob and random_token_prob must be >= 0 and sum to at most 1, got "
                            f"{self.mask_token_prob} and {self.random_token_prob}")
        if self.max_ngram < 1:
            raise UserError(f"max_ngram must be at least 1, got {self.max_ngram}")


def budget(length: int, cfg: MaskingConfig) -> int:
    """How many tokens an instance of `length` tokens (with [CLS]/[SEP]) gets to predict.

    Python's round() and numpy's round both round half to even, as Google's script (Python 3) does."""
    return min(cfg.max_predictions, max(1, int(round(cfg.mask_prob * length))))


def _budgets(lengths: np.ndarray, cfg: MaskingConfig) -> np.ndarray:
    return np.minimum(cfg.max_predictions, np.maximum(1, np.round(cfg.mask_prob * lengths).astype(np.int64)))


_SPECIAL_TABLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _special_table(vocab: VocabInfo) -> np.ndarray:
    key = id(vocab.special_ids)
    hit = _SPECIAL_TABLES.get(key)
    if hit is None or hit[0] is not vocab.special_ids:
        table = np.zeros(vocab.size, dtype=bool)
        table[vocab.special_ids] = True
        hit = _SPECIAL_TABLES[key] = (vocab.special_ids, table)
    return hit[1]


def _visiting_order(word_row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Word indices sorted by row, in random order within each row: one integer argsort on
    (row << 32 | random 32 bits), about 10x faster than np.lexsort on (random, row)."""
    keys = (word_row.astype(np.int64) << 32) | rng.integers(0, 1 << 32, size=len(word_row), dtype=np.int64)
    return np.argsort(keys)


def _select_words_greedy(word_len: np.ndarray, word_row: np.ndarray, budgets: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray:
    """Google's loop for every row at once: visit a row's words in random order, take a word when it fits in
    what is left of the budget, skip it otherwise, stop when the budget is met.

    Vectorised by noting that the remaining budget only shrinks: in each round every row takes the longest
    prefix (in visiting order) of its still-fitting words that fits, and the first word that did not fit can
    never fit again. Each round lowers the longest still-fitting word length, so there are at most as many
    rounds as distinct word lengths. Returns a bool per word: chosen.
    """
    n_words = len(word_len)
    chosen = np.zeros(n_words, dtype=bool)
    if n_words == 0:
        return chosen
    n_rows = len(budgets)
    order = _visiting_order(word_row, rng)
    rows = word_row[order]
    row_first = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(n_words) - row_first[rows]
    width = int(rank.max()) + 1
    lens = np.zeros((n_rows, width), dtype=np.int64)
    present = np.zeros((n_rows, width), dtype=bool)
    lens[rows, rank] = word_len[order]
    present[rows, rank] = True
    taken = np.zeros((n_rows, width), dtype=bool)
    left = budgets.astype(np.int64).copy()
    while True:
        fits = present & ~taken & (lens <= left[:, None])
        if not fits.any():
            break
        running = np.cumsum(np.where(fits, lens, 0), axis=1)
        take = fits & (running <= left[:, None])
        taken |= take
        left -= np.where(take, lens, 0).sum(axis=1)
    chosen[order] = taken[rows, rank]
    return chosen


def _select_ngrams(word_first: np.ndarray, word_len: np.ndarray, word_row: np.ndarray, budgets: np.ndarray,
                   cfg: MaskingConfig, rng: np.random.Generator) -> np.ndarray:
    """Whole-word n-grams as ALBERT's create_pretraining_data draws them (visit start words in random order,
    draw n with p(n) proportional to 1/n, shorten an n-gram that overflows the budget, skip one that overlaps a
    chosen word). The overlap rule makes each row sequential: a Python loop per row over its visited words,
    everything else vectorised."""
    n_words = len(word_len)
    chosen = np.zeros(n_words, dtype=bool)
    if n_words == 0:
        return chosen
    # Longest n-gram starting at each word: n-grams only join words that touch, in one row (never across a
    # [SEP] or a non-candidate word).
    touch = np.zeros(n_words, dtype=bool)
    touch[:-1] = (word_first[:-1] + word_len[:-1] == word_first[1:]) & (word_row[:-1] == word_row[1:])
    longest = np.ones(n_words, dtype=np.int64)
    reach = np.ones(n_words, dtype=bool)
    for k in range(1, cfg.max_ngram):
        reach = reach & np.concatenate((touch[k - 1:], np.zeros(k - 1, dtype=bool)))[:n_words]
        longest += reach
    weights = 1.0 / np.arange(1, cfg.max_ngram + 1)
    cdfs = [None] + [(np.cumsum(weights[:k]) / weights[:k].sum()).tolist() for k in range(1, cfg.max_ngram + 1)]

    row_bounds = np.searchsorted(word_row, np.arange(len(budgets) + 1)).tolist()
    lens_all, longest_all = word_len.tolist(), longest.tolist()
    for r, limit in enumerate(budgets.tolist()):
        a, b = row_bounds[r], row_bounds[r + 1]
        if a == b:
            continue
        lens, longest_here = lens_all[a:b], longest_all[a:b]
        taken = [False] * (b - a)
        used = 0
        draws = rng.random(b - a).tolist()
        for i, u in zip(rng.permutation(b - a).tolist(), draws):
            if used >= limit:
                break
            if taken[i]:
                continue
            cdf = cdfs[longest_here[i]]
            n = 1
            while u >= cdf[n - 1] and n < len(cdf):
                n += 1
            size = sum(lens[i:i + n])
            while n > 1 and used + size > limit:
                n -= 1
                size -= lens[i + n]
            if used + size > limit or any(taken[i:i + n]):
                continue
            taken[i:i + n] = [True] * n
            used += size
        chosen[a:b] = taken
    return chosen


def mask_batch(ids: np.ndarray, word_starts: np.ndarray, lengths: np.ndarray, cfg: MaskingConfig,
               rng: np.random.Generator, vocab: VocabInfo | None = None, similar: SimilarWords | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Mask many instances at once.

    ids, word_starts: the instances concatenated (each including its [CLS]/[SEP]); lengths: tokens per
    instance; similar: the similar-words table (`macbert` policy only, required there). Returns (masked ids,
    chosen) over the same flat layout: chosen marks the positions to predict, whose labels are `ids[chosen]`.
    """
    if cfg.policy == "macbert" and similar is None:
        raise UserError("the macbert masking policy needs a similar-words table (--similar-words FILE)")
    vocab = vocab if vocab is not None else VocabInfo.from_vocab()
    ids = np.asarray(ids)
    word_starts = np.asarray(word_starts, dtype=bool)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(ids)
    if len(word_starts) != n or int(lengths.sum()) != n:
        raise ValueError(f"{n} ids, {len(word_starts)} word starts and lengths summing to {int(lengths.sum())}")
    if n and (int(ids.min()) < 0 or int(ids.max()) >= vocab.size):
        raise ValueError(f"token ids must lie in [0, {vocab.size})")
    special = _special_table(vocab)[ids]
    row = np.repeat(np.arange(len(lengths)), lengths)
    row_starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[lengths > 0]

    # Word groups: special tokens are words on their own; the char policy makes every token a word.
    starts = np.ones(n, dtype=bool) if cfg.policy == "char" else word_starts.copy()
    starts |= special
    if n > 1:
        starts[1:] |= special[:-1]
    starts[row_starts] = True
    word_first = np.flatnonzero(starts)
    word_len = np.diff(np.append(word_first, n))
    candidate = ~special[word_first]
    cand_first, cand_len = word_first[candidate], word_len[candidate]
    cand_row = row[cand_first]
    budgets = _budgets(lengths, cfg)

    if cfg.policy in ("ngram", "macbert"):
        chosen_words = _select_ngrams(cand_first, cand_len, cand_row, budgets, cfg, rng)
    else:
        chosen_words = _select_words_greedy(cand_len, cand_row, budgets, rng)

    # Expand chosen words to their tokens.
    word_of_token = np.cumsum(starts) - 1
    word_chosen = np.zeros(len(word_first), dtype=bool)
    word_chosen[np.flatnonzero(candidate)[chosen_words]] = True
    chosen = word_chosen[word_of_token]

    if cfg.policy == "macbert":
        return _replace_macbert(ids, word_first[word_chosen], word_len[word_chosen], cfg, rng, vocab,
                                similar), chosen

    # 80/10/10, one draw per chosen token (or per chosen word, shared by its tokens).
    positions = np.flatnonzero(chosen)
    if cfg.decide_per == "word":
        chosen_word_ids, inverse = np.unique(word_of_token[positions], return_inverse=True)
        u = rng.random(len(chosen_word_ids))[inverse]
    else:
        u = rng.random(len(positions))
    masked = ids.copy()
    to_mask = u < cfg.mask_token_prob
    to_random = (u >= cfg.mask_token_prob) & (u < cfg.mask_token_prob + cfg.random_token_prob)
    masked[positions[to_mask]] = vocab.mask_id
    random_pos = positions[to_random]
    masked[random_pos] = vocab.random_ids[rng.integers(0, len(vocab.random_ids), size=len(random_pos))]
    return masked, chosen


def _replace_macbert(ids: np.ndarray, first: np.ndarray, length: np.ndarray, cfg: MaskingConfig,
                     rng: np.random.Generator, vocab: VocabInfo, similar: SimilarWords) -> np.ndarray:
    """MacBERT's replacements, one 80/10/10 draw per chosen word (an n-gram's words are replaced one by one,
    as in MacBERT): a similar word of the same length in tokens (random tokens where the table has none), a
    random token for each of its tokens, or the word itself."""
    u = rng.random(len(first))
    to_similar = u < cfg.mask_token_prob
    to_random = (u >= cfg.mask_token_prob) & (u < cfg.mask_token_prob + cfg.random_token_prob)
    masked = ids.copy()
    entries = similar.lookup(ids, first[to_similar], length[to_similar])
    found = entries >= 0
    replacements, n = similar.tokens_of(similar.draw(entries[found], rng))
    if not np.array_equal(n, length[to_similar][found]):
        raise ValueError("similar-words table gave a neighbour of another length")
    masked[_spans(first[to_similar][found], n)] = replacements
    random_words = to_random.copy()
    random_words[np.flatnonzero(to_similar)[~found]] = True  # no similar word: random tokens, same length
    random_pos = _spans(first[random_words], length[random_words])
    masked[random_pos] = vocab.random_ids[rng.integers(0, len(vocab.random_ids), size=len(random_pos))]
    return masked


def _spans(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Every position of the spans [first, first + length), concatenated."""
    return np.repeat(first, length) + np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)


def mask_instance(ids: np.ndarray, word_starts: np.ndarray, cfg: MaskingConfig,
                  rng: np.random.Generator, vocab: VocabInfo | None = None, similar: SimilarWords | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids: a whole instance INCLUDING [CLS]/[SEP] (special tokens have word_starts True and are never
    masked). Returns (masked_input_ids, positions (sorted, int), labels (= original ids at positions))."""
    ids = np.asarray(ids)
    masked, chosen = mask_batch(ids, word_starts, np.array([len(ids)]), cfg, rng, vocab, similar)
    positions = np.flatnonzero(chosen)
    return masked, positions, ids[positions]

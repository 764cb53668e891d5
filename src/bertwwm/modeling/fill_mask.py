"""`bertwwm fill-mask MODEL TEXT`: fill runs of [MASK] as whole words.

transformers' fill-mask pipeline predicts every [MASK] independently in one pass, so "[MASK][MASK]" comes
back as two unrelated characters. A whole-word-masking model is trained to recover whole words, so here
the masks are filled one at a time, each conditioned on the ones already filled:

- iterative (beam 1): fill the most confident position first, re-run the model, repeat. The top-k
  alternatives branch at that first, most confident choice and are each completed the same way.
- beam (beam N): keep the N best partial fillings; each grows by one (position, token) choice per round.

A candidate's score is the sum of the log-probabilities of its choices at the time they were made.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Callable

import torch

from bertwwm.core.errors import UserError

MASK_TEXT = "[MASK]"
_MASK_RUN = re.compile(r"\[MASK\](?:\s*\[MASK\])*")


@dataclass
class Filling:
    text: str            # the input text with every [MASK] run replaced by its word
    words: list[str]     # the word put in each run, left to right
    score: float         # sum of log-probabilities of the chosen tokens


def load_fill_mask_model(ref: str):
    """(model, tokenizer) for a local folder, zoo name, hub id or TF-1 checkpoint."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from bertwwm.modeling import zoo
    from bertwwm.text.tokens import chinese_tokenizer, model_vocab

    path = zoo.resolve_model(ref)  # local folder, zoo, hub cache or hub; offline fails here, in seconds
    model = AutoModelForMaskedLM.from_pretrained(path, config=zoo.load_bert_config(path)).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        tokenizer = None
    if tokenizer is None or len(tokenizer) != model.config.vocab_size:
        # folders without (or with a broken) tokenizer: the standard vocab, or the folder's extended one
        tokenizer = chinese_tokenizer(model_vocab(path))
    return model, tokenizer


def decode(score_fn: Callable[[torch.Tensor], torch.Tensor], input_ids: torch.Tensor, positions: list[int],
           *, top_k: int = 5, beam: int = 1, banned: torch.Tensor | None = None) -> list[tuple[list[int], float]]:
    """Fill `positions` of the 1-D `input_ids` one at a time.

    score_fn maps a (batch, length) LongTensor to log-probabilities (batch, length, vocab).
    Returns up to top_k (token ids at `positions`, score), best first.
    """
    if not positions:
        return [([], 0.0)]
    n = len(positions)
    pos = torch.tensor(positions)

    def expand(hyps: list[tuple[dict[int, int], float]], width: int) -> list[tuple[dict[int, int], float]]:
        batch = input_ids.repeat(len(hyps), 1)
        for row, (filled, _) in enumerate(hyps):
            for p, t in filled.items():
                batch[row, p] = t
        logp = score_fn(batch)[:, pos, :].float()  # (hyps, n, vocab)
        if banned is not None:
            logp[..., banned] = float("-inf")
        found: dict[tuple, tuple[dict[int, int], float]] = {}
        for row, (filled, score) in enumerate(hyps):
            for j, p in enumerate(positions):
                if p in filled:
                    continue
                values, tokens = logp[row, j].topk(min(width, logp.shape[-1]))
                for v, t in zip(values.tolist(), tokens.tolist()):
                    if v == float("-inf"):
                        break  # banned tokens ([MASK], [CLS], [unused]...) are never candidates
                    new = {**filled, p: t}
                    key = tuple(sorted(new.items()))
                    if key not in found or found[key][1] < score + v:
                        found[key] = (new, score + v)
        return sorted(found.values(), key=lambda h: -h[1])

    if beam <= 1:
        # Iterative: branch top_k ways at the single most confident choice, then complete each greedily.
        first = expand([({}, 0.0)], top_k)
        best_first = max(first, key=lambda h: h[1])
        p0 = next(iter(best_first[0]))
        hyps = [h for h in first if next(iter(h[0])) == p0][:top_k]
        done = []
        for h in hyps:
            for _ in range(n - 1):
                h = expand([h], 1)[0]
            done.append(h)
    else:
        width = max(beam, top_k)
        hyps = [({}, 0.0)]
        for _ in range(n):
            hyps = expand(hyps, width)[:width]
        done = hyps
    done.sort(key=lambda h: -h[1])
    return [([h[0][p] for p in positions], h[1]) for h in done[:top_k]]


def _banned_ids(tokenizer) -> torch.Tensor:
    vocab = tokenizer.get_vocab()
    return torch.tensor(sorted(i for t, i in vocab.items() if t.startswith("[") and t.endswith("]")))


def _word(tokenizer, ids: list[int]) -> str:
    out = ""
    for t in tokenizer.convert_ids_to_tokens(ids):
        if t.startswith("##"):
            out += t[2:]
        elif out and out[-1].isascii() and out[-1].isalnum() and t[:1].isascii() and t[:1].isalnum():
            out += " " + t  # two Latin/digit word pieces that are separate words
        else:
            out += t
    return out


def fill_mask(model, text: str, *, tokenizer=None, top_k: int = 5, beam: int = 1) -> list[Filling]:
    """Fill every run of [MASK] in `text` jointly; `model` is a BertForMaskedLM (or a reference to load)."""
    if isinstance(model, str):
        model, loaded_tok = load_fill_mask_model(model)
        tokenizer = tokenizer or loaded_tok
    if tokenizer is None:
        from bertwwm.text.tokens import chinese_tokenizer

        tokenizer = chinese_tokenizer()
    if top_k < 1 or beam < 1:
        raise UserError(f"--top-k and --beam must be at least 1 (got {top_k}, {beam})")
    runs = list(_MASK_RUN.finditer(text))
    if not runs:
        raise UserError("the text has no [MASK] to fill")
    enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=model.config.max_position_embeddings)
    input_ids = enc["input_ids"][0]
    positions = (input_ids == tokenizer.mask_token_id).nonzero(as_tuple=True)[0].tolist()
    run_lengths = [m.group(0).count(MASK_TEXT) for m in runs]
    if len(positions) != sum(run_lengths):
        raise UserError(f"the text is too long: only {len(positions)} of {sum(run_lengths)} [MASK] fit in "
                        f"{model.config.max_position_embeddings} tokens")
    attention = enc["attention_mask"][0]
    token_types = enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))[0]

    @torch.no_grad()
    def score(batch: torch.Tensor) -> torch.Tensor:
        b = batch.shape[0]
        logits = model(input_ids=batch, attention_mask=attention.expand(b, -1),
                       token_type_ids=token_types.expand(b, -1)).logits
        return torch.log_softmax(logits.float(), dim=-1)

    model.eval()
    results = []
    for ids, s in decode(score, input_ids, positions, top_k=top_k, beam=beam, banned=_banned_ids(tokenizer)):
        words, k = [], 0
        for length in run_lengths:
            words.append(_word(tokenizer, ids[k:k + length]))
            k += length
        pieces, last = [], 0
        for m, w in zip(runs, words):
            pieces += [text[last:m.start()], w]
            last = m.end()
        results.append(Filling("".join(pieces) + text[last:], words, s))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model folder, zoo name, hub id or TF-1 checkpoint")
    parser.add_argument("text", metavar="TEXT", help="text with [MASK] runs, e.g. 北京是中国的[MASK][MASK]。")
    parser.add_argument("--top-k", type=int, default=5, help="candidates to show (5)")
    parser.add_argument("--beam", type=int, default=1, help="beam width; 1 = iterative most-confident-first (1)")


def run(args: argparse.Namespace) -> int:
    from bertwwm.modeling import zoo
    from bertwwm.modeling.head_check import check_mlm_head

    model, tokenizer = load_fill_mask_model(args.model)
    check_mlm_head(model, zoo.resolve_model(args.model), "fill-mask")
    fillings = fill_mask(model, args.text, tokenizer=tokenizer, top_k=args.top_k, beam=args.beam)
    for rank, f in enumerate(fillings, start=1):
        print(f"{rank}\t{' / '.join(f.words)}\t{f.score:.3f}\t{f.text}")
    return 0

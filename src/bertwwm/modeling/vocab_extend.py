"""`bertwwm vocab extend CORPUS --model M --out M2`: add the characters (and words) a domain corpus needs.

Google's 21,128-entry Chinese vocabulary turns rare characters into [UNK] (and, famously, the curly quotes
“ ” and the dash —). This counts, with the model's own tokenizer, the pieces that WordPiece could not match
(a pre-token becomes [UNK] as a whole; the characters it lacks are what is missing: `c` at the start of a
word, `##c` inside one), adds those seen at least `--min-count` times (and any listed in `--add FILE`), and
writes a standard model folder with the larger vocabulary:

* vocab.txt = the old entries, unchanged and in order, then the new ones: every old id keeps its meaning,
  so the model's outputs for old-vocabulary inputs are identical;
* the input embeddings, the tied MLM decoder and its bias are resized with transformers'
  `resize_token_embeddings`; a new row starts as the mean of the rows of the pieces the old vocabulary split
  it into (a word), or of its NFKC form (⼈ -> 人), else the mean of all old rows (a new character);
* config.json's vocab_size and the tokenizer files (tokenizer.json, tokenizer_config.json) follow.

`--words` also adds frequent non-Chinese words (Latin, numbers) that WordPiece cuts into several pieces.
Multi-character Chinese words cannot become tokens: BERT's Chinese tokenizer puts every Chinese character in
a token of its own before WordPiece runs, so such an entry would never be used (whole word masking is what
teaches the model words).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from bertwwm.core.errors import UserError

MAX_VOCAB = 65536  # prepared data stores token ids as uint16
REPORT = "vocab_extension.json"
BATCH_LINES = 4096


@dataclass
class Counts:
    tokens: int = 0
    unk: int = 0
    missing: collections.Counter = field(default_factory=collections.Counter)  # piece -> count
    split_words: collections.Counter = field(default_factory=collections.Counter)  # word -> count

    @property
    def unk_rate(self) -> float:
        return self.unk / max(self.tokens, 1)


def _lines(texts: Iterable[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.extend(line for line in text.split("\n") if line.strip())
        if len(batch) >= BATCH_LINES:
            yield batch
            batch = []
    if batch:
        yield batch


def count_corpus(texts: Iterable[str], tokenizer, *, words: bool = False) -> Counts:
    """Tokens, [UNK]s and the pieces the vocabulary lacks (and, with `words`, words split into pieces)."""
    from bertwwm.text.tokens import UNK_ID

    backend = tokenizer.backend_tokenizer
    normalize = backend.normalizer.normalize_str
    vocab = tokenizer.get_vocab()
    counts = Counts()
    for lines in _lines(texts):
        for line, enc in zip(lines, backend.encode_batch(lines, add_special_tokens=False)):
            ids = enc.ids
            counts.tokens += len(ids)
            if UNK_ID in ids:
                for i, (s, e) in zip(ids, enc.offsets):
                    if i == UNK_ID:
                        counts.unk += 1
                        for piece in _pieces(normalize(line[s:e])):
                            if piece not in vocab:
                                counts.missing[piece] += 1
            if words and len(ids) > 1:
                word_ids = enc.word_ids
                k = 0
                while k < len(ids):
                    j = k + 1
                    while j < len(ids) and word_ids[j] == word_ids[k]:
                        j += 1
                    if j - k > 1 and UNK_ID not in ids[k:j]:
                        counts.split_words[normalize(line[enc.offsets[k][0]:enc.offsets[j - 1][1]])] += 1
                    k = j
    return counts


def _pieces(word: str) -> list[str]:
    """The character pieces WordPiece needs to spell `word`: its first character, then ##-continuations."""
    word = word.strip()
    return [word[0]] + ["##" + c for c in word[1:]] if word else []


def read_token_file(path: str | Path, tokenizer) -> list[str]:
    """Tokens a user asks for, one per line, normalised as the tokenizer normalises text; each must be one
    pre-token (a `##piece` continues a word)."""
    backend = tokenizer.backend_tokenizer
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError("token file not found", path) from None
    except UnicodeDecodeError as e:
        raise UserError(f"token file is not UTF-8 ({e.reason})", path) from None
    out = []
    for number, raw in enumerate(lines, 1):
        token = raw.strip()
        if not token:
            continue
        continuation = token.startswith("##") and len(token) > 2
        body = backend.normalizer.normalize_str(token[2:] if continuation else token).strip()
        parts = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(body)]
        if parts != [body]:
            why = ("Chinese characters always stand alone in BERT's tokenizer, so add the characters instead"
                   if any(_is_cjk(c) for c in body) else "whitespace and punctuation always separate tokens")
            raise UserError(f"{token!r} can never be one token: the tokenizer cuts it into {' '.join(parts)!r} "
                            f"before WordPiece ({why})", path, number)
        out.append(("##" if continuation else "") + body)
    return out


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def choose_tokens(counts: Counts, vocab: dict[str, int], *, min_count: int, user: list[str] = (),
                  words: bool = False, max_new: int | None = None) -> list[tuple[str, int, str]]:
    """(token, corpus count, source) to add: the user's first (file order), then the corpus's by count."""
    chosen: dict[str, tuple[str, int, str]] = {}
    for token in user:
        if token not in vocab and token not in chosen:
            chosen[token] = (token, counts.missing.get(token, counts.split_words.get(token, 0)), "file")
    found = [(t, n, "char") for t, n in counts.missing.items() if n >= min_count]
    if words:
        found += [(t, n, "word") for t, n in counts.split_words.items() if n >= min_count and t not in vocab]
    found.sort(key=lambda x: (-x[1], x[0]))
    for token, n, source in found:
        if token not in chosen and (max_new is None or len(chosen) < max_new):
            chosen[token] = (token, n, source)
    return list(chosen.values())


def load_with_heads(ref: str):
    """(transformers model with its MLM head (and NSP head if the checkpoint has one), resolved folder)."""
    from transformers import BertForMaskedLM, BertForPreTraining

    from bertwwm.modeling import zoo
    from bertwwm.modeling.head_check import checkpoint_keys, quiet_transformers

    path = zoo.resolve_model(ref)
    config = zoo.load_bert_config(path)
    keys = checkpoint_keys(path) or []
    cls = BertForPreTraining if any("cls.seq_relationship" in k for k in keys) else BertForMaskedLM
    try:
        with quiet_transformers():
            return cls.from_pretrained(path, config=config), path
    except OSError as e:
        raise UserError(f"cannot load the model ({e})".replace("\n", " "), ref) from None


def init_new_rows(model, new_tokens: list[str], old_tokenizer, old_size: int) -> dict[str, int]:
    """Set the embedding (and untied decoder) rows and MLM bias of the new tokens; returns how many rows were
    initialised from pieces vs from the mean."""
    import torch

    from bertwwm.text.tokens import UNK_ID

    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    bias = model.cls.predictions.bias
    matrices = [emb] + ([out.weight] if out is not None and out.weight is not emb else [])
    how = {"pieces": 0, "mean": 0}
    with torch.no_grad():
        first = 106  # [PAD], [unused1-99], [UNK] [CLS] [SEP] [MASK] <S> <T>: not part of the mean
        means = [m[first:old_size].mean(0) for m in matrices]
        mean_bias = bias[first:old_size].mean()
        for k, token in enumerate(new_tokens):
            row = old_size + k
            text = token[2:] if token.startswith("##") else token
            ids = [i for i in old_tokenizer(text, add_special_tokens=False)["input_ids"] if i != UNK_ID]
            nfkc = unicodedata.normalize("NFKC", text)
            if not ids and nfkc != text:
                ids = [i for i in old_tokenizer(nfkc, add_special_tokens=False)["input_ids"] if i != UNK_ID]
            if ids:
                index = torch.tensor(ids)
                for m in matrices:
                    m[row] = m[index].mean(0)
                bias[row] = bias[index].mean()
                how["pieces"] += 1
            else:
                for m, mean in zip(matrices, means):
                    m[row] = mean
                bias[row] = mean_bias
                how["mean"] += 1
    return how


@dataclass
class ExtendReport:
    model: str
    out: str
    old_size: int
    new_size: int
    added: list[dict]
    tokens: int
    unk_before: int
    unk_after: int
    init: dict

    def summary(self) -> str:
        by = collections.Counter(a["source"] for a in self.added)
        parts = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in
                          (("character", by["char"]), ("word", by["word"]), ("token from the file", by["file"]))
                          if n)
        return (f"added {len(self.added)} tokens ({parts}): vocabulary {self.old_size:,} -> {self.new_size:,}\n"
                f"[UNK] in the corpus: {self.unk_before:,} of {self.tokens:,} tokens "
                f"({self.unk_before / max(self.tokens, 1):.4%}) before, {self.unk_after:,} "
                f"({self.unk_after / max(self.tokens, 1):.4%}) after")


def extend_vocab(corpus: list[str | Path], model: str, out: str | Path, *, min_count: int = 2,
                 add_file: str | Path | None = None, words: bool = False, max_new: int | None = None,
                 force: bool = False) -> ExtendReport:
    """Count `corpus`, extend `model`'s vocabulary and write the result to `out` (see the module doc)."""
    from transformers import AutoTokenizer

    from bertwwm.text.corpus import read_documents
    from bertwwm.core.fileio import atomic_path, atomic_write_json
    from bertwwm.modeling.model import save_model
    from bertwwm.text.tokens import chinese_tokenizer, load_vocab, model_vocab

    if min_count < 1:
        raise UserError(f"--min-count must be at least 1, got {min_count}")
    if max_new is not None and max_new < 1:
        raise UserError(f"--max-new must be at least 1, got {max_new}")
    out = Path(out)
    if out.exists() and not force:
        raise UserError("output folder exists; pass --force to replace it", out)
    hf, path = load_with_heads(str(model))
    old_vocab_path = model_vocab(path)
    old_vocab = load_vocab(old_vocab_path)
    if hf.config.vocab_size != len(old_vocab):
        raise UserError(f"the model has a {hf.config.vocab_size}-entry vocabulary but its vocab.txt "
                        f"{len(old_vocab)}; bertwwm extends the Chinese BERT vocabulary", model)
    old_tok = chinese_tokenizer(old_vocab_path)
    user = read_token_file(add_file, old_tok) if add_file is not None else []
    # Counting needs no document boundaries: reading lines as documents accepts any plain-text layout.
    texts = [d.text for d in read_documents(corpus, doc_per_line=True)]
    counts = count_corpus(texts, old_tok, words=words)
    chosen = choose_tokens(counts, old_vocab, min_count=min_count, user=user, words=words, max_new=max_new)
    where = corpus[0] if len(corpus) == 1 else None
    if not chosen:
        found = len(counts.missing) + (len(counts.split_words) if words else 0)
        raise UserError(f"nothing to add: the corpus has {counts.unk:,} [UNK] of {counts.tokens:,} tokens and "
                        f"{found} candidate tokens, none seen --min-count {min_count} times or more"
                        + (" (and every token of --add is in the vocabulary already)" if add_file else ""), where)
    new_tokens = [t for t, _, _ in chosen]
    new_size = len(old_vocab) + len(new_tokens)
    if new_size > MAX_VOCAB:
        raise UserError(f"{new_size:,} entries exceed the {MAX_VOCAB:,} that prepared data can store; "
                        "raise --min-count or pass --max-new", where)

    hf.resize_token_embeddings(new_size, mean_resizing=False)
    how = init_new_rows(hf, new_tokens, old_tok, len(old_vocab))
    if hf.config.vocab_size != new_size or hf.cls.predictions.bias.shape[0] != new_size:
        raise RuntimeError("resize_token_embeddings left the config or the MLM bias at the old size")

    with atomic_path(out) as tmp:
        tmp.mkdir()
        vocab_file = tmp / "vocab.txt"
        vocab_file.write_text("".join(t + "\n" for t in list(old_vocab) + new_tokens), encoding="utf-8")
        save_model(hf, tmp, vocab_path=str(vocab_file))
        new_tok = chinese_tokenizer(str(vocab_file))
        for token in new_tokens:
            if not token.startswith("##") and new_tok(token, add_special_tokens=False)["input_ids"] != \
                    [new_tok.convert_tokens_to_ids(token)]:
                raise RuntimeError(f"the extended tokenizer does not produce the new token {token!r}")
        counts_after = count_corpus(texts, new_tok)
        report = ExtendReport(
            model=str(model), out=str(out), old_size=len(old_vocab), new_size=new_size,
            added=[{"token": t, "id": len(old_vocab) + k, "count": n, "source": s}
                   for k, (t, n, s) in enumerate(chosen)],
            tokens=counts.tokens, unk_before=counts.unk, unk_after=counts_after.unk, init=how)
        atomic_write_json(tmp / REPORT, asdict(report))
    check = AutoTokenizer.from_pretrained(str(out))
    if len(check) != new_size or check.convert_tokens_to_ids(new_tokens[-1]) != new_size - 1:
        shutil.rmtree(out, ignore_errors=True)
        raise RuntimeError(f"AutoTokenizer reads {len(check)} entries from {out}, expected {new_size}")
    return report


# ------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("extend", help="add the characters (and words) a domain corpus needs to a model's vocabulary",
                       description="Count what the vocabulary turns into [UNK] (and, with --words, splits) in "
                                   "CORPUS, add it, and write a model folder with the larger vocabulary.")
    p.add_argument("corpus", nargs="+", metavar="CORPUS", help="text files or folders (as for prepare)")
    p.add_argument("--model", required=True, metavar="MODEL", help="local folder, zoo name, hub id or TF checkpoint")
    p.add_argument("--out", required=True, metavar="DIR", help="the extended model folder")
    p.add_argument("--min-count", type=int, default=2, metavar="N",
                   help="add pieces seen at least N times in the corpus (default 2)")
    p.add_argument("--add", dest="add_file", metavar="FILE", help="tokens to add anyway, one per line")
    p.add_argument("--words", action="store_true",
                   help="also add frequent non-Chinese words (Latin, numbers) that WordPiece splits into pieces")
    p.add_argument("--max-new", type=int, metavar="N", help="add at most N corpus tokens (most frequent first)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    try:  # `vocab similar` (the MacBERT similar-word table) lives in its own module
        from bertwwm.data.similar_words import add_subcommand
    except ImportError:
        return
    add_subcommand(sub)


def run(args: argparse.Namespace) -> int:
    if args.action != "extend":
        return args._action(args)
    report = extend_vocab(args.corpus, args.model, args.out, min_count=args.min_count, add_file=args.add_file,
                          words=args.words, max_new=args.max_new, force=args.force)
    print(report.summary())
    shown = ", ".join(f"{a['token']} ({a['count']})" for a in report.added[:20])
    print(f"new tokens: {shown}{' ...' if len(report.added) > 20 else ''}")
    print(f"wrote {report.out} (details in {REPORT})", file=sys.stderr)
    return 0


def check_data_vocab(manifest: dict, vocab_size: int, where: str | Path) -> None:
    """Prepared data and the model must share a vocabulary (pretrain calls this for every phase)."""
    data_size = ((manifest.get("config") or {}).get("vocab") or {}).get("size", 21128)
    if data_size != vocab_size:
        hint = ("prepare it with --vocab MODEL/vocab.txt (the extended model's)" if vocab_size > data_size
                else "pass the extended model as --init, or prepare without --vocab")
        raise UserError(f"this data was tokenized with a {data_size:,}-entry vocabulary but the model has "
                        f"{vocab_size:,} entries; {hint}", where)

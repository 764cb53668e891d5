"""`bertwwm show-masking TEXT`: the BERT-wwm report's illustration for any sentence.

Four rows: the original text, the text segmented into words, character-level masking (the original Chinese
BERT) and whole word masking. As in the report, chosen tokens all become [MASK] (no random or kept tokens),
with the usual budget of 15% of the instance length. With a similar-words table (`--similar-words FILE`, or
`--macbert` to build one from the shipped corpus sample) a fifth row shows MacBERT masking: chosen word
n-grams all replaced by similar words (random tokens where the table has none).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bertwwm.text.align import WordAligner
from bertwwm.core.errors import UserError
from bertwwm.data.masking import MaskingConfig, mask_instance
from bertwwm.data.similar_words import SimilarWords
from bertwwm.text.tokens import CLS_ID, SEP_ID, chinese_tokenizer
from bertwwm.text.words import SEGMENTERS, get_segmenter

ROW_LABELS = ("Original text", "Segmented text", "Character masking", "Whole word masking")
MACBERT_LABEL = "MacBERT masking"  # the fifth row, with a similar-words table
SAMPLE_TABLE_CHARS = 300_000  # --macbert without a table: built from this much of the shipped corpus sample


def show_masking(text: str, seed: int | None = None, segmenter: str = "jieba", *,
                 user_dict: str | None = None, model_path: str | None = None,
                 max_predictions: int = 20, similar_words: SimilarWords | None = None) -> dict:
    """Mask `text` both ways. Returns {"tokens", "token_word_ids", "char_masked", "wwm_masked"} (lists per
    token, [CLS]/[SEP] included, word id None for them) plus "text" and "words" (the segmenter's words);
    with `similar_words` also "macbert_masked" (each row draws from its own generator seeded with `seed`)."""
    if not text.strip():
        raise UserError("TEXT is empty")
    seg = get_segmenter(segmenter, user_dict=user_dict, model_path=model_path)
    aligned = WordAligner(seg).align(text)
    if len(aligned.ids) == 0:
        raise UserError(f"TEXT {text!r} has no tokens (only whitespace or control characters)")
    ids = np.concatenate(([CLS_ID], aligned.ids, [SEP_ID])).astype(np.int64)
    word_starts = np.concatenate(([True], aligned.word_starts, [True]))
    word_ids = [None] + (np.cumsum(aligned.word_starts) - 1).tolist() + [None]

    tok = chinese_tokenizer()
    masked = {}
    for policy in ("char", "wwm"):
        cfg = MaskingConfig(policy=policy, mask_token_prob=1.0, random_token_prob=0.0,
                            max_predictions=max_predictions)
        out, _, _ = mask_instance(ids, word_starts, cfg, np.random.default_rng(seed))
        masked[policy] = tok.convert_ids_to_tokens(out.tolist())
    if similar_words is not None:
        cfg = MaskingConfig(policy="macbert", mask_token_prob=1.0, random_token_prob=0.0,
                            max_predictions=max_predictions)
        out, _, _ = mask_instance(ids, word_starts, cfg, np.random.default_rng(seed), similar=similar_words)
        masked["macbert"] = tok.convert_ids_to_tokens(out.tolist())
    return {
        "tokens": tok.convert_ids_to_tokens(ids.tolist()),
        "token_word_ids": word_ids,
        "char_masked": masked["char"],
        "wwm_masked": masked["wwm"],
        "text": text,
        "words": [w for w in seg.cut(text) if w.strip()],
        **({"macbert_masked": masked["macbert"]} if "macbert" in masked else {}),
    }


def format_rows(result: dict) -> str:
    """The four rows of the report's table (five with MacBERT), tokens separated by spaces ([CLS]/[SEP] left
    out)."""
    rows = [
        result["text"],
        " ".join(result["words"]),
        " ".join(result["char_masked"][1:-1]),
        " ".join(result["wwm_masked"][1:-1]),
    ]
    if "macbert_masked" in result:
        rows.append(" ".join(result["macbert_masked"][1:-1]))
    labels = (*ROW_LABELS, MACBERT_LABEL)
    width = max(map(len, ROW_LABELS)) + 2
    return "\n".join(f"{label:<{width}}{row}" for label, row in zip(labels, rows))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", metavar="TEXT", help="a sentence, e.g. 使用语言模型来预测下一个词的probability。")
    parser.add_argument("--seed", type=int, default=None, help="random seed; the same seed gives the same masks")
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="jieba", help="word segmenter (default jieba)")
    parser.add_argument("--user-dict", default=None, help="jieba-format user dictionary: 'word [freq] [tag]' lines")
    parser.add_argument("--segmenter-model", default=None, help="local model folder for --segmenter ltp/pkuseg")
    parser.add_argument("--max-predictions", type=int, default=20, help="most tokens masked (default 20)")
    parser.add_argument("--similar-words", metavar="FILE", default=None,
                        help="add a MacBERT row, replacing words from this similar-words table (`bertwwm prepare "
                             "--masking macbert` writes one)")
    parser.add_argument("--macbert", action="store_true",
                        help="add a MacBERT row; without --similar-words, build a table from the shipped corpus "
                             "sample first (takes a while)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: tokens, token_word_ids, char_masked, wwm_masked "
                             "(and macbert_masked)")


def run(args: argparse.Namespace) -> int:
    if args.max_predictions < 1:
        raise UserError(f"--max-predictions must be at least 1, got {args.max_predictions}")
    similar = None
    if args.similar_words is not None:
        from bertwwm.text.tokens import VocabInfo

        similar = SimilarWords.load(args.similar_words, VocabInfo.from_vocab().size)
    elif args.macbert:
        from bertwwm.data.similar_words import build_from_corpus, sample_corpus_path

        print(f"building a similar-words table from {SAMPLE_TABLE_CHARS:,} characters of the shipped corpus "
              "sample (pass --similar-words FILE to reuse one)", file=sys.stderr)
        similar = build_from_corpus([sample_corpus_path()], segmenter=args.segmenter, user_dict=args.user_dict,
                                    max_chars=SAMPLE_TABLE_CHARS)
    result = show_masking(args.text, seed=args.seed, segmenter=args.segmenter, user_dict=args.user_dict,
                          model_path=args.segmenter_model, max_predictions=args.max_predictions,
                          similar_words=similar)
    if args.json:
        keys = ("tokens", "token_word_ids", "char_masked", "wwm_masked") + (("macbert_masked",) if similar is not None else ())
        print(json.dumps({k: result[k] for k in keys}, ensure_ascii=False))
    else:
        print(format_rows(result))
    return 0

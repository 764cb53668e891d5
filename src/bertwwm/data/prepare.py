"""`bertwwm prepare INPUT... --out DIR`: raw text -> sharded, (statically or dynamically) masked instances.

The pipeline for one shard: documents -> sentences -> words and WordPiece tokens (`bertwwm.text.align`) ->
instances (`bertwwm.data.instances`, BERT pairs with NSP or RoBERTa packing) -> whole-word masks
(`bertwwm.data.masking`, `--dupe-factor` differently masked copies) -> shuffled -> `bertwwm.data.storage` shard.

Shards are cut from the input stream every `--shard-chars` characters, at document boundaries, so shard k
always holds the same documents; it is built from those documents and the random seed (seed, k) alone.
That is why the output does not depend on `--workers`, why `--num-shards/--shard-index` can split the work
across machines (machine i builds shards k with k % num_shards == i), and why a killed run can resume: it
re-reads the corpus (cheap), skips every shard folder that is complete and checks out, and builds the rest.

This module runs the job: cutting shards, workers, locks, resuming, manifests, the verb. The job's options
live in `bertwwm.data.prepare_config`, the building of one shard in `bertwwm.data.prepare_shard`; their public
names (and `_STATE`, which benchmarks/prepare.py clears) are importable from here as before.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from bertwwm import __version__
from bertwwm.core.errors import UserError
from bertwwm.core.locks import LOCK_FILE, locked
# Names re-exported for the code that imported them from here (noqa: kept though unused in this module).
from bertwwm.data.prepare_config import (DEFAULT_DUPE_FACTOR, DEFAULT_SEED, DEFAULT_SHARD_CHARS,  # noqa: F401
                                         MASKINGS, SIMILAR_WORDS_FILE, build_config, default_max_predictions,
                                         masking_config, similar_words_entry, vocab_path)
from bertwwm.data.prepare_shard import (ALIGN_BATCH, ASSEMBLE_CHUNK, MASK_CHUNK, _STATE,  # noqa: F401
                                        build_and_write, build_shard, init_state, tokenize_documents, worker_init)
from bertwwm.data.storage import FORMAT_VERSION, MANIFEST, VERIFIED, mark_verified, read_shard_entry, write_manifest
from bertwwm.text.corpus import CorpusCounts, Document, list_input_files, read_documents


# ---------------------------------------------------------------------------------------------- the run


@dataclasses.dataclass
class _ShardText:
    index: int
    texts: list[str]
    chars: int
    bytes_end: int  # input bytes read when the shard was complete (for the progress bar)


def _cut_shards(docs: Iterable[Document], shard_chars: int, counts: CorpusCounts) -> Iterator[_ShardText]:
    texts: list[str] = []
    chars = 0
    index = 0
    for doc in docs:
        texts.append(doc.text)
        chars += len(doc.text)
        if chars >= shard_chars:
            yield _ShardText(index, texts, chars, counts.input_bytes)
            texts, chars, index = [], 0, index + 1
    if texts:
        yield _ShardText(index, texts, chars, counts.input_bytes)


def _part_manifest_name(config: dict, shard_index: int) -> str:
    n = config["num_shards"]
    return MANIFEST if n == 1 else f"manifest.part-{shard_index:03d}-of-{n:03d}.json"


def _check_existing(out: Path, config: dict) -> None:
    """Refuse to mix two different jobs in one folder; allow resuming (or joining) the same job."""
    if out.exists() and not out.is_dir():
        raise UserError("--out exists and is not a folder", out)
    existing = sorted(out.glob("manifest*.json"))
    ours = (LOCK_FILE, VERIFIED, SIMILAR_WORDS_FILE)  # lock files (.bertwwm.lock, .bertwwm.lock.part-*) and
    # the similar-words table that --masking macbert builds first are not content
    if not existing and out.exists() and any(not p.name.startswith(ours) for p in out.iterdir()):
        if not any(p.name.startswith(("shard-", ".shard-")) for p in out.iterdir()):
            raise UserError("output folder exists, is not empty and holds no prepared data; choose another --out",
                            out)
    for path in existing:
        try:
            other = json.loads(path.read_text(encoding="utf-8"))["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError("cannot read this manifest; delete the folder or choose another --out", path) from None
        diff = sorted(k for k in set(config) | set(other) if config.get(k) != other.get(k))
        if diff:
            shown = "; ".join(f"{k}: {other.get(k)!r} there, {config.get(k)!r} now" for k in diff[:4])
            raise UserError(
                f"this folder holds data prepared with different options ({shown}); "
                "rerun with the same options to resume, or choose another --out", path)


def _clean_stale_temporaries(out: Path, config: dict, shard_index: int) -> None:
    """Remove half-written shard folders of ours left by a killed run (atomic_path's temporaries)."""
    for tmp in out.glob(".shard-*.tmp"):
        try:
            k = int(tmp.name.split(".")[1].removeprefix("shard-"))
        except ValueError:
            continue
        if k % config["num_shards"] == shard_index:
            shutil.rmtree(tmp, ignore_errors=True)


def prepare(
    inputs: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    segmenter: str = "jieba",
    user_dict: str | Path | None = None,
    masking: str = "wwm",
    max_seq_length: int = 128,
    max_predictions: int | None = None,
    nsp: bool = True,
    dupe_factor: int | None = None,
    dynamic: bool = False,
    short_seq_prob: float = 0.1,
    doc_per_line: bool = False,
    workers: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    shard_chars: int = DEFAULT_SHARD_CHARS,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
    vocab: str | Path | None = None,
    similar_words: str | Path | None = None,
) -> dict:
    """Prepare pretraining data from raw text into `out`; returns the manifest (see bertwwm.data.storage).

    Rerunning with the same arguments resumes an interrupted run. With `num_shards > 1` this call builds
    only its part (shards k with k % num_shards == shard_index); the manifest is written by whichever part
    finishes last (all parts must write into the same folder, or be copied together and rerun once).

    `masking="macbert"` masks with the similar-words table `similar_words`; without one, it builds one from
    (the first 20M characters of) the inputs into `out/similar_words.json`, or reuses the one there.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs:
        raise UserError("no input given")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    files = list_input_files(inputs)
    config = build_config(
        inputs, files, segmenter=segmenter, user_dict=user_dict, masking=masking, max_seq_length=max_seq_length,
        max_predictions=max_predictions, nsp=nsp, dupe_factor=dupe_factor, dynamic=dynamic,
        short_seq_prob=short_seq_prob, doc_per_line=doc_per_line, num_shards=num_shards,
        shard_index=shard_index, shard_chars=shard_chars, seed=seed, vocab=vocab)
    config["masking_config"] = dataclasses.asdict(masking_config(config))
    if out.exists() and not out.is_dir():
        raise UserError("--out exists and is not a folder", out)
    created = not out.exists()
    if similar_words is not None and masking != "macbert":
        raise UserError("--similar-words is used by --masking macbert only")
    if masking == "macbert":
        if similar_words is None:
            similar_words = out / SIMILAR_WORDS_FILE
            if not similar_words.exists():
                from bertwwm.data.similar_words import build_from_corpus

                build_from_corpus(files, segmenter=segmenter, user_dict=config["user_dict"],
                                  vocab_path=vocab_path(config), doc_per_line=doc_per_line).save(similar_words)
        config["similar_words"] = similar_words_entry(Path(similar_words))
    held = False
    try:
        with _locked_output(out, config, shard_index):
            held = True
            return _prepare_locked(out, files, config, shard_index, workers=workers, progress=progress)
    except UserError:
        if created and held:  # a run that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                for p in out.iterdir():
                    if p.name.startswith(LOCK_FILE):
                        p.unlink()
                out.rmdir()
        raise


def _locked_output(out: Path, config: dict, shard_index: int):
    """One writer per output: the whole folder, or with --num-shards > 1 this machine's part of it."""
    n = config["num_shards"]
    if n == 1:
        return locked(out, "this prepared-data folder")
    return locked(out, f"part {shard_index} of {n} of this prepared-data folder",
                  f"{LOCK_FILE}.part-{shard_index:03d}-of-{n:03d}")


def _whole_folder(out: Path, config: dict):
    """Parts of a multi-machine job hold the folder's own lock only while they check or merge manifests."""
    if config["num_shards"] == 1:
        return contextlib.nullcontext()  # held for the whole run already
    return locked(out, "this prepared-data folder", wait_s=60.0)


def _prepare_locked(out: Path, files: list[Path], config: dict, shard_index: int, *, workers: int,
                    progress: bool) -> dict:
    num_shards, shard_chars, doc_per_line = config["num_shards"], config["shard_chars"], config["doc_per_line"]
    part_name = _part_manifest_name(config, shard_index)
    part_path = out / part_name
    with _whole_folder(out, config):
        _check_existing(out, config)
        init_state(config)  # validates segmenter/user dict here, before any work; workers inherit it on fork
        _clean_stale_temporaries(out, config, shard_index)
        if not part_path.exists():  # records the job's options at once, so a resumed run can check them
            start = _manifest(config, [], {}, complete=False)
            _write_json(part_path, start if num_shards == 1 else start | {"shard_index": shard_index})

    counts = CorpusCounts()
    total_bytes = sum(f["bytes"] for f in config["input_files"])
    entries: dict[int, dict] = {}
    started = time.perf_counter()
    written_tokens = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    done_bytes = 0

    def finish(entry: dict, bytes_end: int, new: bool) -> None:
        nonlocal done_bytes, written_tokens
        entries[entry["index"]] = entry
        if new:
            written_tokens += entry["tokens"]
        if bytes_end > done_bytes:
            bar.update(bytes_end - done_bytes)
            done_bytes = bytes_end
        rate = written_tokens / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix_str(f"{len(entries)} shards, {rate / 1e6:.2f}M tokens/s", refresh=False)

    docs = read_documents(files, doc_per_line=doc_per_line, counts=counts)
    pool = None
    if workers > 1:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker_init,
                                      initargs=(config, os.getpid()))
    pending: dict[cf.Future, int] = {}
    try:
        for shard in _cut_shards(docs, shard_chars, counts):
            if shard.index % num_shards != shard_index:
                continue
            entry = read_shard_entry(out, shard.index)
            if entry is not None and entry.get("input_chars") == shard.chars:
                finish(entry, shard.bytes_end, new=False)  # finished by an earlier run
                continue
            if pool is None:
                finish(build_and_write(str(out), shard.index, shard.texts, config, shard.chars),
                       shard.bytes_end, new=True)
                continue
            while len(pending) >= 2 * workers:  # bounded: at most 2 shards queued per worker
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    finish(fut.result(), pending.pop(fut), new=True)
            fut = pool.submit(build_and_write, str(out), shard.index, shard.texts, config, shard.chars)
            pending[fut] = shard.bytes_end
        for fut in cf.as_completed(list(pending)):
            finish(fut.result(), pending.pop(fut), new=True)
    except BrokenProcessPool:
        raise UserError("a worker process died (out of memory?); rerun the same command to resume") from None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

    if counts.documents == 0:
        skipped = ", ".join(f"{k} {v}" for k, v in counts.as_dict().items() if k.startswith("skipped_") and v)
        raise UserError("the input holds no text to prepare" + (f" ({skipped})" if skipped else ""),
                        files[0] if len(files) == 1 else None)
    shards = [entries[k] for k in sorted(entries)]
    part = _manifest(config, shards, counts.as_dict(), complete=True) | {"shard_index": shard_index}
    if num_shards == 1:
        manifest = _manifest(config, shards, counts.as_dict(), complete=True)
        write_manifest(out, manifest)
        mark_verified(out, manifest)  # every shard was hashed when written or when this run found it
        return manifest
    _write_json(part_path, part)
    with _whole_folder(out, config):
        return _merge_parts(out, config) or part


def _write_json(path: Path, obj: dict) -> None:
    from bertwwm.core.fileio import atomic_write_json

    atomic_write_json(path, obj)


def _manifest(config: dict, shards: list[dict], corpus_counts: dict, *, complete: bool) -> dict:
    counts = dict(corpus_counts)
    for key in ("instances", "tokens", "input_tokens", "alignment_fallbacks"):
        counts[key] = sum(int(s.get(key, 0)) for s in shards)
    counts["shards"] = len(shards)
    return {
        "format_version": FORMAT_VERSION,
        "complete": complete,
        "created_by": f"bertwwm {__version__}",
        "config": config,
        "masking": config["masking"],
        "nsp": config["nsp"],
        "max_seq_length": config["max_seq_length"],
        "dupe_factor": config["dupe_factor"],
        "shards": shards,
        "counts": counts,
    }


def _merge_parts(out: Path, config: dict) -> dict | None:
    """When every part of a multi-machine job is finished, write the combined manifest.json."""
    n = config["num_shards"]
    parts = []
    for i in range(n):
        path = out / _part_manifest_name(config, i)
        try:
            part = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not part.get("complete"):
            return None
        parts.append(part)
    shards = sorted((s for p in parts for s in p["shards"]), key=lambda s: s["index"])
    manifest = _manifest(config, shards, {k: v for k, v in parts[0]["counts"].items()
                                          if k not in ("instances", "tokens", "input_tokens",
                                                       "alignment_fallbacks", "shards")}, complete=True)
    write_manifest(out, manifest)
    mark_verified(out, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="text files (.txt, .gz, .jsonl, WikiExtractor output) or folders of them")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumable: rerun the same command to continue)")
    p.add_argument("--doc-per-line", action="store_true",
                   help="plain text has one document per line (default: a blank line between documents)")
    p.add_argument("--segmenter", default="jieba", metavar="NAME", help="jieba (default), rjieba (fast), presegmented, ltp, pkuseg")
    p.add_argument("--user-dict", metavar="FILE", help="jieba-format user dictionary for the segmenter")
    p.add_argument("--masking", choices=MASKINGS, default="wwm",
                   help="wwm: whole words (default); char: single tokens (original Chinese BERT); ngram: word n-grams; "
                        "macbert: word n-grams replaced by similar words (MacBERT)")
    p.add_argument("--similar-words", metavar="FILE",
                   help="--masking macbert: the similar-words table (default: build one from the inputs into "
                        f"DIR/{SIMILAR_WORDS_FILE}, or reuse the one there)")
    p.add_argument("--max-seq-length", type=int, metavar="L", default=128, help="tokens per instance incl. [CLS]/[SEP] (128)")
    p.add_argument("--max-predictions", type=int, metavar="N",
                   help="masked tokens per instance at most (default 20 at 128, 80 at 512, else 15%% of the length)")
    p.add_argument("--nsp", action=argparse.BooleanOptionalAction, default=True,
                   help="BERT segment pairs with next-sentence labels (default), or --no-nsp for RoBERTa-style "
                        "full-sentence packing")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dupe-factor", type=int, metavar="N",
                   help=f"static masking: write N differently masked copies (default {DEFAULT_DUPE_FACTOR})")
    g.add_argument("--dynamic", action="store_true",
                   help="store ids and word starts only; masks are drawn per batch by the collator")
    p.add_argument("--short-seq-prob", type=float, metavar="P", default=0.1, help="share of shorter pairs (NSP only; 0.1)")
    p.add_argument("--workers", type=int, metavar="N", default=1, help="worker processes (the output does not depend on it)")
    p.add_argument("--num-shards", type=int, metavar="N", default=1, help="split the job across this many machines")
    p.add_argument("--shard-index", type=int, metavar="I", default=0, help="which part this machine builds (0-based)")
    p.add_argument("--shard-chars", type=int, metavar="N", default=DEFAULT_SHARD_CHARS,
                   help=f"input characters per output shard (default {DEFAULT_SHARD_CHARS:,})")
    p.add_argument("--seed", type=int, metavar="N", default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument("--vocab", metavar="FILE|MODEL",
                   help="tokenize with this vocab.txt (or a model folder's): an extended vocabulary written by "
                        "`bertwwm vocab extend` (default: the shipped 21,128-entry Chinese BERT vocabulary)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    manifest = prepare(
        args.inputs, args.out, segmenter=args.segmenter, user_dict=args.user_dict, masking=args.masking,
        max_seq_length=args.max_seq_length, max_predictions=args.max_predictions, nsp=args.nsp,
        dupe_factor=args.dupe_factor, dynamic=args.dynamic, short_seq_prob=args.short_seq_prob,
        doc_per_line=args.doc_per_line, workers=args.workers, num_shards=args.num_shards,
        shard_index=args.shard_index, shard_chars=args.shard_chars, seed=args.seed, progress=not args.quiet,
        vocab=args.vocab, similar_words=args.similar_words)
    c = manifest["counts"]
    where = args.out if manifest.get("complete") and "shard_index" not in manifest else args.out + " (this part)"
    print(f"prepared {c['instances']:,} instances ({c['tokens']:,} tokens) from {c['documents']:,} documents "
          f"in {c['shards']} shards -> {where}")
    skipped = {k: v for k, v in c.items() if k.startswith(("skipped_", "split_")) and v}
    if skipped or c.get("alignment_fallbacks"):
        print("  " + ", ".join(f"{k}={v:,}" for k, v in {**skipped,
                                                           "alignment_fallbacks": c["alignment_fallbacks"]}.items()))
    return 0

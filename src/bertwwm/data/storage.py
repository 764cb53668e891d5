"""On-disk format of prepared pretraining data: shards of memory-mapped ``.npy`` arrays plus ``manifest.json``.

A prepared folder::

    OUT/manifest.json
    OUT/shard-00000/input_ids.npy        uint16, all instances' token ids back to back (original, unmasked)
                    word_starts.npy      uint8, 1 where a token begins a word ([CLS]/[SEP] are words)
                    offsets.npy          int64, n+1: instance i is input_ids[offsets[i]:offsets[i+1]]
                    segment_b_start.npy  int32, n: token_type_ids are 1 from here to the instance's end
                                         (== instance length when there is one segment)
                    nsp_labels.npy       int8, n (NSP only): 0 = B is the real next segment, 1 = B is random
                    mlm_offsets.npy      int64, n+1 (static masking only)
                    mlm_positions.npy    uint16 (static): masked positions of each instance, sorted
                    mlm_input_ids.npy    uint16 (static): the id put at each masked position
                    shard.json           this shard's entry of the manifest (lets an interrupted run resume)

Plain ``.npy`` (not a custom binary format) so any tool can open a shard with ``numpy.load(mmap_mode="r")``.
Each shard folder is written under a temporary name and renamed when complete, so a folder named
``shard-NNNNN`` is always whole; ``manifest.json`` is written last and says ``"complete": true``.

Reading checks what it can afford: file sizes and array lengths against the manifest every time a shard
is opened, token ids against the vocabulary per instance, and the sha256 of every file on ``verify=True``
and on the first use of a folder (``.verified.json`` then records each file's size and mtime, so later
opens of unchanged files skip the hashing).
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_path, atomic_write_json
from bertwwm.text.tokens import IGNORE_INDEX, VOCAB_SIZE  # VOCAB_SIZE: when the manifest names no vocabulary

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_META = "shard.json"
VERIFIED = ".verified.json"

# name -> dtype of every array a shard may hold; which ones are present depends on NSP / static masking
ARRAY_DTYPES: dict[str, np.dtype] = {
    "input_ids": np.dtype(np.uint16),
    "word_starts": np.dtype(np.uint8),
    "offsets": np.dtype(np.int64),
    "segment_b_start": np.dtype(np.int32),
    "nsp_labels": np.dtype(np.int8),
    "mlm_offsets": np.dtype(np.int64),
    "mlm_positions": np.dtype(np.uint16),
    "mlm_input_ids": np.dtype(np.uint16),
}
REQUIRED_ARRAYS = ("input_ids", "word_starts", "offsets", "segment_b_start")
STATIC_ARRAYS = ("mlm_offsets", "mlm_positions", "mlm_input_ids")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(folder: str | Path, index: int, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> dict:
    """Write one shard atomically; return its manifest entry (name, instances, tokens, sha256, + `extra`)."""
    folder = Path(folder)
    name = shard_name(index)
    unknown = set(arrays) - set(ARRAY_DTYPES)
    if unknown:
        raise ValueError(f"unknown shard arrays {sorted(unknown)}")
    offsets = arrays["offsets"]
    entry: dict[str, Any] = {
        "name": name, "instances": int(len(offsets) - 1), "tokens": int(offsets[-1]), **extra, "sha256": {},
        "bytes": {}}
    with atomic_path(folder / name) as tmp:
        tmp.mkdir()
        for key in sorted(arrays):
            file = tmp / f"{key}.npy"
            np.save(file, np.ascontiguousarray(arrays[key], dtype=ARRAY_DTYPES[key]), allow_pickle=False)
            entry["sha256"][f"{key}.npy"] = sha256_file(file)
            entry["bytes"][f"{key}.npy"] = file.stat().st_size
        (tmp / SHARD_META).write_text(json.dumps(entry, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return entry


def read_shard_entry(folder: str | Path, index: int, *, verify: bool = True) -> dict | None:
    """The entry of a finished shard, or None when the shard is absent or damaged (then it is rebuilt)."""
    shard = Path(folder) / shard_name(index)
    try:
        entry = json.loads((shard / SHARD_META).read_text(encoding="utf-8"))
        if verify:
            for file, digest in entry["sha256"].items():
                if sha256_file(shard / file) != digest:
                    return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry


def write_manifest(folder: str | Path, manifest: dict) -> None:
    atomic_write_json(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: str | Path, *, require_complete: bool = True) -> dict:
    """Read and check ``manifest.json``; a clear `UserError` naming the file when it is missing or wrong."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise UserError("prepared data folder not found", folder)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("no manifest.json: not a folder written by `bertwwm prepare`", path) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"manifest is not valid JSON ({e})", path) from None
    if not isinstance(manifest, dict):
        raise UserError("manifest must be a JSON object", path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"unsupported format_version {version!r} (this bertwwm reads {FORMAT_VERSION})", path)
    for key, kind in (("config", dict), ("masking", str), ("nsp", bool), ("max_seq_length", int),
                      ("dupe_factor", int), ("shards", list), ("counts", dict)):
        if not isinstance(manifest.get(key), kind):
            raise UserError(f"manifest field {key!r} is missing or not a {kind.__name__}", path)
    if manifest["masking"] not in ("static", "dynamic"):
        raise UserError(f"manifest masking must be 'static' or 'dynamic', got {manifest['masking']!r}", path)
    if require_complete and not manifest.get("complete", False):
        raise UserError("preparation has not finished; run the same `bertwwm prepare` command again to resume",
                        path)
    for i, shard in enumerate(manifest["shards"]):
        if not (isinstance(shard, dict) and isinstance(shard.get("name"), str)
                and isinstance(shard.get("instances"), int) and isinstance(shard.get("sha256"), dict)):
            raise UserError(f"manifest shard entry {i} is malformed", path)
    return manifest


def data_fingerprint(manifest: dict) -> str:
    """Identity of prepared data: its options and the checksums of its files, not where it lies.

    Two folders with the same fingerprint hold the same instances (a copy at another path included); a
    folder prepared from other text or with other options has another one.
    """
    config = {k: v for k, v in manifest.get("config", {}).items() if k not in ("inputs", "user_dict")}
    config["input_files"] = [f.get("bytes") for f in config.get("input_files", []) if isinstance(f, dict)]
    shards = [{"name": s.get("name"), "instances": s.get("instances"), "sha256": s.get("sha256")}
              for s in manifest.get("shards", [])]
    payload = json.dumps({"config": config, "shards": shards}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def vocab_size(manifest: dict) -> int:
    """Entries of the vocabulary the folder was tokenized with (prepare --vocab records it)."""
    vocab = manifest.get("config", {}).get("vocab") or {}
    return int(vocab.get("size", VOCAB_SIZE)) if isinstance(vocab, dict) else VOCAB_SIZE


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_verified(folder: Path) -> dict:
    try:
        stamp = json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
        return stamp if isinstance(stamp, dict) and isinstance(stamp.get("files"), dict) else {}
    except (OSError, ValueError):
        return {}


def verify_folder(folder: str | Path, manifest: dict | None = None, *, force: bool = False,
                  shards: Sequence[int] | None = None) -> int:
    """Check the sha256 of every shard file (and that token ids fit the vocabulary); return how many files
    were hashed. Files unchanged (size, mtime) since an earlier verification are skipped unless `force`."""
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    fingerprint = data_fingerprint(manifest)
    stamp = _read_verified(folder)
    known = stamp.get("files", {}) if stamp.get("fingerprint") == fingerprint and not force else {}
    entries = manifest["shards"] if shards is None else [manifest["shards"][i] for i in shards]
    checked: dict[str, list[int]] = dict(known)
    hashed = 0
    for entry in entries:
        for file, digest in entry["sha256"].items():
            path = folder / entry["name"] / file
            rel = f"{entry['name']}/{file}"
            try:
                key = _stat_key(path)
            except OSError:
                raise UserError("shard file listed in the manifest is missing; rerun `bertwwm prepare` with the "
                                "same options to rebuild it", path) from None
            if known.get(rel) == key:
                continue
            if sha256_file(path) != digest:
                raise UserError("shard file does not match the sha256 in manifest.json: it was damaged or changed "
                                "after `bertwwm prepare`; rerun prepare (same options) to rebuild it", path)
            if file in ("input_ids.npy", "mlm_input_ids.npy"):
                _check_token_ids(np.load(path, mmap_mode="r", allow_pickle=False), path, vocab_size(manifest))
            checked[rel] = key
            hashed += 1
    if hashed:
        try:  # a read-only folder is verified again next time; that is all
            atomic_write_json(folder / VERIFIED, {"fingerprint": fingerprint, "files": checked})
        except (OSError, UserError):
            pass
    return hashed


def mark_verified(folder: str | Path, manifest: dict) -> None:
    """Record every shard file as verified (prepare calls this: it has just hashed them all)."""
    folder = Path(folder)
    files = {f"{e['name']}/{file}": _stat_key(folder / e["name"] / file)
             for e in manifest["shards"] for file in e["sha256"]}
    atomic_write_json(folder / VERIFIED, {"fingerprint": data_fingerprint(manifest), "files": files})


def _check_token_ids(ids: np.ndarray, where: Path | str, size: int, start: int | None = None) -> None:
    if len(ids) and int(ids.max()) >= size:
        bad = int(ids.max())
        at = "" if start is None else f" (instance starting at token {start})"
        raise UserError(f"token id {bad} is outside the {size:,}-entry vocabulary{at}: the shard was "
                        "written with another vocabulary, or is damaged", where)


class _PreparedDatasetBody:
    """The instances of a prepared folder as a map-style dataset (a `torch.utils.data.Dataset`).

    Arrays are memory-mapped and opened on first use in each process, so the object is cheap to pickle
    into DataLoader workers. `shards` restricts it to some shard indices (e.g. one machine's part).
    `verify`: True hashes every file; None (default) hashes files not verified before (first use of the
    folder, or files changed since); False checks sizes and lengths only.
    """

    def __init__(self, folder: str | Path, shards: Sequence[int] | None = None, verify: bool | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        entries = self.manifest["shards"]
        chosen = range(len(entries)) if shards is None else list(shards)
        for i in chosen:
            if not 0 <= i < len(entries):
                raise UserError(f"shard index {i} out of range (the folder has {len(entries)} shards)", self.folder)
        self._shards = [entries[i] for i in chosen]
        self.vocab_size = vocab_size(self.manifest)
        for entry in self._shards:  # sizes, always: cheap (one stat per file)
            for file, size in (entry.get("bytes") or {}).items():
                path = self.folder / entry["name"] / file
                try:
                    actual = path.stat().st_size
                except OSError:
                    raise UserError("shard file listed in the manifest is missing", path) from None
                if actual != size:
                    raise UserError(f"shard file has {actual:,} bytes, the manifest says {size:,}: truncated or "
                                    "changed after `bertwwm prepare`", path)
        if verify is not False:
            verify_folder(self.folder, self.manifest, force=bool(verify), shards=list(chosen))
        self._ends = list(np.cumsum([s["instances"] for s in self._shards], dtype=np.int64).tolist())
        self.static = self.manifest["masking"] == "static"
        self.nsp = bool(self.manifest["nsp"])
        self._open: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = {}  # memory maps are reopened in the receiving process
        return state

    def _arrays(self, k: int) -> dict[str, np.ndarray]:
        arrays = self._open.get(k)
        if arrays is None:
            shard = self.folder / self._shards[k]["name"]
            arrays = {}
            for file in self._shards[k]["sha256"]:
                key = file.removesuffix(".npy")
                try:
                    arrays[key] = np.load(shard / file, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as e:
                    raise UserError(f"cannot read shard array ({e})", shard / file) from None
            missing = [a for a in REQUIRED_ARRAYS + (STATIC_ARRAYS if self.static else ())
                       + (("nsp_labels",) if self.nsp else ()) if a not in arrays]
            if missing:
                raise UserError(f"shard lacks {', '.join(missing)}", shard)
            _check_lengths(arrays, self._shards[k], shard, self.static)
            self._open[k] = arrays
        return arrays

    def shard_of(self, i: int) -> tuple[int, int]:
        """(position of the shard among the chosen ones, index of the instance inside it)."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"instance {i} out of range ({len(self)} instances)")
        k = bisect.bisect_right(self._ends, i)
        return k, i - (self._ends[k - 1] if k else 0)

    def token_counts(self, minlength: int = 0) -> np.ndarray:
        """How often each token id occurs in the original (unmasked) text of all instances. One pass over the
        shards per dataset (pretraining asks twice: the output-bias init and the held-out reference)."""
        cached = getattr(self, "_token_counts", None)
        if cached is not None and len(cached) >= minlength:
            return cached.copy()
        counts = np.zeros(max(minlength, self.vocab_size), dtype=np.int64)
        for k in range(len(self._shards)):
            ids = self._arrays(k)["input_ids"]
            for start in range(0, len(ids), 1 << 24):  # in pieces: a shard may be larger than memory
                part = np.bincount(np.asarray(ids[start:start + (1 << 24)]), minlength=len(counts))
                counts[:len(part)] += part[:len(counts)]
        self._token_counts = counts
        return counts.copy()

    def __getitem__(self, i: int) -> dict:
        k, j = self.shard_of(int(i))
        a = self._arrays(k)
        start, end = int(a["offsets"][j]), int(a["offsets"][j + 1])
        ids = np.asarray(a["input_ids"][start:end], dtype=np.int64)
        _check_token_ids(ids, self.folder / self._shards[k]["name"] / "input_ids.npy", self.vocab_size, start)
        item: dict[str, Any] = {"word_starts": np.asarray(a["word_starts"][start:end], dtype=bool)}
        token_type_ids = np.zeros(end - start, dtype=np.int64)
        token_type_ids[int(a["segment_b_start"][j]):] = 1
        item["token_type_ids"] = token_type_ids
        if self.static:
            m0, m1 = int(a["mlm_offsets"][j]), int(a["mlm_offsets"][j + 1])
            positions = np.asarray(a["mlm_positions"][m0:m1], dtype=np.int64)
            if len(positions) and int(positions.max()) >= end - start:
                raise UserError(f"masked position {int(positions.max())} is outside instance {j} of "
                                f"{end - start} tokens: the shard is damaged", self.folder / self._shards[k]["name"])
            _check_token_ids(a["mlm_input_ids"][m0:m1], self.folder / self._shards[k]["name"] / "mlm_input_ids.npy",
                             self.vocab_size)
            labels = np.full(end - start, IGNORE_INDEX, dtype=np.int64)
            labels[positions] = ids[positions]
            ids[positions] = a["mlm_input_ids"][m0:m1]
            item["labels"] = labels
        item["input_ids"] = ids
        if self.nsp:
            item["next_sentence_label"] = int(a["nsp_labels"][j])
        return item


def _check_lengths(arrays: dict[str, np.ndarray], entry: dict, shard: Path, static: bool) -> None:
    """Array lengths agree with each other and with the manifest (a damaged shard fails here, not deep inside)."""
    n, tokens = entry["instances"], entry.get("tokens")
    offsets = arrays["offsets"]
    problems = []
    if len(offsets) != n + 1:
        problems.append(f"offsets.npy has {len(offsets)} entries, the manifest's {n} instances need {n + 1}")
    elif n and (int(offsets[0]) != 0 or int(offsets[-1]) != len(arrays["input_ids"])):
        problems.append("offsets.npy does not span input_ids.npy")
    if tokens is not None and len(arrays["input_ids"]) != tokens:
        problems.append(f"input_ids.npy has {len(arrays['input_ids'])} tokens, the manifest says {tokens}")
    if len(arrays["word_starts"]) != len(arrays["input_ids"]):
        problems.append("word_starts.npy and input_ids.npy differ in length")
    for key in ("segment_b_start", "nsp_labels"):
        if key in arrays and len(arrays[key]) != n:
            problems.append(f"{key}.npy has {len(arrays[key])} entries for {n} instances")
    if static and (len(arrays["mlm_offsets"]) != n + 1
                   or int(arrays["mlm_offsets"][-1]) != len(arrays["mlm_positions"])
                   or len(arrays["mlm_positions"]) != len(arrays["mlm_input_ids"])):
        problems.append("mlm_offsets.npy, mlm_positions.npy and mlm_input_ids.npy disagree")
    if problems:
        raise UserError(f"damaged shard: {problems[0]}", shard)


def __getattr__(name: str):
    """`PreparedDataset` is built on first use (PEP 562) so that writing data (`bertwwm prepare` and its
    worker processes) never imports torch, which alone costs about 200 MB of RSS per process."""
    if name == "PreparedDataset":
        import torch.utils.data

        cls = type("PreparedDataset", (_PreparedDatasetBody, torch.utils.data.Dataset),
                   {"__module__": __name__, "__qualname__": "PreparedDataset",
                    "__doc__": _PreparedDatasetBody.__doc__})
        globals()["PreparedDataset"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

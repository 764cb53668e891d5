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
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertwwm.errors import UserError
from bertwwm.fileio import atomic_path, atomic_write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_META = "shard.json"
IGNORE_INDEX = -100

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
        "name": name, "instances": int(len(offsets) - 1), "tokens": int(offsets[-1]), **extra, "sha256": {}}
    with atomic_path(folder / name) as tmp:
        tmp.mkdir()
        for key in sorted(arrays):
            file = tmp / f"{key}.npy"
            np.save(file, np.ascontiguousarray(arrays[key], dtype=ARRAY_DTYPES[key]), allow_pickle=False)
            entry["sha256"][f"{key}.npy"] = sha256_file(file)
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


class _PreparedDatasetBody:
    """The instances of a prepared folder as a map-style dataset (a `torch.utils.data.Dataset`).

    Arrays are memory-mapped and opened on first use in each process, so the object is cheap to pickle
    into DataLoader workers. `shards` restricts it to some shard indices (e.g. one machine's part).
    """

    def __init__(self, folder: str | Path, shards: Sequence[int] | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        entries = self.manifest["shards"]
        chosen = range(len(entries)) if shards is None else list(shards)
        for i in chosen:
            if not 0 <= i < len(entries):
                raise UserError(f"shard index {i} out of range (the folder has {len(entries)} shards)", self.folder)
        self._shards = [entries[i] for i in chosen]
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

    def __getitem__(self, i: int) -> dict:
        k, j = self.shard_of(int(i))
        a = self._arrays(k)
        start, end = int(a["offsets"][j]), int(a["offsets"][j + 1])
        ids = np.asarray(a["input_ids"][start:end], dtype=np.int64)
        item: dict[str, Any] = {"word_starts": np.asarray(a["word_starts"][start:end], dtype=bool)}
        token_type_ids = np.zeros(end - start, dtype=np.int64)
        token_type_ids[int(a["segment_b_start"][j]):] = 1
        item["token_type_ids"] = token_type_ids
        if self.static:
            m0, m1 = int(a["mlm_offsets"][j]), int(a["mlm_offsets"][j + 1])
            positions = np.asarray(a["mlm_positions"][m0:m1], dtype=np.int64)
            labels = np.full(end - start, IGNORE_INDEX, dtype=np.int64)
            labels[positions] = ids[positions]
            ids[positions] = a["mlm_input_ids"][m0:m1]
            item["labels"] = labels
        item["input_ids"] = ids
        if self.nsp:
            item["next_sentence_label"] = int(a["nsp_labels"][j])
        return item



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

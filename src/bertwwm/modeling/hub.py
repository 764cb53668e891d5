"""The Hugging Face hub as a model source: its cache first, then a quick reachability probe, then the download.

A model that is neither cached nor reachable fails within seconds (`HUB_PROBE_SECONDS`) with a UserError that
says how to get it, instead of hanging on DNS or retrying for minutes inside huggingface_hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertwwm.core.errors import UserError
from bertwwm.modeling.zoo_table import zoo_model


HUB_PROBE_SECONDS = 3.0  # the whole "is the hub there" question is answered within this (DNS included)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_HUB_SIDE_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def hub_id_of(ref: str) -> str | None:
    """The hub id a zoo name, hub id or title refers to, or None when `ref` is not a hub reference."""
    entry = zoo_model(ref)
    if entry is not None:
        return entry.hub_id
    parts = ref.split("/")
    if len(parts) == 2 and all(parts) and not ref.startswith((".", "~")) and \
            not ref.endswith((".zip", ".bin", ".index", ".json")):
        return ref
    return None


def hub_cache_dir() -> Path:
    """Hugging Face's cache, read from the environment now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or constants.HF_HUB_CACHE)


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _offline_by_setting() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    return None


def cached_snapshot(hub_id: str) -> Path | None:
    """The cached snapshot folder of a hub model when it holds a config and weights, else None."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(hub_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a broken cache entry: both mean "not here"
        return None
    if (folder / "config.json").is_file() and any((folder / w).is_file() for w in _WEIGHT_FILES):
        return folder
    return None


def _hub_files(hub_id: str, ref: str) -> list[str] | str:
    """The repository's file names, or why the hub cannot be reached (a string). Never longer than
    HUB_PROBE_SECONDS: the request runs in a daemon thread, so a hanging DNS lookup cannot hold us up."""
    import threading

    answer: dict = {}

    def ask() -> None:
        try:
            from huggingface_hub import HfApi

            info = HfApi(endpoint=_hub_endpoint()).model_info(hub_id, timeout=HUB_PROBE_SECONDS)
            answer["files"] = [s.rfilename for s in info.siblings or []]
        except Exception as e:  # sorted out below, in the caller's thread
            answer["error"] = e

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join(HUB_PROBE_SECONDS + 0.5)
    if worker.is_alive():
        return f"no answer from {_hub_endpoint()} within {HUB_PROBE_SECONDS:.0f} s"
    if "files" in answer:
        return answer["files"]
    error = answer["error"]
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        raise UserError("the hub model is gated: accept its terms on the hub and log in (`hf auth login`)", ref)
    if isinstance(error, RepositoryNotFoundError):
        raise UserError(f"no model {hub_id!r} on the hub (nor a local folder of that name; see `bertwwm models`)",
                        ref)
    if isinstance(error, HfHubHTTPError):
        return f"the hub answered: {str(error).splitlines()[0][:160]}"
    return f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else 'no connection'}"


def hub_snapshot(hub_id: str, ref: str | None = None) -> Path:
    """A local folder with a hub model's config, vocab and PyTorch weights: from the cache, else downloaded."""
    ref = ref or hub_id
    cached = cached_snapshot(hub_id)
    if cached is not None:
        return cached
    reason = _offline_by_setting()
    files = reason or _hub_files(hub_id, ref)
    if isinstance(files, str):
        local = "" if zoo_model(ref) is not None else "no such local folder, and "
        raise UserError(
            f"{local}not in the local cache and the hub cannot be reached ({files}): download it where you are online "
            f"with `hf download {hub_id}` and copy the Hugging Face cache (~/.cache/huggingface) here, or pass "
            "a local folder", ref)
    if "model.safetensors" in files:
        weights = ["model.safetensors"]
    elif "model.safetensors.index.json" in files:
        weights = ["model.safetensors.index.json", "*.safetensors"]
    elif "pytorch_model.bin" in files:
        weights = ["pytorch_model.bin"]
    else:
        raise UserError("the hub model has no PyTorch weights (model.safetensors or pytorch_model.bin)", ref)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, cache_dir=hub_cache_dir(), endpoint=_hub_endpoint(),
                                      allow_patterns=[*_HUB_SIDE_FILES, *weights]))
    except Exception as e:  # the connection dropped, the disk is full, ...: one line, not a traceback
        raise UserError(f"download from the hub failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                        ref) from None

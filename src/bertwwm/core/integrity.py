"""Reading model and checkpoint files without trusting them: damage becomes a clear `UserError`, never code.

* `load_torch_file`: ``torch.load(weights_only=True)`` only (tensors, numbers, strings, lists, tuples, dicts),
  so a pickle that would run code is refused. Torch's own message advises retrying with the unsafe
  loader; that advice is never passed on.
* `check_safetensors`: the header is valid JSON and the file is exactly as long as the header says, so a
  truncated ``model.safetensors`` is named before transformers or safetensors fail on it with a traceback.
"""

from __future__ import annotations

import json
import re
import struct
import warnings
from pathlib import Path
from typing import Any

from bertwwm.core.errors import UserError

_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


def load_torch_file(path: str | Path, what: str = "PyTorch file", *, mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` on CPU; a damaged or unsafe file is a UserError naming it.
    `mmap` maps a zip-format file instead of reading it (large weights)."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found", path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise UserError(f"cannot read {what}: {_unpickling_reason(str(e))}", path) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read {what}: corrupt or truncated ({first})", path) from None
    except Exception:  # noqa: BLE001 - on garbage the weights-only unpickler raises anything (KeyError, ...)
        raise UserError(f"cannot read {what}: corrupt, truncated or not a PyTorch file", path) from None


def _unpickling_reason(message: str) -> str:
    """Torch's weights-only refusal, without its advice to load the file unsafely."""
    match = re.search(r"GLOBAL ([\w.]+)", message)
    if match:
        return (f"it holds Python objects, not only tensors and plain data (it names {match.group(1)}); "
                "bertwwm loads weights only and never runs code from a file")
    return "corrupt, truncated or not a PyTorch file"


def check_safetensors(path: str | Path) -> None:
    """Raise UserError unless `path` is a whole safetensors file (header parses, size matches)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise UserError("damaged safetensors file: shorter than its 8-byte header length", path)
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise UserError("damaged safetensors file: truncated or not safetensors (bad header length)", path)
            header = json.loads(f.read(n))
    except OSError as e:
        raise UserError(f"cannot read ({e.strerror or e})", path) from None
    except (ValueError, UnicodeDecodeError):
        raise UserError("damaged safetensors file: its header is not valid JSON", path) from None
    if not isinstance(header, dict):
        raise UserError("damaged safetensors file: its header is not a JSON object", path)
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise UserError(f"damaged safetensors file: tensor {name!r} has no data offsets", path) from None
    expected = 8 + n + end
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise UserError(f"damaged safetensors file: {state} ({size:,} bytes, the header needs {expected:,})",
                        path)


def check_model_folder(folder: str | Path) -> None:
    """Check every safetensors weight file of a model folder (cheap: headers and sizes only)."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    for file in sorted(folder.glob("*.safetensors")):
        check_safetensors(file)


def load_safetensors(path: str | Path) -> dict:
    """safetensors.torch.load_file after `check_safetensors`; any remaining failure is a UserError."""
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError and friends on damaged content
        raise UserError(f"damaged safetensors file ({str(e).splitlines()[0][:160]})", path) from None

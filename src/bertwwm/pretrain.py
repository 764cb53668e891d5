"""`bertwwm pretrain`: BERT-wwm / RoBERTa-wwm pretraining and continued pretraining from recipes.

A run goes through the recipe's phases (e.g. 128 then 512 tokens) inside one process group. Each optimizer
step consumes `batch_size` instances of the phase's prepared folder, split into `grad_accum` micro-batches
and across the torchrun ranks. Losses are normalised by the *global* number of masked tokens (and of
sequences, for NSP), so 1 process, N processes and gradient accumulation all compute the gradient of
the same big batch.

Exact resume: the order of instances is a pure function of (seed, phase, epoch), so the data position is
just the step; checkpoints hold the weights, optimizer, scheduler and every RNG state (python, numpy,
torch, CUDA, the masking collator's), per rank.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bertwwm.errors import UserError
from bertwwm.fileio import atomic_path, atomic_write_json, atomic_write_text

RECIPE_SUFFIX = ".toml"
CHECKPOINTS = "checkpoints"
FINAL = "final"
METRICS = "metrics.jsonl"
RUN_CONFIG = "run_config.json"
TRAINER_STATE = "trainer_state.pt"


# ----------------------------------------------------------------------------------------------- config

@dataclass
class Phase:
    """One stage of a length schedule: its data folder, length, global batch and number of steps."""

    max_seq_length: int = 128
    batch_size: int = 256          # sequences per optimizer step, over all ranks and accumulation
    steps: int = 1000
    max_predictions: int = 20      # masked tokens per sequence (dynamic masking)
    data: str = "data"             # which folder: "data" (--data) or "data_512" (--data-512)
    lr: float | None = None        # peak learning rate of this phase (default: optim lr)


@dataclass
class PretrainConfig:
    out: str = "run"
    data: str | None = None
    data_512: str | None = None
    recipe: str = "custom"
    description: str = ""
    # model
    init: str = "random"           # "random", a local folder, zoo name, hub id or TF-1 checkpoint
    preset: str = "base"           # shape when init == "random"
    nsp: bool = True
    dropout: float | None = None   # None: the config's (0.1)
    # masking (dynamic masking happens in the collator; static masks come from the data)
    policy: str = "wwm"
    mask_prob: float = 0.15
    decide_per: str = "token"
    data_masking: str = "any"      # what the recipe expects of the data: "static", "dynamic" or "any"
    # optimizer
    optimizer: str = "adamw"
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    clip_grad: float | None = 1.0
    # training
    phases: list[Phase] = field(default_factory=lambda: [Phase()])
    seed: int = 12345
    grad_accum: int = 1
    bf16: bool = False
    compile: bool = False
    fsdp: bool = False             # shard weights/gradients/optimizer over processes (FSDP2) instead of DDP
    save_every: int = 1000
    keep_last: int = 3
    eval_every: int = 1000
    eval_instances: int = 256      # held out from the end of each phase's data
    log_every: int = 10
    threads: int | None = None
    resume: bool = False
    progress: bool = True

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)


# TOML section -> {key in the recipe: field of PretrainConfig}
SECTIONS: dict[str, dict[str, str]] = {
    "model": {"init": "init", "preset": "preset", "nsp": "nsp", "dropout": "dropout"},
    "masking": {"policy": "policy", "mask_prob": "mask_prob", "decide_per": "decide_per",
                "data_masking": "data_masking"},
    "optim": {"name": "optimizer", "lr": "lr", "warmup_ratio": "warmup_ratio", "warmup_steps": "warmup_steps",
              "weight_decay": "weight_decay", "beta1": "beta1", "beta2": "beta2", "eps": "eps",
              "clip_grad": "clip_grad"},
    "train": {k: k for k in ("seed", "grad_accum", "bf16", "compile", "fsdp", "save_every", "keep_last", "eval_every",
                             "eval_instances", "log_every", "threads")},
}
# Values that change the training trajectory: a resumed run must agree with its checkpoint on them.
TRAJECTORY_FIELDS = ("init", "preset", "nsp", "dropout", "policy", "mask_prob", "decide_per", "optimizer", "lr",
                     "warmup_ratio", "warmup_steps", "weight_decay", "beta1", "beta2", "eps", "clip_grad",
                     "phases", "seed", "grad_accum", "bf16", "fsdp", "eval_instances")


def recipe_names() -> list[str]:
    folder = resources.files("bertwwm") / "recipes"
    return sorted(p.name.removesuffix(RECIPE_SUFFIX) for p in folder.iterdir() if p.name.endswith(RECIPE_SUFFIX))


def load_recipe(name_or_file: str | Path) -> tuple[dict, str]:
    """Read a recipe (a bundled name such as "bert-wwm", or a TOML file) -> (dict, where it came from)."""
    path = Path(name_or_file)
    if not path.is_file():
        if str(name_or_file) not in recipe_names():
            raise UserError(f"unknown recipe {str(name_or_file)!r}: not a file and not one of "
                            f"{', '.join(recipe_names())}")
        path = Path(str(resources.files("bertwwm") / "recipes" / f"{name_or_file}{RECIPE_SUFFIX}"))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"recipe is not valid TOML ({e})", path) from None
    except UnicodeDecodeError:
        raise UserError("recipe is not UTF-8", path) from None


def config_from_recipe(recipe: dict, where: str = "recipe", **overrides: Any) -> PretrainConfig:
    """Build a PretrainConfig from a recipe dict, then apply keyword overrides (field names)."""
    cfg = PretrainConfig()
    values: dict[str, Any] = {}
    for key, value in recipe.items():
        if key == "description":
            values["description"] = str(value)
        elif key == "phases":
            if not isinstance(value, list) or not value:
                raise UserError("`phases` must be a non-empty array of tables ([[phases]])", where)
            values["phases"] = [_phase(p, i, where) for i, p in enumerate(value)]
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"[{key}] must be a table", where)
            for k, v in value.items():
                if k not in SECTIONS[key]:
                    raise UserError(f"unknown key {key}.{k}; known: {', '.join(SECTIONS[key])}", where)
                values[SECTIONS[key][k]] = v
        else:
            raise UserError(f"unknown recipe section {key!r}; known: description, phases, "
                            f"{', '.join(SECTIONS)}", where)
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, value in values.items():
        setattr(cfg, name, value)
    if "recipe" not in values:
        cfg.recipe = Path(where).stem if where != "recipe" else "custom"
    validate(cfg, where)
    return cfg


def _phase(table: Any, i: int, where: str) -> Phase:
    if not isinstance(table, dict):
        raise UserError(f"phases[{i}] must be a table", where)
    known = {f.name for f in dataclasses.fields(Phase)}
    unknown = set(table) - known
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(sorted(unknown))} in phases[{i}]; "
                        f"known: {', '.join(sorted(known))}", where)
    return Phase(**table)


def _check_type(where: str, name: str, value: Any, kinds: tuple, *, positive: bool = False, optional=False):
    if value is None and optional:
        return
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise UserError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}", where)
    if positive and not value > 0:
        raise UserError(f"{name} must be positive, got {value!r}", where)


def validate(cfg: PretrainConfig, where: str = "config") -> None:
    """Clear errors for bad values before any model is built."""
    from bertwwm.model import PRESETS
    from bertwwm.optim import OPTIMIZERS

    _check_type(where, "model.init", cfg.init, (str,))
    if cfg.preset not in PRESETS:
        raise UserError(f"model.preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}", where)
    _check_type(where, "model.nsp", cfg.nsp, (bool,))
    _check_type(where, "model.dropout", cfg.dropout, (int, float), optional=True)
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise UserError(f"model.dropout must be in [0, 1), got {cfg.dropout}", where)
    if cfg.data_masking not in ("static", "dynamic", "any"):
        raise UserError(f"masking.data_masking must be static, dynamic or any, got {cfg.data_masking!r}", where)
    _check_type(where, "masking.mask_prob", cfg.mask_prob, (int, float), positive=True)
    if cfg.optimizer not in OPTIMIZERS:
        raise UserError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}", where)
    _check_type(where, "optim.lr", cfg.lr, (int, float), positive=True)
    _check_type(where, "optim.warmup_ratio", cfg.warmup_ratio, (int, float))
    if not 0 <= cfg.warmup_ratio <= 1:
        raise UserError(f"optim.warmup_ratio must be in [0, 1], got {cfg.warmup_ratio}", where)
    _check_type(where, "optim.warmup_steps", cfg.warmup_steps, (int,), optional=True)
    _check_type(where, "optim.weight_decay", cfg.weight_decay, (int, float))
    _check_type(where, "optim.clip_grad", cfg.clip_grad, (int, float), optional=True, positive=True)
    for name in ("grad_accum", "save_every", "keep_last", "eval_every", "log_every"):
        _check_type(where, f"train.{name}", getattr(cfg, name), (int,), positive=True)
    _check_type(where, "train.eval_instances", cfg.eval_instances, (int,))
    _check_type(where, "train.seed", cfg.seed, (int,))
    _check_type(where, "train.threads", cfg.threads, (int,), optional=True, positive=True)
    for i, p in enumerate(cfg.phases):
        for name in ("max_seq_length", "batch_size", "steps", "max_predictions"):
            _check_type(where, f"phases[{i}].{name}", getattr(p, name), (int,), positive=True)
        if p.max_seq_length > 512:
            raise UserError(f"phases[{i}].max_seq_length {p.max_seq_length} exceeds BERT's 512 positions", where)
        if p.data not in ("data", "data_512"):
            raise UserError(f"phases[{i}].data must be \"data\" or \"data_512\", got {p.data!r}", where)
        _check_type(where, f"phases[{i}].lr", p.lr, (int, float), optional=True, positive=True)
        if p.batch_size % cfg.grad_accum:
            raise UserError(f"phases[{i}].batch_size {p.batch_size} is not a multiple of grad_accum "
                            f"{cfg.grad_accum}", where)


def scale_steps(cfg: PretrainConfig, max_steps: int) -> None:
    """--max-steps N: shrink (or grow) every phase in proportion so the run totals N steps."""
    if max_steps <= 0:
        raise UserError(f"--max-steps must be positive, got {max_steps}")
    total = cfg.total_steps
    counts = [max(1, round(p.steps * max_steps / total)) for p in cfg.phases]
    counts[-1] = max(1, max_steps - sum(counts[:-1])) if len(counts) > 1 else max_steps
    for p, n in zip(cfg.phases, counts):
        p.steps = n


def parse_set(assignments: list[str] | None) -> dict[str, Any]:
    """--set section.key=value (TOML value syntax; bare words are strings)."""
    out: dict[str, Any] = {}
    for a in assignments or []:
        key, sep, raw = a.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects section.key=value, got {a!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def apply_set(recipe: dict, assignments: dict[str, Any]) -> None:
    for key, value in assignments.items():
        parts = key.split(".")
        if parts[0] == "phases" and len(parts) == 3 and parts[1].isdigit():
            phases = recipe.get("phases", [])
            i = int(parts[1])
            if not 0 <= i < len(phases):
                raise UserError(f"--set {key}: the recipe has {len(phases)} phases (0-based index)")
            phases[i][parts[2]] = value
        elif len(parts) == 2:
            recipe.setdefault(parts[0], {})[parts[1]] = value
        else:
            raise UserError(f"--set {key}: expected section.key or phases.N.key")


# ---------------------------------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed():
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if world > 1 else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return Dist(rank, world, local_rank, device)


def _all_reduce(values: list[float], d: Dist) -> list[float]:
    if d.world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


# ------------------------------------------------------------------------------------------------ data

class PhaseData:
    """The instances of one phase: a deterministic order per epoch, a held-out slice, this rank's share."""

    def __init__(self, cfg: PretrainConfig, index: int, folder: str, d: Dist):
        from bertwwm.storage import PreparedDataset

        phase = cfg.phases[index]
        self.dataset = PreparedDataset(folder)
        m = self.dataset.manifest
        where = Path(folder) / "manifest.json"
        if m["max_seq_length"] > phase.max_seq_length:
            raise UserError(f"phase {index + 1} trains at max length {phase.max_seq_length} but this folder was "
                            f"prepared at {m['max_seq_length']}; prepare it with --max-seq-length "
                            f"{phase.max_seq_length} (or pass the right folder)", where)
        if cfg.nsp and not m["nsp"]:
            raise UserError("the recipe trains NSP but this folder has no NSP labels; prepare it with NSP or "
                            "set model.nsp = false (--no-nsp)", where)
        if cfg.data_masking != "any" and m["masking"] != cfg.data_masking:
            raise UserError(f"the recipe expects {cfg.data_masking} masking but the folder has {m['masking']} "
                            f"masks; prepare with --masking {cfg.data_masking} or pass "
                            f"--set masking.data_masking=any", where)
        n = len(self.dataset)
        self.n_eval = min(cfg.eval_instances, n // 10) if cfg.eval_instances > 0 else 0
        self.n_train = n - self.n_eval
        micro = phase.batch_size // cfg.grad_accum
        if micro % d.world:
            raise UserError(f"phase {index + 1}: micro-batch {micro} (batch {phase.batch_size} / grad_accum "
                            f"{cfg.grad_accum}) does not split over {d.world} processes")
        if self.n_train < 1:
            raise UserError("the prepared folder holds no instances", folder)
        self.seed, self.index, self.batch = cfg.seed, index, phase.batch_size
        self.micro = micro
        self.local = micro // d.world
        self.rank = d.rank
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, self.index, epoch])
            self._perm = rng.permutation(self.n_train)
            self._perm_epoch = epoch
        return self._perm

    def stream(self, start: int, count: int) -> np.ndarray:
        """Instance indices at positions [start, start+count) of the endless shuffled stream."""
        out = []
        while count > 0:
            epoch, offset = divmod(start, self.n_train)
            take = min(count, self.n_train - offset)
            out.append(self._order(epoch)[offset:offset + take])
            start += take
            count -= take
        return np.concatenate(out)

    def local_micro_batches(self, step_in_phase: int, grad_accum: int) -> list[list[dict]]:
        """This rank's share of each micro-batch of one optimizer step."""
        base = step_in_phase * self.batch
        batches = []
        for k in range(grad_accum):
            ids = self.stream(base + k * self.micro + self.rank * self.local, self.local)
            batches.append([self.dataset[int(i)] for i in ids])
        return batches

    def eval_items(self) -> list[dict]:
        return [self.dataset[i] for i in range(self.n_train, self.n_train + self.n_eval)]


def phase_folders(cfg: PretrainConfig) -> list[str]:
    folders = []
    for i, p in enumerate(cfg.phases):
        folder = cfg.data if p.data == "data" else cfg.data_512
        if folder is None:
            flag = "--data" if p.data == "data" else "--data-512"
            raise UserError(f"phase {i + 1} (max length {p.max_seq_length}) needs a prepared folder: pass {flag} DIR")
        if not Path(folder).is_dir():
            raise UserError("prepared data folder not found", folder)
        folders.append(folder)
    return folders


def make_collator(cfg: PretrainConfig, phase: Phase, seed: int):
    from bertwwm.collate import WholeWordMaskCollator
    from bertwwm.masking import MaskingConfig

    mcfg = MaskingConfig(policy=cfg.policy, mask_prob=cfg.mask_prob, max_predictions=phase.max_predictions,
                         decide_per=cfg.decide_per)
    return WholeWordMaskCollator(mcfg, seed=seed, pad_to_multiple_of=8)


def collator_seed(cfg: PretrainConfig, phase_index: int, rank: int) -> int:
    return (cfg.seed * 1_000_003 + phase_index * 7919 + rank) % (2**63)


EVAL_SEED = 20190620  # held-out masks are drawn with a fixed seed: the same masks at every evaluation


# ------------------------------------------------------------------------------------------- run state

def rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(run: Path) -> list[Path]:
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if re.fullmatch(r"step-\d{8}", p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def _config_json(cfg: PretrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def _trajectory(cfg_dict: dict) -> dict:
    return {k: cfg_dict.get(k) for k in TRAJECTORY_FIELDS}


# ----------------------------------------------------------------------------------------------- model

def build_training_model(cfg: PretrainConfig, d: Dist):
    import torch

    from bertwwm.model import PretrainingModel, bert_config, build_model, load_model

    if cfg.init == "random":
        torch.manual_seed(cfg.seed)  # the random init is a function of the seed
        hf = build_model(bert_config(cfg.preset, dropout=cfg.dropout), nsp=cfg.nsp)
    else:
        hf = load_model(cfg.init, nsp=cfg.nsp, dropout=cfg.dropout)
    return PretrainingModel(hf).to(d.device)


def load_weights(model, folder: Path) -> None:
    """Exact weights of a checkpoint (safetensors) into the training model; tied copies may be absent."""
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.hf.load_state_dict(state, strict=False)
    tied = set(getattr(model.hf, "_tied_weights_keys", None) or {})
    bad = [k for k in missing if k not in tied]
    if bad or unexpected:
        raise UserError(f"checkpoint does not match the model (missing {bad[:3]}, unexpected {unexpected[:3]})",
                        folder)
    model.hf.tie_weights()


# -------------------------------------------------------------------------------------------- training

class MetricsLog:
    """metrics.jsonl (one JSON object per line) and TensorBoard scalars; written by rank 0 only."""

    def __init__(self, run: Path, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = run / METRICS
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tensorboard"), purge_step=resume_step)
        except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.tb is not None:
            split = record.get("split", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "phase"):
                    self.tb.add_scalar(f"{split}/{k}", v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(model, items: list[dict], cfg: PretrainConfig, phase: Phase, micro: int, device) -> dict:
    """Held-out MLM (and NSP) loss and accuracy over `items`, with masks drawn from a fixed seed."""
    import torch

    collator = make_collator(cfg, phase, EVAL_SEED)
    was_training = model.training
    model.eval()
    sums = np.zeros(6)
    with torch.no_grad(), _autocast(cfg, device):
        for start in range(0, len(items), micro):
            batch = _to_device(collator(items[start:start + micro]), device)
            out = model(**batch)
            sums += [float(out.mlm_loss_sum), float(out.mlm_correct), out.mlm_count,
                     float(out.nsp_loss_sum or 0.0), float(out.nsp_correct or 0), out.nsp_count]
    model.train(was_training)
    record = {"mlm_loss": sums[0] / max(sums[2], 1), "mlm_acc": sums[1] / max(sums[2], 1),
              "instances": len(items)}
    if sums[5]:
        record.update(nsp_loss=sums[3] / sums[5], nsp_acc=sums[4] / sums[5])
    return record


def _autocast(cfg: PretrainConfig, device):
    import torch

    if not cfg.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def full_state(model, optimizer, d: Dist) -> tuple[dict | None, dict]:
    """(model state dict or None, optimizer state dict), full tensors on CPU: the plain modules' own under
    DDP/single process; gathered from the shards under FSDP (a collective: every rank must call it)."""
    if not getattr(model, "fsdp", False):
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    return ({k.removeprefix("hf."): v for k, v in weights.items()},
            get_optimizer_state_dict(model, optimizer, options=options))


def write_model(model, folder: Path, weights: dict | None) -> None:
    """A standard model folder; under FSDP the gathered `weights` go into a plain CPU copy first."""
    from bertwwm.model import save_model

    if weights is None:
        save_model(model.hf, folder)
        return
    import torch

    plain = type(model.hf)(model.hf.config)
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or {})
    if [k for k in missing if k not in tied] or unexpected:
        raise RuntimeError(f"gathered FSDP state does not match the model: {missing[:3]} {unexpected[:3]}")
    plain.tie_weights()
    save_model(plain, folder)


def save_checkpoint(run: Path, step: int, phase_index: int, model, optimizer, scheduler, collator,
                    cfg: PretrainConfig, d: Dist) -> None:
    """Atomically write RUN/checkpoints/step-NNNNNNNN (weights, optimizer, scheduler, per-rank RNG/data state)."""
    import torch

    ckdir = run / CHECKPOINTS
    staging = ckdir / ".ranks"
    staging.mkdir(parents=True, exist_ok=True)
    rank_state = {"rng": rng_state(), "collator": collator.state_dict(), "rank": d.rank}
    rank_file = staging / f"step-{step:08d}-rank-{d.rank}.pt"
    with atomic_path(rank_file) as tmp:
        torch.save(rank_state, tmp)
    weights, optimizer_state = full_state(model, optimizer, d)
    _barrier(d)
    if d.main:
        with atomic_path(ckdir / f"step-{step:08d}") as tmp:
            write_model(model, tmp, weights)
            for r in range(d.world):
                shutil.move(str(staging / f"step-{step:08d}-rank-{r}.pt"), str(tmp / f"rank-{r}.pt"))
            step_in_phase = step - sum(p.steps for p in cfg.phases[:phase_index])
            # The data position is implied by the step (the instance order is a function of seed, phase and
            # epoch); it is recorded for people reading the checkpoint.
            position = {"phase": phase_index, "step_in_phase": step_in_phase,
                        "instances_consumed": step_in_phase * cfg.phases[phase_index].batch_size}
            torch.save({"step": step, "phase": phase_index, "data_position": position, "optimizer": optimizer_state,
                        "scheduler": scheduler.state_dict(), "world_size": d.world,
                        "config": _config_json(cfg)}, tmp / TRAINER_STATE)
        for old in checkpoint_dirs(run)[:-cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(d)


def pretrain(config: PretrainConfig) -> Path:
    """Run (or resume) pretraining; return the folder of the final model (RUN/final)."""
    import torch

    cfg = config
    validate(cfg)
    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _pretrain(cfg)
    finally:
        torch.set_num_threads(previous_threads)  # an API caller's process keeps its own setting


def _pretrain(cfg: PretrainConfig) -> Path:
    folders = phase_folders(cfg)
    run = Path(cfg.out)
    existing = checkpoint_dirs(run)
    if existing and not cfg.resume:
        raise UserError(f"the run folder already has checkpoints (latest {existing[-1].name}); pass --resume to "
                        "continue it or choose another --out", run)
    d = init_distributed()
    if cfg.fsdp and d.world < 2:
        raise UserError("--fsdp shards the model over processes: run under torchrun with --nproc-per-node 2 or more")
    try:
        return _train(cfg, folders, run, existing[-1] if (existing and cfg.resume) else None, d)
    finally:
        if d.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _train(cfg: PretrainConfig, folders: list[str], run: Path, checkpoint: Path | None, d: Dist) -> Path:
    import torch

    from bertwwm.optim import build_optimizer, warmup_linear_decay, warmup_steps_for

    state = None
    if checkpoint is not None:
        state = torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=False)
        if state["world_size"] != d.world:
            raise UserError(f"checkpoint was written by {state['world_size']} processes; resume it with the same "
                            f"number (got {d.world}) for an exact continuation", checkpoint)
        saved, now = _trajectory(state["config"]), _trajectory(_config_json(cfg))
        diff = [k for k in TRAJECTORY_FIELDS if saved[k] != now[k]]
        if diff:
            raise UserError(f"--resume with different settings than the checkpoint: {', '.join(diff)}", checkpoint)
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / RUN_CONFIG, _config_json(cfg))

    datas = [PhaseData(cfg, i, f, d) for i, f in enumerate(folders)]
    model = build_training_model(cfg, d)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    model.train()

    # One LambdaLR over the whole run: each phase warms up to its own peak and decays linearly to 0.
    bounds = np.cumsum([0] + [p.steps for p in cfg.phases]).tolist()
    warmups = [warmup_steps_for(p.steps, cfg.warmup_steps, cfg.warmup_ratio) for p in cfg.phases]
    peaks = [(p.lr or cfg.lr) / cfg.lr for p in cfg.phases]

    def lr_factor(step: int) -> float:
        i = max(0, min(len(cfg.phases) - 1, int(np.searchsorted(bounds, step, side="right")) - 1))
        return peaks[i] * warmup_linear_decay(step - bounds[i], warmups[i], cfg.phases[i].steps)

    step = 0
    collator_state = None
    if state is not None:
        step = state["step"]
        rank_state = torch.load(checkpoint / f"rank-{d.rank}.pt", map_location="cpu", weights_only=False)
        set_rng_state(rank_state["rng"])
        collator_state = (state["phase"], rank_state["collator"])
    else:
        # Dropout and anything else drawing from the global RNGs starts from the seed (per rank).
        random.seed(cfg.seed + d.rank)
        np.random.seed((cfg.seed + d.rank) % 2**32)
        torch.manual_seed(cfg.seed + d.rank)

    train_model = model
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        # Each encoder layer is its own shard group; the root group holds the embeddings and the heads,
        # so the tied embedding/decoder matrix stays one parameter.
        for layer in model.hf.bert.encoder.layer:
            fully_shard(layer)
        fully_shard(model)
        model.fsdp = True
    elif d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    optimizer = build_optimizer(model.hf, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    if state is not None:
        if cfg.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    if cfg.compile:
        train_model = torch.compile(train_model, dynamic=True)

    log = MetricsLog(run, d.main, step if state is not None else None)
    total = cfg.total_steps
    bar = None
    if d.main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, desc=f"pretrain {cfg.recipe}", unit="step", dynamic_ncols=True)
    window = np.zeros(8)  # mlm_sum, mlm_correct, mlm_count, nsp_sum, nsp_correct, nsp_count, tokens, seconds
    t_last = time.perf_counter()
    phase_index, collator = -1, None
    start_time = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = float("nan")
    while step < total:
        i = int(np.searchsorted(bounds, step, side="right")) - 1
        if i != phase_index:
            phase_index = i
            collator = make_collator(cfg, cfg.phases[i], collator_seed(cfg, i, d.rank))
            if collator_state is not None and collator_state[0] == i:
                collator.load_state_dict(collator_state[1])
            collator_state = None
            eval_items = datas[i].eval_items() if (d.main or cfg.fsdp) else []
        data, phase = datas[i], cfg.phases[i]
        micro_batches = [collator(items) for items in data.local_micro_batches(step - bounds[i], cfg.grad_accum)]
        local_masked = sum(int((b["labels"] != -100).sum()) for b in micro_batches)
        local_tokens = sum(int(b["attention_mask"].sum()) for b in micro_batches)
        global_masked, global_tokens = _all_reduce([float(local_masked), float(local_tokens)], d)
        # Each rank divides by global/world; DDP's gradient average then divides the sum by the global count.
        mlm_norm = max(global_masked, 1.0) / d.world
        nsp_norm = phase.batch_size / d.world
        stats = np.zeros(6)
        for k, batch in enumerate(micro_batches):
            batch = _to_device(batch, d.device)
            sync = contextlib.nullcontext()
            last = k == len(micro_batches) - 1
            if cfg.fsdp:
                model.set_requires_gradient_sync(last)  # reduce-scatter once, after the last micro-batch
            elif d.world > 1 and not last:
                sync = train_model.no_sync()
            with sync:
                with _autocast(cfg, d.device):
                    out = train_model(**batch, mlm_normaliser=mlm_norm, nsp_normaliser=nsp_norm)
                out.loss.backward()
            stats += [float(out.mlm_loss_sum), float(out.mlm_correct), out.mlm_count,
                      float(out.nsp_loss_sum or 0.0), float(out.nsp_correct or 0), out.nsp_count]
        stats = np.asarray(_all_reduce(stats.tolist(), d))  # every rank sees the same sums (and NaNs)
        if not (math.isfinite(stats[0]) and math.isfinite(stats[3])):
            raise UserError(f"loss became NaN/inf at step {step + 1}; lower --lr or enable --clip-grad")
        if cfg.clip_grad:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        lr_used = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        window[:6] += stats
        window[6] += global_tokens
        if step % cfg.log_every == 0 or step == total:
            now = time.perf_counter()
            window[7] = now - t_last
            t_last = now
            record = {"step": step, "phase": i + 1, "split": "train",
                      "loss": (window[0] / max(window[2], 1)) + (window[3] / window[5] if window[5] else 0.0),
                      "mlm_loss": window[0] / max(window[2], 1), "mlm_acc": window[1] / max(window[2], 1),
                      "lr": lr_used, "grad_norm": grad_norm,
                      "tokens_per_s": window[6] / max(window[7], 1e-9),
                      "elapsed_s": now - start_time}
            if window[5]:
                record.update(nsp_loss=window[3] / window[5], nsp_acc=window[4] / window[5])
            log.write(record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['mlm_loss']:.3f}", acc=f"{record['mlm_acc']:.3f}",
                                tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
            window[:] = 0
        if bar is not None:
            bar.update(1)
        if data.n_eval and (step % cfg.eval_every == 0 or step == total or step == bounds[i + 1]):
            if d.main or cfg.fsdp:  # FSDP forward is collective: every rank evaluates the same items
                record = evaluate(model, eval_items, cfg, phase, data.micro, d.device)
                log.write({"step": step, "phase": i + 1, "split": "eval", **record})
            _barrier(d)
        if step % cfg.save_every == 0 and step < total:
            save_checkpoint(run, step, i, model, optimizer, scheduler, collator, cfg, d)
    if bar is not None:
        bar.close()
    log.close()
    final = run / FINAL
    weights, _ = full_state(model, optimizer, d) if cfg.fsdp else (None, None)
    if d.main:
        with atomic_path(final) as tmp:
            write_model(model, tmp, weights)
    _barrier(d)
    return final


# ------------------------------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, metavar="NAME|FILE",
                        help="bundled recipe name (" + ", ".join(recipe_names()) + ") or a TOML file")
    parser.add_argument("--data", metavar="DIR", help="prepared folder (`bertwwm prepare`) of the first phase")
    parser.add_argument("--data-512", metavar="DIR", help="prepared folder of the phases marked data_512")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder: checkpoints, logs, final/")
    parser.add_argument("--init", metavar="MODEL",
                        help="start from a model: local folder, zoo name, hub id, TF checkpoint, or 'random'")
    parser.add_argument("--preset", help="model shape for random init: tiny, small, base, large")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--max-steps", type=int, metavar="N", help="total steps (phases scaled in proportion)")
    parser.add_argument("--save-every", type=int, metavar="N")
    parser.add_argument("--keep-last", type=int, metavar="K")
    parser.add_argument("--batch-size", type=int, metavar="B", help="global batch of every phase")
    parser.add_argument("--grad-accum", type=int, metavar="N")
    parser.add_argument("--lr", type=float, metavar="X")
    parser.add_argument("--optimizer", choices=("adamw", "lamb"))
    parser.add_argument("--warmup-steps", type=int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="S")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    parser.add_argument("--fsdp", action=argparse.BooleanOptionalAction, default=None,
                        help="shard the model over the torchrun processes (FSDP2) instead of replicating it (DDP)")
    parser.add_argument("--nsp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--clip-grad", type=float, metavar="X")
    parser.add_argument("--eval-every", type=int, metavar="N")
    parser.add_argument("--log-every", type=int, metavar="N")
    parser.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override any recipe value, e.g. --set optim.warmup_ratio=0.01 "
                             "--set phases.1.batch_size=256 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    recipe, where = load_recipe(args.recipe)
    apply_set(recipe, parse_set(args.set))
    overrides = dict(out=args.out, data=args.data, data_512=args.data_512, init=args.init, preset=args.preset,
                     save_every=args.save_every, keep_last=args.keep_last, grad_accum=args.grad_accum,
                     lr=args.lr, optimizer=args.optimizer, warmup_steps=args.warmup_steps, seed=args.seed,
                     bf16=args.bf16, compile=args.compile, fsdp=args.fsdp, nsp=args.nsp, clip_grad=args.clip_grad,
                     eval_every=args.eval_every, log_every=args.log_every, threads=args.threads,
                     resume=args.resume or None, progress=not args.no_progress)
    cfg = config_from_recipe(recipe, where, **overrides)
    if args.batch_size is not None:
        for p in cfg.phases:
            p.batch_size = args.batch_size
    if args.max_steps is not None:
        scale_steps(cfg, args.max_steps)
    validate(cfg, where)
    if cfg.data is None and any(p.data == "data" for p in cfg.phases):
        raise UserError("--data DIR is required (a folder written by `bertwwm prepare`)")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    final = pretrain(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final model: {final}", file=sys.stderr)
    return 0

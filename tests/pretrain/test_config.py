"""The pretraining schema (bertwwm.pretrain.config): every bundled recipe fits it, every field declares its
place once, unknown keys are errors naming the file, bad values give the same one-line errors as before,
and the flags of `bertwwm pretrain` derived from it are the ones the command always had."""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from importlib import resources

import pytest

from bertwwm.core.errors import UserError
from bertwwm.pretrain import (SECTIONS, TRAJECTORY_FIELDS, Phase, PretrainConfig, add_arguments, config_from_recipe,
                              load_recipe, recipe_names)
from bertwwm.pretrain.config import PHASES, RUN, TOP, TOP_KEYS, settings


def _raw(name: str) -> dict:
    path = resources.files("bertwwm") / "recipes" / f"{name}.toml"
    return tomllib.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", recipe_names())
def test_every_bundled_recipe_loads_and_validates(name):
    cfg = config_from_recipe(*load_recipe(name))
    assert isinstance(cfg, PretrainConfig) and cfg.recipe == name and cfg.phases
    cfg.validate()  # again, as pretrain() does


@pytest.mark.parametrize("name", recipe_names())
def test_every_key_of_every_recipe_is_a_schema_field(name):
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    phase_fields = {f.name for f in dataclasses.fields(Phase)}
    for key, value in _raw(name).items():
        if key in TOP_KEYS:
            assert key in fields
        else:
            assert key in SECTIONS, f"{name}: [{key}]"
            for k in value:
                assert SECTIONS[key].get(k) in fields, f"{name}: {key}.{k}"
    for table in _raw(name)["phases"]:
        assert set(table) <= phase_fields, name


def test_every_field_declares_its_section_and_help():
    for cls, sections in ((PretrainConfig, {RUN, TOP, *SECTIONS}), (Phase, {PHASES})):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("section") in sections, f"{cls.__name__}.{f.name}"
            assert isinstance(f.metadata.get("help"), str) and f.metadata["help"], f"{cls.__name__}.{f.name}"
    assert [s.name for s in settings(PretrainConfig)] == [f.name for f in dataclasses.fields(PretrainConfig)]


def test_sections_and_trajectory_are_those_run_folders_were_written_with():
    """run_config.json and checkpoints of existing runs hold these keys; --resume compares the trajectory."""
    assert SECTIONS == {
        "model": {"init": "init", "preset": "preset", "nsp": "nsp", "dropout": "dropout",
                  "output_bias": "output_bias", "decoder_vocab": "decoder_vocab", "teacher": "teacher",
                  "distill_temperature": "distill_temperature", "distill_weight": "distill_weight",
                  "head_warmup_steps": "head_warmup_steps"},
        "masking": {"policy": "policy", "mask_prob": "mask_prob", "decide_per": "decide_per",
                    "data_masking": "data_masking"},
        "optim": {"name": "optimizer", "lr": "lr", "warmup_ratio": "warmup_ratio", "warmup_steps": "warmup_steps",
                  "weight_decay": "weight_decay", "beta1": "beta1", "beta2": "beta2", "eps": "eps",
                  "clip_grad": "clip_grad"},
        "train": {k: k for k in ("seed", "grad_accum", "bf16", "compile", "fsdp", "save_every", "keep_last",
                                 "eval_every", "eval_instances", "eval_mask_prob", "log_every", "threads",
                                 "time_budget")},
    }
    assert TRAJECTORY_FIELDS == (
        "init", "preset", "nsp", "dropout", "output_bias", "decoder_vocab", "policy", "mask_prob", "decide_per", "optimizer", "lr", "warmup_ratio",
        "warmup_steps", "weight_decay", "beta1", "beta2", "eps", "clip_grad", "phases", "seed", "grad_accum", "bf16",
        "fsdp", "eval_instances", "time_budget", "teacher", "distill_temperature", "distill_weight",
        "head_warmup_steps")
    saved = dataclasses.asdict(PretrainConfig())
    assert set(saved) == {
        "out", "data", "data_512", "recipe", "description", "init", "preset", "nsp", "dropout", "output_bias",
        "decoder_vocab", "policy",
        "mask_prob", "decide_per", "data_masking", "optimizer", "lr", "warmup_ratio", "warmup_steps",
        "weight_decay", "beta1", "beta2", "eps", "clip_grad", "phases", "seed", "grad_accum", "bf16", "compile",
        "fsdp", "save_every", "keep_last", "eval_every", "eval_instances", "eval_mask_prob", "heldout",
        "time_budget", "log_every", "threads", "resume", "progress", "teacher", "distill_temperature",
        "distill_weight", "head_warmup_steps", "verify_data"}
    assert set(saved["phases"][0]) == {"max_seq_length", "batch_size", "steps", "max_predictions", "data", "lr",
                                       "batch_size_start"}


@pytest.mark.parametrize("name", recipe_names())
def test_an_unknown_key_is_an_error_naming_the_file(tmp_path, name):
    original = (resources.files("bertwwm") / "recipes" / f"{name}.toml").read_text(encoding="utf-8")
    tables = [f"[{section}]" for section in SECTIONS if f"[{section}]\n" in original] + ["[[phases]]"]
    cases = [("epochs = 3\n" + original, "unknown recipe section 'epochs'; known: description, phases, model")]
    for table in tables:
        key = table.strip("[]")
        message = "unknown key(s) typo in phases[0]" if key == "phases" else f"unknown key {key}.typo; known: "
        cases.append((original.replace(f"{table}\n", f"{table}\ntypo = 1\n", 1), message))
    assert len(cases) >= 3
    for text, message in cases:
        path = tmp_path / f"{name}-mine.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(UserError) as e:
            config_from_recipe(*load_recipe(path))
        assert message in e.value.message and e.value.path == str(path)
        assert str(e.value).startswith(f"{path}: ")


@pytest.mark.parametrize("values, message", [
    ({"lr": -1}, "optim.lr must be positive, got -1"),
    ({"preset": "huge"}, "model.preset must be one of tiny, small, base, large, got 'huge'"),
    ({"optimizer": "sgd"}, "optim.name must be one of adamw, lamb, got 'sgd'"),
    ({"nsp": "yes"}, "model.nsp must be bool, got 'yes'"),
    ({"dropout": 1.0}, "model.dropout must be in [0, 1), got 1.0"),
    ({"warmup_ratio": 2}, "optim.warmup_ratio must be in [0, 1], got 2"),
    ({"data_masking": "some"}, "masking.data_masking must be static, dynamic or any, got 'some'"),
    ({"grad_accum": 0}, "train.grad_accum must be positive, got 0"),
    ({"save_every": 1.0}, "train.save_every must be int, got 1.0"),
    ({"eval_mask_prob": 1.5}, "train.eval_mask_prob must be in (0, 1], got 1.5"),
    ({"time_budget": "soon"}, "cannot read the duration 'soon'"),
    ({"distill_weight": -1}, "model.distill_weight must be >= 0, got -1"),
    ({"head_warmup_steps": -2}, "model.head_warmup_steps must be >= 0, got -2"),
    ({"phases": [Phase(max_seq_length=1024)]}, "phases[0].max_seq_length 1024 exceeds BERT's 512 positions"),
    ({"phases": [Phase(data="x")]}, "phases[0].data must be \"data\" or \"data_512\", got 'x'"),
    ({"phases": [Phase(batch_size=10)], "grad_accum": 4}, "phases[0].batch_size 10 is not a multiple of grad_accum 4"),
])
def test_constructing_a_config_validates_it(values, message):
    with pytest.raises(UserError) as e:
        PretrainConfig(**values, where="mine.toml")
    assert str(e.value).startswith("mine.toml: ") and message in e.value.message
    with pytest.raises(UserError, match="^config: "):  # what errors name without a file
        PretrainConfig(**values)


def test_validate_checks_a_changed_config_and_reads_durations():
    cfg = PretrainConfig(time_budget="1h30m")
    assert cfg.time_budget == 5400.0
    cfg.phases[0].steps = 0
    with pytest.raises(UserError, match="phases\\[0\\].steps must be positive"):
        cfg.validate()


# `bertwwm pretrain --help` before its flags came from the schema: (flags, action, type, metavar, choices,
# required, help), in order. The help text and order are the command's interface: they must not drift.
FLAGS = [
    (["--recipe"], "store", None, "NAME|FILE", None, True,
     "bundled recipe name (" + ", ".join(recipe_names()) + ") or a TOML file"),
    (["--data"], "store", None, "DIR", None, False, "prepared folder (`bertwwm prepare`) of the first phase"),
    (["--data-512"], "store", None, "DIR", None, False, "prepared folder of the phases marked data_512"),
    (["--out"], "store", None, "RUN", None, True, "run folder: checkpoints, logs, final/"),
    (["--init"], "store", None, "MODEL", None, False,
     "start from a model: local folder, zoo name, hub id, TF checkpoint, or 'random'"),
    (["--preset"], "store", None, None, None, False, "model shape for random init: tiny, small, base, large"),
    (["--resume"], "store_true", None, None, None, False, "continue from the run's latest checkpoint"),
    (["--verify"], "store_true", None, None, None, False,
     "check the sha256 of every data file against its manifest before training (by default only files not "
     "verified before are hashed)"),
    (["--max-steps"], "store", int, "N", None, False, "total steps (phases scaled in proportion)"),
    (["--time-budget"], "store", None, "DURATION", None, False,
     "train for this much wall time (90s, 10m, 2h, 1h30m): the learning-rate schedule, batch ramp and phases "
     "run over time instead of steps, and final/ is saved when it is spent (resumable)"),
    (["--heldout"], "store", None, "DIR", None, False,
     "prepared folder of held-out text to evaluate MLM on (default: the data's last eval_instances instances, "
     "which are never trained on)"),
    (["--save-every"], "store", int, "N", None, False, None),
    (["--keep-last"], "store", int, "K", None, False, None),
    (["--batch-size"], "store", int, "B", None, False, "global batch of every phase"),
    (["--grad-accum"], "store", int, "N", None, False, None),
    (["--lr"], "store", float, "X", None, False, None),
    (["--optimizer"], "store", None, None, ("adamw", "lamb"), False, None),
    (["--warmup-steps"], "store", int, "N", None, False, None),
    (["--seed"], "store", int, "S", None, False, None),
    (["--bf16", "--no-bf16"], "boolean", None, None, None, False, "bf16 autocast"),
    (["--compile", "--no-compile"], "boolean", None, None, None, False, "torch.compile"),
    (["--fsdp", "--no-fsdp"], "boolean", None, None, None, False,
     "shard the model over the torchrun processes (FSDP2) instead of replicating it (DDP)"),
    (["--nsp", "--no-nsp"], "boolean", None, None, None, False, None),
    (["--clip-grad"], "store", float, "X", None, False, None),
    (["--eval-every"], "store", int, "N", None, False, None),
    (["--log-every"], "store", int, "N", None, False, None),
    (["--threads"], "store", int, "N", None, False, "torch intra-op threads"),
    (["--set"], "append", None, "SECTION.KEY=VALUE", None, False,
     "override any recipe value, e.g. --set optim.warmup_ratio=0.01 --set phases.1.batch_size=256 (repeatable)"),
    (["--no-progress"], "store_false", None, None, None, False, "no progress bar"),
    (["--teacher"], "store", None, "MODEL", None, False,
     "distil: add a KL loss towards this model's MLM distributions at the masked positions"),
    (["--distill-temperature"], "store", float, "T", None, False, "softmax temperature (1)"),
    (["--distill-weight"], "store", float, "W", None, False, "weight of the T^2-scaled KL term (1)"),
    (["--head-warmup-steps"], "store", int, "N", None, False,
     "train only the MLM (and NSP) head for the first N steps (a fresh or missing head)"),
]
KINDS = {argparse._StoreAction: "store", argparse._StoreTrueAction: "store_true",
         argparse._StoreFalseAction: "store_false", argparse._AppendAction: "append",
         argparse.BooleanOptionalAction: "boolean"}


def test_the_flags_derived_from_the_schema_are_the_commands_flags():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    got = [(a.option_strings, KINDS[type(a)], a.type, a.metavar, a.choices, a.required, a.help)
           for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert got == FLAGS
    # every flag of a setting leaves the recipe's value alone unless given
    args = parser.parse_args(["--recipe", "tiny-cpu", "--out", "run"])
    flagged = [s.name for s in settings(PretrainConfig) if s.flag is not None and s.name != "out"]
    assert flagged and all(getattr(args, name) is None for name in flagged)
    args = parser.parse_args(["--recipe", "tiny-cpu", "--out", "run", "--no-progress", "--verify", "--no-nsp"])
    assert (args.progress, args.verify_data, args.nsp) == (False, True, False)

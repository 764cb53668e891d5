"""The pretraining configuration: one schema for recipes, run_config.json, `--resume` and the command line.

Every setting is declared once, as a field of `PretrainConfig` (or of `Phase`) made by `setting(...)`: its
recipe section and key, whether it changes the training trajectory (a resumed run must agree on it), what
its value must be, what it means, and its `bertwwm pretrain` flag if it has one. The recipe sections
(SECTIONS), the trajectory (TRAJECTORY_FIELDS), the validation and the flags are read off those fields, so
a new hyper-parameter is one field.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

from bertwwm.core.errors import UserError

RUN = "run"      # not in recipes: the command line's (or the API caller's) choice for this run
TOP = "top"      # a key at the top of a recipe file, outside the tables: description, [[phases]]
PHASES = "phases"  # a key of the [[phases]] tables (the fields of Phase)


# ------------------------------------------------------------------------------------------------ schema

@dataclass(frozen=True)
class Check:
    """What a value must be: of `kinds` (bool is not an int here), positive, None allowed, and `test`, which
    the error message words as `must` ("be in [0, 1)"; a callable when the choices are read lazily)."""

    kinds: tuple[type, ...] = ()
    positive: bool = False
    optional: bool = False
    test: Callable[[Any], bool] | None = None
    must: str | Callable[[], str] = ""

    def __call__(self, name: str, value: Any, where: str) -> None:
        if value is None and self.optional:
            return
        if self.kinds:
            if isinstance(value, bool) and bool not in self.kinds or not isinstance(value, self.kinds):
                raise UserError(f"{name} must be {' or '.join(k.__name__ for k in self.kinds)}, got {value!r}",
                                where)
            if self.positive and not value > 0:
                raise UserError(f"{name} must be positive, got {value!r}", where)
        if self.test is not None and not self.test(value):
            must = self.must() if callable(self.must) else self.must
            raise UserError(f"{name} must {must}, got {value!r}", where)


def number(**check: Any) -> Check:
    return Check((int, float), **check)


def integer(**check: Any) -> Check:
    return Check((int,), **check)


def text(**check: Any) -> Check:
    return Check((str,), **check)


def one_of(choices: Sequence[str] | Callable[[], Sequence[str]], must: str | None = None) -> Check:
    """A value from `choices` (a callable for lists that live in modules too heavy to import up front)."""
    def names() -> tuple:
        return tuple(choices() if callable(choices) else choices)

    return Check(test=lambda value: value in names(), must=must or (lambda: f"be one of {', '.join(names())}"))


@dataclass(frozen=True)
class Flag:
    """A setting's `bertwwm pretrain` flag: its name and argparse's keywords (the dest is the field's name)."""

    name: str
    options: dict = field(default_factory=dict)


def flag(name: str, **options: Any) -> Flag:
    return Flag(name, options)


BOOLEAN = argparse.BooleanOptionalAction  # --bf16 / --no-bf16; None (the recipe's) when neither is given


def setting(default: Any = dataclasses.MISSING, *, section: str, help: str, key: str | None = None,
            trajectory: bool = False, check: Check | None = None, flag: Flag | None = None,
            parse: Callable[..., Any] | None = None, factory: Callable[[], Any] | None = None):
    """A dataclass field with its place in the schema. `key`: its name in the recipe when not the field's;
    `parse(value, where)`: turns a string of the recipe or the flag into the value (durations)."""
    metadata = {"section": section, "key": key, "trajectory": trajectory, "check": check, "help": help,
                "flag": flag, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    """One field as the schema sees it."""

    name: str
    section: str
    key: str
    trajectory: bool
    help: str
    check: Check | None
    flag: Flag | None
    parse: Callable[..., Any] | None


@functools.cache
def settings(cls: type) -> tuple[Setting, ...]:
    """The settings of `PretrainConfig` or `Phase`, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        out.append(Setting(f.name, m["section"], m["key"] or f.name, m["trajectory"], m["help"], m["check"],
                           m["flag"], m["parse"]))
    return tuple(out)


# ----------------------------------------------------------------------------------------------- durations

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float | int, where: str | None = None) -> float:
    """'90s', '10m', '2h', '1h30m' or a plain number of seconds -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    raw = str(text).strip().lower()
    try:
        return float(raw)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", raw)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", raw).strip():
        raise UserError(f"cannot read the duration {text!r}; write e.g. 90s, 10m, 2h or 1h30m", where)
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def _presets() -> Sequence[str]:
    from bertwwm.modeling.presets import PRESETS

    return PRESETS


def _optimizers() -> Sequence[str]:
    from bertwwm.modeling.optim import OPTIMIZERS

    return OPTIMIZERS


# ------------------------------------------------------------------------------------------------ config

@dataclass
class Phase:
    """One stage of a length schedule: its data folder, length, global batch and number of steps."""

    max_seq_length: int = setting(128, section=PHASES, check=integer(positive=True),
                                  help="tokens per sequence (at most 512; the data's prepared length or more)")
    batch_size: int = setting(256, section=PHASES, check=integer(positive=True),
                              help="sequences per optimizer step, over all ranks and accumulation")
    steps: int = setting(1000, section=PHASES, check=integer(positive=True),
                         help="optimizer steps (under a time budget: the phase's share of the time)")
    max_predictions: int = setting(20, section=PHASES, check=integer(positive=True),
                                   help="masked tokens per sequence at most (dynamic masking)")
    data: str = setting("data", section=PHASES, check=one_of(("data", "data_512"), 'be "data" or "data_512"'),
                        help='which folder: "data" (--data) or "data_512" (--data-512)')
    lr: float | None = setting(None, section=PHASES, check=number(optional=True, positive=True),
                               help="peak learning rate of this phase (default: optim lr)")
    batch_size_start: int | None = setting(None, section=PHASES, check=integer(optional=True, positive=True),
                                           help="ramp the batch from here up to batch_size over the phase's "
                                                "first half")

    def validate(self, name: str, grad_accum: int, where: str) -> None:
        """`name`: how errors call this phase ("phases[1]")."""
        for s in settings(Phase):
            s.check(f"{name}.{s.key}", getattr(self, s.name), where)
        if self.max_seq_length > 512:
            raise UserError(f"{name}.max_seq_length {self.max_seq_length} exceeds BERT's 512 positions", where)
        for key in ("batch_size_start", "batch_size"):
            value = getattr(self, key)
            if value is not None and value % grad_accum:
                raise UserError(f"{name}.{key} {value} is not a multiple of grad_accum {grad_accum}", where)


@dataclass
class PretrainConfig:
    """A pretraining run. Constructing one validates it (errors name `where`, e.g. the recipe file);
    `validate()` checks it again after a caller changed it."""

    out: str = setting("run", section=RUN, help="run folder: checkpoints, logs, final/",
                       flag=flag("--out", required=True, metavar="RUN", help="run folder: checkpoints, logs, final/"))
    data: str | None = setting(None, section=RUN, help='prepared folder of the phases marked data = "data"',
                               flag=flag("--data", metavar="DIR",
                                         help="prepared folder (`bertwwm prepare`) of the first phase"))
    data_512: str | None = setting(None, section=RUN, help='prepared folder of the phases marked data = "data_512"',
                                   flag=flag("--data-512", metavar="DIR",
                                             help="prepared folder of the phases marked data_512"))
    recipe: str = setting("custom", section=RUN, help="the recipe's name: its file's stem ('custom' for a dict)")
    description: str = setting("", section=TOP, help="what the recipe trains, in one line")
    # [model]
    init: str = setting("random", section="model", trajectory=True, check=text(),
                        help='"random", a local folder, zoo name, hub id or TF-1 checkpoint',
                        flag=flag("--init", metavar="MODEL", help="start from a model: local folder, zoo name, hub "
                                                                  "id, TF checkpoint, or 'random'"))
    preset: str = setting("base", section="model", trajectory=True, check=one_of(_presets),
                          help="model shape when init is random: tiny, small, base, large",
                          flag=flag("--preset", help="model shape for random init: tiny, small, base, large"))
    nsp: bool = setting(True, section="model", trajectory=True, check=Check((bool,)),
                        help="train next-sentence prediction too (the data needs NSP labels)",
                        flag=flag("--nsp", action=BOOLEAN, default=None))
    dropout: float | None = setting(None, section="model", trajectory=True,
                                    check=number(optional=True, test=lambda v: 0 <= v < 1, must="be in [0, 1)"),
                                    help="dropout while pretraining (None: the config's, 0.1); the folders a run "
                                         "writes keep the model's own rates")
    output_bias: str = setting("zero", section="model", trajectory=True,
                               check=one_of(("zero", "unigram"), 'be "zero" or "unigram"'),
                               help='how the MLM output bias starts in a model trained from scratch: "zero" '
                                    '(BERT) or "unigram" (the training data\'s log frequencies, which keeps the '
                                    'embeddings of rare characters from degenerating; docs/pretrain-small-budget.md)'
                                    '; a model given by init keeps its own')
    decoder_vocab: str = setting("full", section="model", trajectory=True,
                                 check=one_of(("full", "corpus"), 'be "full" or "corpus"'),
                                 help='which tokens the MLM softmax scores while training: "full" (all of the '
                                      'vocabulary, as BERT) or "corpus" (only those the phase\'s training text '
                                      'contains: same model and format, ~2x the steps per second for the tiny '
                                      'model on a small corpus; held-out evaluation scores the full vocabulary)')
    # [masking]: dynamic masking happens in the collator; static masks come from the data
    policy: str = setting("wwm", section="masking", trajectory=True,
                          help="which tokens are masked together: wwm, char, ngram or macbert")
    mask_prob: float = setting(0.15, section="masking", trajectory=True, check=number(positive=True),
                               help="share of the tokens masked")
    decide_per: str = setting("token", section="masking", trajectory=True,
                              help="whether [MASK] / random / kept is decided per token or per word")
    data_masking: str = setting("any", section="masking",
                                check=one_of(("static", "dynamic", "any"), "be static, dynamic or any"),
                                help="what the recipe expects of the data: static, dynamic or any")
    # [optim]
    optimizer: str = setting("adamw", section="optim", key="name", trajectory=True, check=one_of(_optimizers),
                             help="adamw or lamb", flag=flag("--optimizer", choices=("adamw", "lamb")))
    lr: float = setting(1e-4, section="optim", trajectory=True, check=number(positive=True),
                        help="peak learning rate (a phase's lr overrides it)",
                        flag=flag("--lr", type=float, metavar="X"))
    warmup_ratio: float = setting(0.1, section="optim", trajectory=True,
                                  check=number(test=lambda v: 0 <= v <= 1, must="be in [0, 1]"),
                                  help="warm-up as a share of each phase")
    warmup_steps: int | None = setting(None, section="optim", trajectory=True, check=integer(optional=True),
                                       help="warm-up steps of each phase (instead of warmup_ratio)",
                                       flag=flag("--warmup-steps", type=int, metavar="N"))
    weight_decay: float = setting(0.01, section="optim", trajectory=True, check=number(),
                                  help="decoupled weight decay (never on biases and LayerNorm)")
    beta1: float = setting(0.9, section="optim", trajectory=True, help="Adam's first-moment decay")
    beta2: float = setting(0.999, section="optim", trajectory=True, help="Adam's second-moment decay")
    eps: float = setting(1e-6, section="optim", trajectory=True, help="Adam's epsilon")
    clip_grad: float | None = setting(1.0, section="optim", trajectory=True,
                                      check=number(optional=True, positive=True),
                                      help="clip the gradient's global norm to this (None: no clipping)",
                                      flag=flag("--clip-grad", type=float, metavar="X"))
    # [[phases]]
    phases: list[Phase] = setting(section=TOP, trajectory=True, factory=lambda: [Phase()],
                                  help="the length schedule, one [[phases]] table per phase, run in order")
    # [train]
    seed: int = setting(12345, section="train", trajectory=True, check=integer(),
                        help="seed of the initialisation, the data order and the masks",
                        flag=flag("--seed", type=int, metavar="S"))
    grad_accum: int = setting(1, section="train", trajectory=True, check=integer(positive=True),
                              help="micro-batches per optimizer step",
                              flag=flag("--grad-accum", type=int, metavar="N"))
    bf16: bool = setting(False, section="train", trajectory=True, help="bf16 autocast",
                         flag=flag("--bf16", action=BOOLEAN, default=None, help="bf16 autocast"))
    compile: bool = setting(False, section="train", help="torch.compile the model",
                            flag=flag("--compile", action=BOOLEAN, default=None, help="torch.compile"))
    fsdp: bool = setting(False, section="train", trajectory=True,
                         help="shard weights, gradients and optimizer over the processes (FSDP2) instead of DDP",
                         flag=flag("--fsdp", action=BOOLEAN, default=None,
                                   help="shard the model over the torchrun processes (FSDP2) instead of "
                                        "replicating it (DDP)"))
    save_every: int = setting(1000, section="train", check=integer(positive=True), help="steps between checkpoints",
                              flag=flag("--save-every", type=int, metavar="N"))
    keep_last: int = setting(3, section="train", check=integer(positive=True), help="checkpoints kept",
                             flag=flag("--keep-last", type=int, metavar="K"))
    eval_every: int = setting(1000, section="train", check=integer(positive=True),
                              help="steps between held-out evaluations",
                              flag=flag("--eval-every", type=int, metavar="N"))
    eval_instances: int = setting(256, section="train", trajectory=True, check=integer(),
                                  help="held out from the end of each phase's data (or taken from `heldout`)")
    eval_mask_prob: float = setting(0.15, section="train",
                                    check=number(positive=True, test=lambda v: v <= 1, must="be in (0, 1]"),
                                    help="held-out masks at BERT's rate, whatever the training rate")
    heldout: str | None = setting(None, section=RUN,
                                  help="a prepared folder of held-out text to evaluate on (default: the data's tail)",
                                  flag=flag("--heldout", metavar="DIR",
                                            help="prepared folder of held-out text to evaluate MLM on (default: "
                                                 "the data's last eval_instances instances, which are never "
                                                 "trained on)"))
    log_every: int = setting(10, section="train", check=integer(positive=True), help="steps between log records",
                             flag=flag("--log-every", type=int, metavar="N"))
    threads: int | None = setting(None, section="train", check=integer(optional=True, positive=True),
                                  help="torch intra-op threads (None: torch's choice)",
                                  flag=flag("--threads", type=int, metavar="N", help="torch intra-op threads"))
    time_budget: float | None = setting(None, section="train", trajectory=True, parse=parse_duration,
                                        check=number(optional=True, positive=True),
                                        help="seconds of wall time (or '10m', '2h'): the schedule runs over time "
                                             "and the run stops then",
                                        flag=flag("--time-budget", metavar="DURATION",
                                                  help="train for this much wall time (90s, 10m, 2h, 1h30m): the "
                                                       "learning-rate schedule, batch ramp and phases run over "
                                                       "time instead of steps, and final/ is saved when it is "
                                                       "spent (resumable)"))
    resume: bool = setting(False, section=RUN, help="continue from the run's latest checkpoint",
                           flag=flag("--resume", action="store_true", default=None,
                                     help="continue from the run's latest checkpoint"))
    progress: bool = setting(True, section=RUN, help="show a progress bar (rank 0)",
                             flag=flag("--no-progress", action="store_false", default=None, help="no progress bar"))
    # [model], domain adaptation (issue 13)
    teacher: str | None = setting(None, section="model", trajectory=True, check=text(optional=True),
                                  help="distil from this model's MLM distributions at the masked positions",
                                  flag=flag("--teacher", metavar="MODEL",
                                            help="distil: add a KL loss towards this model's MLM distributions at "
                                                 "the masked positions"))
    distill_temperature: float = setting(1.0, section="model", trajectory=True, check=number(positive=True),
                                         help="softmax temperature of the distillation",
                                         flag=flag("--distill-temperature", type=float, metavar="T",
                                                   help="softmax temperature (1)"))
    distill_weight: float = setting(1.0, section="model", trajectory=True,
                                    check=number(test=lambda v: v >= 0, must="be >= 0"),
                                    help="loss = MLM + weight * T^2 * KL(teacher || student)",
                                    flag=flag("--distill-weight", type=float, metavar="W",
                                              help="weight of the T^2-scaled KL term (1)"))
    head_warmup_steps: int = setting(0, section="model", trajectory=True,
                                     check=integer(test=lambda v: v >= 0, must="be >= 0"),
                                     help="the first N steps train the MLM/NSP heads only",
                                     flag=flag("--head-warmup-steps", type=int, metavar="N",
                                               help="train only the MLM (and NSP) head for the first N steps (a "
                                                    "fresh or missing head)"))
    verify_data: bool = setting(False, section=RUN,
                                help="hash every data file (default: only files not verified before)",
                                flag=flag("--verify", action="store_true", default=None,
                                          help="check the sha256 of every data file against its manifest before "
                                               "training (by default only files not verified before are hashed)"))
    where: InitVar[str] = "config"  # what errors name: the recipe file the values came from

    def __post_init__(self, where: str) -> None:
        self.validate(where)

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def validate(self, where: str = "config") -> None:
        """Clear errors for bad values before any model is built."""
        for s in settings(PretrainConfig):
            value = getattr(self, s.name)
            if s.parse is not None and isinstance(value, str):
                value = s.parse(value, where)
                setattr(self, s.name, value)
            if s.check is not None:
                s.check(f"{s.section}.{s.key}", value, where)
        for i, phase in enumerate(self.phases):
            phase.validate(f"phases[{i}]", self.grad_accum, where)
        if self.fsdp and self.decoder_vocab == "corpus":  # FSDP shards the decoder's rows the head would gather
            raise UserError('model.decoder_vocab = "corpus" does not work with fsdp; use "full"', where)


def validate(cfg: PretrainConfig, where: str = "config") -> None:
    cfg.validate(where)


def _sections() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    for s in settings(PretrainConfig):
        if s.section not in (RUN, TOP):
            sections.setdefault(s.section, {})[s.key] = s.name
    return sections


# TOML table -> {key in the recipe: field of PretrainConfig}, in declaration order
SECTIONS: dict[str, dict[str, str]] = _sections()
# keys at the top of a recipe, outside the tables
TOP_KEYS: tuple[str, ...] = tuple(s.key for s in settings(PretrainConfig) if s.section == TOP)
# Values that change the training trajectory: a resumed run must agree with its checkpoint on them.
TRAJECTORY_FIELDS: tuple[str, ...] = tuple(s.name for s in settings(PretrainConfig) if s.trajectory)


def config_json(cfg: PretrainConfig) -> dict:
    """The config as run_config.json and checkpoints hold it."""
    return dataclasses.asdict(cfg)


def trajectory(cfg_dict: dict) -> dict:
    """The trajectory values of a config_json (a run's saved one, or today's). A setting added after the run
    was written is missing from it and takes its default, which is what that older version trained with."""
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig) if f.default is not dataclasses.MISSING}
    return {k: cfg_dict.get(k, defaults.get(k)) for k in TRAJECTORY_FIELDS}

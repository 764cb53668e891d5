"""Task heads: transformers' BERT classes, plus a thin CJRC head, and loading any BERT-layout checkpoint.

Every model is loaded with *Bert* classes, never Roberta*: HFL's RoBERTa-wwm checkpoints are BERT models
(BERT's architecture, token types and WordPiece vocab, trained with the RoBERTa recipe), and
RobertaModel would mis-read them (position ids offset by 2, no token-type embeddings, a BPE tokenizer) --
the trap of issues #52, #104 and #167 of the report's repository. `zoo.load_bert_config` reads even a
config that says "roberta" as a BertConfig.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertForQuestionAnswering
from transformers.modeling_outputs import ModelOutput

from bertwwm.core.errors import UserError
from bertwwm.tasks.mrc import ANSWER_CLASSES
from bertwwm.tasks.registry import Task
from bertwwm.text.tokens import VOCAB_SIZE

TASK_FILE = "bertwwm_task.json"  # written next to a fine-tuned model: which task and settings it was trained for


@dataclass
class CJRCOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    class_logits: torch.Tensor | None = None


class BertForCJRC(BertForQuestionAnswering):
    """BertForQuestionAnswering plus a span / YES / NO / unknown classifier on the [CLS] state."""

    def __init__(self, config):
        super().__init__(config)
        self.answer_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.answer_class = nn.Linear(config.hidden_size, len(ANSWER_CLASSES))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, start_positions=None,
                end_positions=None, answer_class=None, **kwargs) -> CJRCOutput:
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True,
                        **kwargs)
        seq = out[0]
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in self.qa_outputs(seq).split(1, dim=-1))
        class_logits = self.answer_class(self.answer_dropout(seq[:, 0]))
        loss = None
        if start_positions is not None and end_positions is not None and answer_class is not None:
            ce = nn.CrossEntropyLoss()
            # Non-span questions point at [CLS] (position 0), as Google's SQuAD 2 code does for no-answer.
            loss = (ce(start_logits, start_positions) + ce(end_logits, end_positions)) / 2 + ce(class_logits,
                                                                                                  answer_class)
        return CJRCOutput(loss=loss, start_logits=start_logits, end_logits=end_logits, class_logits=class_logits)


def head_class(task: Task) -> type:
    """The model class the task's registry entry names ("module:Class")."""
    module, _, name = task.head.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ValueError(f"task {task.name}: head {task.head!r} is not an importable class") from None


def load_pretrained(task: Task, ref: str):
    """(model, tokenizer) for fine-tuning `task` from any checkpoint reference zoo.resolve_model accepts."""
    from bertwwm.modeling import zoo

    path = zoo.resolve_model(ref)
    config = zoo.load_bert_config(path)
    if task.labels:  # a classifier: one logit per label, its names kept in the config
        config.num_labels = len(task.labels)
        config.id2label = dict(enumerate(task.labels))
        config.label2id = {label: i for i, label in enumerate(task.labels)}
    else:  # span extraction: start and end logits
        config.num_labels = 2
    config.architectures = [head_class(task).__name__]
    model = _quiet_from_pretrained(head_class(task), path, config)
    return model, load_tokenizer(path)


def _quiet_from_pretrained(cls, path: str, config):
    """from_pretrained without transformers' per-load report, failing loudly when the ENCODER is incomplete.

    A fresh task head is expected to be missing; encoder weights missing mean the checkpoint is not a BERT
    model in the layout we read (e.g. "roberta."-prefixed weights), and fine-tuning it would silently start
    from random weights.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = cls.from_pretrained(path, config=config, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(level)
    # The pooler is absent from masked-LM-only checkpoints and is trained with the head, as in transformers.
    missing = [k for k in info.get("missing_keys", [])
               if (k.startswith("bert.") and not k.startswith("bert.pooler.")) or "." not in k]
    if missing:
        raise UserError(f"{len(missing)} encoder weights are missing from the checkpoint (e.g. {missing[0]}); "
                        "it is not a BERT model in transformers' layout", path)
    return model


def load_finetuned(folder: str | Path, task: Task | None = None):
    """(model, tokenizer, settings) of a folder written by `bertwwm finetune` (its best-model folder)."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError("no such local folder (a folder written by `bertwwm finetune`: RUN/best-model)", folder)
    info_path = folder / TASK_FILE
    if not info_path.is_file():
        raise UserError(f"not a fine-tuned model folder (no {TASK_FILE}; fine-tune with `bertwwm finetune`)",
                        folder)
    try:
        settings = json.loads(info_path.read_text(encoding="utf-8"))
        settings["task"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the fine-tuning settings ({type(e).__name__}: {e})", info_path) from None
    from bertwwm.tasks.registry import get_task

    trained_for = get_task(settings["task"])
    if task is not None and task.name != trained_for.name:
        raise UserError(f"this model was fine-tuned for {trained_for.name}, not {task.name}", folder)
    from bertwwm.modeling import zoo
    from bertwwm.core.integrity import check_model_folder

    check_model_folder(folder)
    config = zoo.load_bert_config(str(folder))
    model = _quiet_from_pretrained(head_class(trained_for), str(folder), config)
    return model, load_tokenizer(str(folder)), settings


def load_tokenizer(path: str):
    """The model's own fast tokenizer, checked to be the 21,128-entry Chinese vocab.

    transformers 5 builds a 5-token vocabulary from a bare vocab.txt without complaint, so a model whose
    tokenizer does not come out at 21,128 entries is given one built from its vocab.txt (local folder, or
    the hub repository's vocab.txt for hub ids).
    """
    from transformers import AutoTokenizer

    from bertwwm.text.tokens import chinese_tokenizer

    error = None
    try:
        tok = AutoTokenizer.from_pretrained(path)
        if len(tok) == VOCAB_SIZE and getattr(tok, "is_fast", False):
            return tok
        error = f"its tokenizer has {len(tok)} entries, expected the {VOCAB_SIZE}-entry Chinese BERT vocab"
    except (OSError, ValueError) as e:
        error = f"no usable tokenizer ({str(e).splitlines()[0][:200]})"
    vocab = Path(path) / "vocab.txt"
    if not vocab.is_file() and not Path(path).exists():
        try:
            from huggingface_hub import hf_hub_download

            vocab = Path(hf_hub_download(path, "vocab.txt"))
        except Exception as e:  # offline, unknown repo, ...: report why in one line
            raise UserError(f"{error}; and could not fetch vocab.txt from the hub ({type(e).__name__})", path) from None
    if vocab.is_file():
        return chinese_tokenizer(str(vocab))
    raise UserError(error, path)

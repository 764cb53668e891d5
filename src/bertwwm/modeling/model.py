"""BERT models for pretraining: transformers' `BertForPreTraining` / `BertForMaskedLM`, plus a training
wrapper whose MLM head projects onto the vocabulary only at the masked positions.

A sequence of 128 tokens has ~20 masked positions, so the full head spends ~85% of its
(hidden x 21,128) matmul on rows the loss ignores. `PretrainingModel` gathers the hidden states at the
masked positions first and runs the *same* `cls.predictions` module (transform + tied decoder) on those
rows only. It holds a plain transformers model, so parameter names, weight tying and saved folders are
exactly transformers' own: `AutoModelForMaskedLM.from_pretrained(folder)` gives identical logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bertwwm.core.errors import UserError
from bertwwm.text.tokens import IGNORE_INDEX, VOCAB_SIZE

from bertwwm.modeling.presets import PRESETS, bert_config  # noqa: E402,F401  (re-exported: the public names)


def build_model(config, *, nsp: bool):
    """A randomly initialised transformers model: `BertForPreTraining` with NSP, else `BertForMaskedLM`."""
    from transformers import BertForMaskedLM, BertForPreTraining

    return (BertForPreTraining if nsp else BertForMaskedLM)(config)


def set_output_bias(hf_model, log_probs) -> None:
    """Start the MLM head's output bias at the corpus's log unigram probabilities (only for training from scratch).

    Why: with a zero bias every one of the 21,128 tokens starts near probability 1/21,128, and the softmax
    pushes all of them down at every step. Adam turns those tiny but consistent gradients into full-size
    steps, and the decoder is tied to the input embeddings, so on a small corpus the rows of the ~20,000
    characters it rarely or never shows all drift one way: after 3,000 tiny-model steps their mean pairwise
    cosine was 0.91 and their norm 5x the initial one, which erased the random distinctions a fine-tuned
    model starts from (it then fine-tuned worse than a random init). Starting the bias at the unigram
    distribution makes those probabilities already tiny, so the drift never starts (mean cosine 0.09), and the
    model begins on the unigram plateau instead of climbing down to it. docs/pretrain-small-budget.md.
    """
    import torch

    bias = hf_model.get_output_embeddings().bias if hasattr(hf_model, "get_output_embeddings") else None
    if bias is None or bias.shape[0] != len(log_probs):
        raise UserError(f"cannot set the output bias: the model has {0 if bias is None else bias.shape[0]} "
                        f"output tokens and the unigram table {len(log_probs)}")
    with torch.no_grad():
        bias.copy_(torch.as_tensor(log_probs, dtype=bias.dtype))


def load_model(ref: str | Path, *, nsp: bool, dropout: float | None = None):
    """Load a model to continue pretraining from: a local folder, zoo name, hub id or TF-1 checkpoint.

    The zoo resolves names and converts TF checkpoints; RoBERTa-wwm configs are read as BERT. Heads the
    checkpoint lacks (e.g. NSP in a RoBERTa-wwm release) are freshly initialised by transformers.
    """
    from transformers import BertForMaskedLM, BertForPreTraining

    from bertwwm.modeling import zoo

    path = zoo.resolve_model(str(ref))
    config = zoo.load_bert_config(str(ref))
    if dropout is not None:
        config.hidden_dropout_prob = dropout
        config.attention_probs_dropout_prob = dropout
    if config.vocab_size != VOCAB_SIZE and not _extended_vocab_matches(ref, config.vocab_size):
        raise UserError(f"model has a {config.vocab_size}-entry vocabulary; bertwwm pretrains with the "
                        f"{VOCAB_SIZE}-entry Chinese BERT vocabulary or an extension of it (`bertwwm vocab "
                        f"extend`) whose vocab.txt sits in the model folder", str(ref))
    cls = BertForPreTraining if nsp else BertForMaskedLM
    try:
        return cls.from_pretrained(path, config=config)
    except OSError as e:  # e.g. a hub id while offline, or a folder without weights
        raise UserError(f"cannot load the model to start from ({e})".replace("\n", " "), str(ref)) from None


def _extended_vocab_matches(ref: str | Path, vocab_size: int) -> bool:
    from bertwwm.text.tokens import load_vocab, model_vocab

    vocab = model_vocab(ref)
    return vocab is not None and len(load_vocab(vocab)) == vocab_size


def save_model(model, folder: str | Path, vocab_path: str | None = None) -> None:
    """Write a standard transformers folder: config.json, model.safetensors and the tokenizer files.

    A model with an extended vocabulary takes its tokenizer from `vocab_path`, by default the vocab.txt of
    the folder it was loaded from (transformers keeps that folder as `name_or_path`)."""
    from bertwwm.text.tokens import load_vocab, model_vocab, save_tokenizer

    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    model = getattr(model, "hf", model)
    if model.config.vocab_size != VOCAB_SIZE and vocab_path is None:
        vocab_path = model_vocab(model.name_or_path or None)
        if vocab_path is None or len(load_vocab(vocab_path)) != model.config.vocab_size:
            raise UserError(f"cannot save a {model.config.vocab_size}-entry model without its vocab.txt "
                            f"(loaded from {model.name_or_path!r})", folder)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our own bar is showing; no "Writing model shards" bar per checkpoint
    try:
        model.save_pretrained(str(folder))
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    save_tokenizer(folder, vocab_path)


@dataclass
class PretrainingOutput:
    loss: torch.Tensor                 # mlm_loss + nsp_loss (each as normalised by the caller's counts)
    mlm_loss_sum: torch.Tensor         # summed cross-entropy over masked positions (fp32)
    mlm_correct: torch.Tensor          # number of masked positions predicted right
    mlm_count: int                     # number of masked positions
    nsp_loss_sum: torch.Tensor | None  # summed NSP cross-entropy over sequences
    nsp_correct: torch.Tensor | None
    nsp_count: int
    mlm_logits: torch.Tensor           # (mlm_count, vocab or restricted tokens): logits at the masked positions, row-major
    distill_kl_sum: torch.Tensor | None = None  # summed KL(teacher || student) at the masked positions (at T)


class PretrainingModel(nn.Module):
    """Training view of a transformers `BertForPreTraining` / `BertForMaskedLM` (held as `.hf`).

    forward() computes the losses with the gathered MLM head. Losses are sums divided by the given
    normalisers (default: this batch's own counts), so gradient accumulation and DDP can divide by the
    global number of masked tokens and match one big batch exactly.

    With a `teacher` (a transformers BERT MLM model over the same vocabulary), the loss adds
    `distill_weight * T^2 * KL(teacher_T || student_T)` summed over the masked positions and divided by the
    same MLM normaliser (Hinton et al.'s T^2 keeps the gradient scale independent of T). The teacher is not a
    submodule: it stays frozen in eval mode (no dropout) whatever `.train()` does, runs under no_grad, and is
    neither in the state dict, the optimizer nor DDP's buckets.
    """

    def __init__(self, hf_model, teacher=None, distill_temperature: float = 1.0, distill_weight: float = 1.0):
        super().__init__()
        self.hf = hf_model
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # plain attribute: not registered as a submodule
        self.distill_temperature = float(distill_temperature)
        self.distill_weight = float(distill_weight)
        self.output_ids: torch.Tensor | None = None   # see restrict_output(); plain tensors, not in the state dict
        self._output_position: torch.Tensor | None = None

    def restrict_output(self, token_ids) -> None:
        """In training mode, score only `token_ids` in the MLM softmax (None: the whole vocabulary again).

        Why: on a small corpus the tied (hidden x 21,128) decoder is most of a small model's step (~70% for the
        tiny preset at batch 16 x 64 with 40% masks), yet the shipped law sample uses 2,333 distinct tokens.
        Scoring only the tokens the training text contains gives the same model, format and targets (every
        target occurs in that text) for a fraction of the cost; tokens outside the set get no gradient, so
        their rows stay as they were (the drift `set_output_bias` explains cannot reach them either). The
        softmax leaves out the tokens the text never shows, which a unigram output bias already puts at
        ~1e-7 each. Evaluation (`.eval()`) always scores the full vocabulary, so held-out numbers compare.
        """
        if token_ids is None:
            self.output_ids = self._output_position = None
            return
        weight = self.hf.cls.predictions.decoder.weight
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=weight.device).unique()
        position = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
        position[ids] = torch.arange(len(ids), device=weight.device)
        self.output_ids, self._output_position = ids, position

    @property
    def config(self):
        return self.hf.config

    @property
    def has_nsp(self) -> bool:
        return hasattr(self.hf.cls, "seq_relationship")

    def masked_logits(self, sequence_output: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the positions where labels != -100 (row-major), and those labels.

        Under `restrict_output` (training mode only) the logits cover the restricted tokens and the labels
        are positions in that list; a batch with a target outside it falls back to the full vocabulary.
        """
        flat_labels = labels.reshape(-1)
        index = (flat_labels != IGNORE_INDEX).nonzero(as_tuple=True)[0]
        hidden = sequence_output.reshape(-1, sequence_output.shape[-1]).index_select(0, index)
        targets = flat_labels.index_select(0, index)
        if self.output_ids is not None and self.training:
            positions = self._output_position[targets]
            if bool((positions >= 0).all()):
                head = self.hf.cls.predictions
                logits = F.linear(head.transform(hidden), head.decoder.weight.index_select(0, self.output_ids),
                                  head.bias.index_select(0, self.output_ids))
                return logits, positions
        return self.hf.cls.predictions(hidden), targets

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None, mlm_normaliser: float | None = None,
                nsp_normaliser: float | None = None) -> PretrainingOutput:
        if labels is None:
            raise ValueError("PretrainingModel needs MLM labels (-100 where not masked)")
        outputs = self.hf.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               return_dict=True)
        logits, targets = self.masked_logits(outputs.last_hidden_state, labels)
        count = int(targets.numel())
        # Cross-entropy in fp32 even under bf16 autocast: a 21,128-way softmax loses too much in bf16.
        logits_fp32 = logits.float()
        mlm_sum = F.cross_entropy(logits_fp32, targets, reduction="sum")
        with torch.no_grad():
            # max(-1).indices, not argmax: on CPU it is ~3x faster over 21,128 columns (5% of a small step).
            mlm_correct = (logits_fp32.max(-1).indices == targets).sum()
        loss = mlm_sum / (mlm_normaliser if mlm_normaliser is not None else max(count, 1))
        kl_sum = None
        if self.teacher is not None:
            kl_sum = self.distill_kl(logits_fp32, input_ids, attention_mask, token_type_ids, labels)
            scale = self.distill_weight * self.distill_temperature ** 2
            loss = loss + scale * kl_sum / (mlm_normaliser if mlm_normaliser is not None else max(count, 1))
        nsp_sum = nsp_correct = None
        nsp_count = 0
        if self.has_nsp and next_sentence_label is not None:
            nsp_logits = self.hf.cls.seq_relationship(outputs.pooler_output)
            nsp_sum = F.cross_entropy(nsp_logits.float(), next_sentence_label.reshape(-1), reduction="sum")
            nsp_count = int(next_sentence_label.numel())
            with torch.no_grad():
                nsp_correct = (nsp_logits.argmax(-1) == next_sentence_label.reshape(-1)).sum()
            loss = loss + nsp_sum / (nsp_normaliser if nsp_normaliser is not None else max(nsp_count, 1))
        return PretrainingOutput(loss, mlm_sum.detach(), mlm_correct, count,
                                 None if nsp_sum is None else nsp_sum.detach(), nsp_correct, nsp_count,
                                 logits, None if kl_sum is None else kl_sum.detach())

    def distill_kl(self, student_logits: torch.Tensor, input_ids, attention_mask, token_type_ids,
                   labels) -> torch.Tensor:
        """Summed KL(teacher || student) at temperature T over the masked positions (fp32)."""
        teacher = self.teacher
        if teacher.training:  # someone called .train() on it directly
            teacher.eval()
        with torch.no_grad():
            hidden = teacher.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                  return_dict=True).last_hidden_state
            flat = labels.reshape(-1)
            index = (flat != IGNORE_INDEX).nonzero(as_tuple=True)[0]
            rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)
            teacher_logits = teacher.cls.predictions(rows).float()
            if student_logits.shape[-1] != teacher_logits.shape[-1]:  # the student scores restricted tokens
                teacher_logits = teacher_logits.index_select(-1, self.output_ids)
            target = F.log_softmax(teacher_logits / self.distill_temperature, dim=-1)
        student = F.log_softmax(student_logits / self.distill_temperature, dim=-1)
        return F.kl_div(student, target, log_target=True, reduction="sum")


def load_teacher(ref: str, vocab_size: int, student: str | None = None):
    """A frozen MLM model to distil from; its vocabulary must be the student's (size and, for extended
    vocabularies, entries)."""
    from transformers import BertForMaskedLM

    from bertwwm.modeling import zoo
    from bertwwm.modeling.head_check import check_mlm_head, quiet_transformers
    from bertwwm.text.tokens import load_vocab, model_vocab

    config = zoo.load_bert_config(str(ref))
    if config.vocab_size != vocab_size:
        raise UserError(f"the teacher has a {config.vocab_size:,}-entry vocabulary and the student {vocab_size:,}: "
                        "distillation compares distributions over one vocabulary (extend both alike with "
                        "`bertwwm vocab extend`, or pick a teacher with the student's vocabulary)", str(ref))
    path = zoo.resolve_model(str(ref))
    mine, theirs = model_vocab(student) if student and student != "random" else None, model_vocab(path)
    if (mine or theirs) and (mine is None or theirs is None or load_vocab(mine) != load_vocab(theirs)):
        raise UserError("the teacher's vocabulary differs from the student's (same size, other entries): "
                        "distillation compares distributions over one vocabulary", str(ref))
    try:
        with quiet_transformers():
            teacher = BertForMaskedLM.from_pretrained(path, config=config)
    except OSError as e:
        raise UserError(f"cannot load the teacher ({e})".replace("\n", " "), str(ref)) from None
    check_mlm_head(teacher, path, "pretrain", subject="the teacher's MLM head",
                   advice="distilling from it teaches noise; pass a trained teacher")
    return teacher.eval().requires_grad_(False)


def count_parameters(model) -> int:
    """Distinct parameters (tied tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

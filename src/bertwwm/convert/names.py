"""Google's / HFL's TensorFlow variable names <-> transformers `BertForPreTraining` parameter names.

Google's BERT stores dense kernels as [in, out] (x @ W); torch's nn.Linear stores [out, in], so dense
kernels are transposed. `cls/seq_relationship/output_weights` is already [2, hidden] (Google multiplies
with transpose_b=True) and embeddings are [rows, hidden] in both, so those are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from bertwwm.core.errors import UserError

# Variables that are training state, not model: optimiser slots (Adam, LAMB, momentum, ...), step counters
# and mixed-precision loss scaling.
_TRAINING_STATE = re.compile(
    r"(^|/)(global_step|good_steps|current_loss_scale|loss_scale|bad_steps)$"
    r"|/(adam_m|adam_v|lamb_m|lamb_v|m|v|Adam|Adam_1|Momentum|accumulator|ExponentialMovingAverage)$"
    r"|^(beta1_power|beta2_power)$"
)

_LAYER = re.compile(r"^bert/encoder/layer_(\d+)/(.+)$")

# Inside one encoder layer: TF suffix -> HF suffix (without ".weight"/".bias").
_LAYER_MODULES = {
    "attention/self/query": "attention.self.query",
    "attention/self/key": "attention.self.key",
    "attention/self/value": "attention.self.value",
    "attention/output/dense": "attention.output.dense",
    "attention/output/LayerNorm": "attention.output.LayerNorm",
    "intermediate/dense": "intermediate.dense",
    "output/dense": "output.dense",
    "output/LayerNorm": "output.LayerNorm",
}

_FIXED = {
    "bert/embeddings/word_embeddings": "bert.embeddings.word_embeddings.weight",
    "bert/embeddings/position_embeddings": "bert.embeddings.position_embeddings.weight",
    "bert/embeddings/token_type_embeddings": "bert.embeddings.token_type_embeddings.weight",
    "bert/embeddings/LayerNorm/gamma": "bert.embeddings.LayerNorm.weight",
    "bert/embeddings/LayerNorm/beta": "bert.embeddings.LayerNorm.bias",
    "bert/pooler/dense/kernel": "bert.pooler.dense.weight",
    "bert/pooler/dense/bias": "bert.pooler.dense.bias",
    "cls/predictions/transform/dense/kernel": "cls.predictions.transform.dense.weight",
    "cls/predictions/transform/dense/bias": "cls.predictions.transform.dense.bias",
    "cls/predictions/transform/LayerNorm/gamma": "cls.predictions.transform.LayerNorm.weight",
    "cls/predictions/transform/LayerNorm/beta": "cls.predictions.transform.LayerNorm.bias",
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
}
_FIXED_BACK = {v: k for k, v in _FIXED.items()}

# HF parameters that are ties or buffers, never stored in a TF checkpoint.
HF_DERIVED = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
              "bert.embeddings.position_ids", "bert.embeddings.token_type_ids"}


def is_training_state(tf_name: str) -> bool:
    return bool(_TRAINING_STATE.search(tf_name))


def tf_to_hf_name(tf_name: str) -> tuple[str, bool] | None:
    """(HF parameter name, transpose?) for a TF model variable, or None when it is not part of BERT."""
    if tf_name in _FIXED:
        return _FIXED[tf_name], tf_name.endswith("/kernel")
    m = _LAYER.match(tf_name)
    if not m:
        return None
    index, rest = m.groups()
    module, _, leaf = rest.rpartition("/")
    if module not in _LAYER_MODULES:
        return None
    suffix = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}.get(leaf)
    if suffix is None or (leaf in ("gamma", "beta")) != module.endswith("LayerNorm"):
        return None
    return f"bert.encoder.layer.{index}.{_LAYER_MODULES[module]}.{suffix}", leaf == "kernel"


def hf_to_tf_name(hf_name: str) -> tuple[str, bool] | None:
    """(TF variable name, transpose?) for an HF parameter, or None for ties/buffers/non-BERT parameters."""
    if hf_name in _FIXED_BACK:
        tf = _FIXED_BACK[hf_name]
        return tf, tf.endswith("/kernel")
    m = re.match(r"^bert\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", hf_name)
    if not m:
        return None
    index, module, leaf = m.groups()
    back = {v: k for k, v in _LAYER_MODULES.items()}.get(module)
    if back is None:
        return None
    if back.endswith("LayerNorm"):
        tf_leaf = "gamma" if leaf == "weight" else "beta"
    else:
        tf_leaf = "kernel" if leaf == "weight" else "bias"
    return f"bert/encoder/layer_{index}/{back}/{tf_leaf}", tf_leaf == "kernel"


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Every BertForPreTraining parameter stored in a checkpoint, with the shape `config` implies."""
    h, inter, v = config.hidden_size, config.intermediate_size, config.vocab_size
    shapes = {
        "bert.embeddings.word_embeddings.weight": (v, h),
        "bert.embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
        "bert.embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "bert.embeddings.LayerNorm.weight": (h,), "bert.embeddings.LayerNorm.bias": (h,),
        "bert.pooler.dense.weight": (h, h), "bert.pooler.dense.bias": (h,),
        "cls.predictions.transform.dense.weight": (h, h), "cls.predictions.transform.dense.bias": (h,),
        "cls.predictions.transform.LayerNorm.weight": (h,), "cls.predictions.transform.LayerNorm.bias": (h,),
        "cls.predictions.bias": (v,),
        "cls.seq_relationship.weight": (2, h), "cls.seq_relationship.bias": (2,),
    }
    for i in range(config.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (h, h), (h,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (h,), (h,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (inter, h), (inter,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (h, inter), (h,)
    return shapes


@dataclass
class ConversionReport:
    """What a conversion did with each name, for the user to check."""

    converted: int = 0
    skipped_training_state: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # not part of BertForPreTraining (e.g. a task head)
    renamed: dict[str, str] = field(default_factory=dict)  # legacy loading: old -> new
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # anything else the user should know (e.g. activation)

    def summary(self) -> str:
        lines = [f"converted {self.converted} tensors"]
        if self.renamed:
            lines.append(f"renamed {len(self.renamed)}: " + ", ".join(
                f"{a} -> {b}" for a, b in list(self.renamed.items())[:8]) + (" ..." if len(self.renamed) > 8 else ""))
        if self.skipped_training_state:
            lines.append(f"skipped {len(self.skipped_training_state)} optimiser/step variables "
                         f"(e.g. {self.skipped_training_state[0]})")
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} variables that are not part of BERT: " + ", ".join(self.ignored[:8])
                         + (" ..." if len(self.ignored) > 8 else ""))
        if self.missing:
            lines.append(f"missing {len(self.missing)}: " + ", ".join(self.missing[:8]))
        lines.extend(self.notes)
        return "\n".join(lines)


def tf_to_state_dict(tensors: dict[str, np.ndarray], config, where: str = "checkpoint"
                     ) -> tuple[dict[str, np.ndarray], ConversionReport]:
    """Map a TF checkpoint's variables onto BertForPreTraining, checking every shape against `config`."""
    report = ConversionReport()
    shapes = expected_shapes(config)
    state: dict[str, np.ndarray] = {}
    for tf_name in sorted(tensors):
        if is_training_state(tf_name):
            report.skipped_training_state.append(tf_name)
            continue
        mapped = tf_to_hf_name(tf_name)
        if mapped is None or mapped[0] not in shapes:
            report.ignored.append(tf_name)
            continue
        hf_name, transpose = mapped
        array = tensors[tf_name]
        array = array.T if transpose else array
        if tuple(array.shape) != shapes[hf_name]:
            shown = tuple(reversed(shapes[hf_name])) if transpose else shapes[hf_name]
            raise UserError(f"variable {tf_name} has shape {tuple(tensors[tf_name].shape)}, but bert_config.json "
                            f"implies {shown}: the config does not match the checkpoint", where)
        state[hf_name] = np.ascontiguousarray(array, dtype=np.float32)
        report.converted += 1
    report.missing = [n for n in shapes if n not in state]
    heads = [n for n in shapes if n.startswith("cls.")]
    # A checkpoint saved after fine-tuning has the encoder but no pretraining heads: it converts to BertModel.
    headless = sorted(report.missing) == sorted(heads)
    if report.missing and not headless:
        tf_missing = [hf_to_tf_name(n)[0] for n in report.missing]
        raise UserError(f"checkpoint lacks {len(tf_missing)} variables BERT needs, e.g. "
                        + ", ".join(tf_missing[:5]), where)
    return state, report


def state_dict_to_tf(state: dict[str, np.ndarray], config) -> tuple[dict[str, np.ndarray], ConversionReport]:
    """Map a BertForPreTraining (or BertModel / BertForMaskedLM) state dict onto Google's variable names.

    Heads the model lacks are not invented: a BertModel gives a checkpoint without cls/*, and Google's
    code then initialises those heads itself.
    """
    report = ConversionReport()
    shapes = expected_shapes(config)
    tensors: dict[str, np.ndarray] = {}
    for hf_name, array in state.items():
        name = hf_name if hf_name.startswith(("bert.", "cls.")) else "bert." + hf_name
        if name in HF_DERIVED:
            continue
        mapped = hf_to_tf_name(name)
        if mapped is None or name not in shapes:
            report.ignored.append(hf_name)
            continue
        if tuple(array.shape) != shapes[name]:
            raise UserError(f"parameter {hf_name} has shape {tuple(array.shape)}, config implies {shapes[name]}")
        tf_name, transpose = mapped
        tensors[tf_name] = np.ascontiguousarray(array.T if transpose else array, dtype=np.float32)
        report.converted += 1
    report.missing = [n for n in shapes if n not in {k if k.startswith(("bert.", "cls.")) else "bert." + k
                                                       for k in state}]
    encoder_missing = [n for n in report.missing if n.startswith("bert.")]
    if encoder_missing:
        raise UserError(f"model lacks {len(encoder_missing)} BERT parameters, e.g. {', '.join(encoder_missing[:5])}")
    return tensors, report

"""bertwwm: Chinese BERT with whole word masking, end to end.

The package is laid out as the pipeline, data flowing one way (docs/architecture.md):

    core      errors, atomic files, run-folder locks, reading model files safely
    text      corpus -> words (segmenters) -> tokens (WordPiece) -> word-start flags (align)
    data      documents -> instances, masking policies, shard storage, batch-time masking, `prepare`
    convert   checkpoint formats (TensorFlow-1, Hugging Face, HFL's legacy PyTorch)
    modeling  presets, the training wrapper, optimisers, the model zoo, fill-mask, init/shrink/vocab
    pretrain  recipes, the loop, checkpoints and exact resume, held-out evaluation, curves
    tasks     the eight benchmarks as registered data: readers, heads, MRC windows, official metrics
    report    results of a run folder as "max (mean)" tables
    finetune  the multi-seed runner, evaluate, predict
    demo, cli the whole pipeline in miniature; the command

A later stage imports earlier ones, never the reverse (tests/test_imports.py).
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.4.0"

# Modules that sat flat in the package before 0.3 and where they live now. `import bertwwm.prepare` and
# `from bertwwm.errors import UserError` keep working for users' code: the old name is the same module
# object as the new one (so monkeypatching either patches both). New code imports the new names.
MOVED_MODULES = {
    "errors": "core.errors", "fileio": "core.fileio", "locks": "core.locks", "integrity": "core.integrity",
    "corpus": "text.corpus", "words": "text.words", "tokens": "text.tokens", "align": "text.align",
    "instances": "data.instances", "masking": "data.masking", "similar_words": "data.similar_words",
    "storage": "data.storage", "collate": "data.collate", "prepare": "data.prepare",
    "inspect_data": "data.inspect_data", "show_masking": "data.show_masking",
    "presets": "modeling.presets", "model": "modeling.model", "random_init": "modeling.random_init",
    "init_model": "modeling.init_model", "optim": "modeling.optim", "zoo": "modeling.zoo",
    "head_check": "modeling.head_check", "fill_mask": "modeling.fill_mask", "shrink": "modeling.shrink",
    "vocab_extend": "modeling.vocab_extend", "convert.cli": "modeling.convert_cli",
    "heldout": "pretrain.heldout", "plot": "pretrain.plot",
    "evaluate": "finetune.evaluate", "predict": "finetune.predict",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `bertwwm.OLD` to the module now at `bertwwm.NEW` (one object under two names)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package == __name__ and name in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[spec.name.partition('.')[2]]}")

    def exec_module(self, module):
        pass  # already executed under its new name


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())

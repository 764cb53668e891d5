"""bertwwm: Chinese BERT with whole word masking, end to end.

The package reads like the pipeline, data flowing one way:
text (corpus) -> words (words) -> tokens (tokens, align) -> instances (instances, masking, storage)
-> model (model, pretrain) -> tasks (tasks, finetune, evaluate) -> reports (report, plot).
Conversion between checkpoint formats lives in `bertwwm.convert`.
"""

__version__ = "0.2.0"

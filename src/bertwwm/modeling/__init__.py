"""The model: presets and plain transformers `Bert*` classes, the pretraining wrapper, optimisers and schedules,
the zoo (any model reference -> a local folder), and the model verbs (init, shrink, vocab extend, fill-mask)."""

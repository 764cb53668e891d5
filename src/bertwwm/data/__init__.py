"""Tokens -> training instances: document packing or BERT pairs, masking policies (wwm, char, n-gram, MacBERT),
the shard format, masking at batch time, and the `prepare`, `inspect` and `show-masking` verbs."""

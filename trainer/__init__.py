"""Training side of moviechat: the Cornell corpus, its splits and training examples.

    from trainer.corpus import load_corpus
    from trainer.dataset import build_examples
    from trainer.batching import LengthBucketSampler, Collator

`trainer.dataset` and `trainer.batching` import torch; the corpus modules do not.
"""

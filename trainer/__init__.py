"""Training side of moviechat: the Cornell corpus, its splits and training examples.

    from trainer.corpus import load_corpus
    from trainer.dataset import build_examples, LengthBucketSampler, Collator

`trainer.dataset` imports torch; the corpus modules do not.
"""

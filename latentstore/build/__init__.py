"""Building a store, image -> Sample -> shards: sources list the items, images decode them, augment and
prepare cut the crops, encoder (exact path) or generic_encoder (any CompressAI model) encode them,
crops_to_samples adds the teacher, pool runs item groups in encoder processes, resume says what a
rerun may reuse, dryrun projects the cost, and run drives it all (`latentstore build`).
"""

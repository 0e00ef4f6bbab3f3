"""Evaluate a trained checkpoint on a stored split: top-1/top-5 or mIoU, and the real bpp.

The flow is the one a reviewer of the paper's tables would check, one module per step:

1. ``options``: eval/classify.py and eval/segment.py flags -> ``EvalConfig``.
2. ``run``: ``latentstore.evaluate.checkpoint_view.read_checkpoint`` loads the checkpoint
   (``weights_only=True``) and ``latentstore.train.store_identity.check_compatible`` refuses it, naming the
   field, when the store was encoded with another coder, quality, weights or latent shape, or
   labels other classes, than the store the model was trained on.
3. ``batches``: every sample of one variant of the split, exactly once over all ranks, read by
   the reader the trainers use (``open_store(..., remainder="keep")``) with strict reads.
   Unlike training, no sample is dropped or repeated to even out ranks: metrics are integer
   counts summed once at the end (``latentstore.evaluate.metrics``), so uneven ranks cost nothing and
   the result equals a single-process run exactly.
4. ``rate``: bpp is the size of the stored bitstrings, 8·(len(y_string)+len(z_string)) bits per
   unpadded pixel, summed over the samples; each sample is checked against its meta.json
   ``bits``, and the total against the manifest's ``mean_bpp`` when the whole split was read.
5. ``record``: the eval record written to ``eval.json`` (docs/results.md describes it) and eval.md.

``run.run`` is the DDP run (torchrun joins the trainers' process group); ``run.main`` is the
scripts' entry point.
"""

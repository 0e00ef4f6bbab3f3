"""Teacher features (docs/method.md §5, docs/FORMAT.md "Teacher fields"), one module per job.

- ``load``: build side. Loads a frozen timm (or PSPNet) teacher and runs it on the crops;
  imports timm, the weight caches and the store's thread count (store/threads.py), not the codec.
- ``dtypes``: the storage dtypes (float16, bfloat16, int8 + scale): quantize and dequantize.
- ``fingerprint``: refuse a store whose teacher is not the expected one (docs/reliability.md §7).
- ``info``: the teacher lines of ``latentstore info``.
- ``decode``: reader side. Turns a sample's stored teacher members into float tensors.

The reader side (dtypes, fingerprint, info, decode) imports neither the encoder nor CompressAI,
so this file imports nothing: ``import latentstore.teacher.decode`` loads only what it needs.
"""

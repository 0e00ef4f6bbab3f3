"""The on-disk contract of a store (docs/FORMAT.md): layout and field encodings, the sample, checksums,
the manifest's schema, commits and sealing, split keys, and one reader and one writer per backend
(``tar/``, ``zarr/``). It imports nothing of latentstore above it: a store can be read, checked and
written without the codec, the models or the trainers.
"""

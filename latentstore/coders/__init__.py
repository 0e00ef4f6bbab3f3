"""Learned image codecs: the named CompressAI coders as one table (``registry``), their names as plain
data (``names``, no CompressAI import), and a user's own class (``custom``). Used by the build, by
``verify --decode`` and by the ``decode+`` baselines.
"""

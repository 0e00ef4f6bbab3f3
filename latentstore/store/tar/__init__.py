"""WebDataset tar shards: the writer commits a group's shard with its sample index; the reader streams
or seeks by that index.
"""

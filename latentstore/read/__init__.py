"""Reading a store for training and evaluation: ranks, the epoch order and the torch dataset
(``open_store``). Nothing here imports the build or the codec.
"""

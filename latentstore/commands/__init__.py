"""The `latentstore` command line (``cli``) and the commands that act on a whole store: info, verify,
convert, add-teacher and copy. Each command is a thin wrapper over a library function.
"""

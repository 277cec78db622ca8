"""Users' sandboxed homes, each a user's whole world: names, the tree on disk, usage, globs.

Everything here except :mod:`shellserver.files.homefs` runs on an I/O thread: the
reactor only hands work over, one job per home at a time (see homefs.Home).
"""

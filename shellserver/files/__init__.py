"""Users' sandboxed homes (SPEC §5): names, the tree on disk, usage, glob expansion.

Everything here except :mod:`shellserver.files.homefs` runs on an I/O thread: the
reactor only hands work over, one job per home at a time (see homefs.Home).
"""

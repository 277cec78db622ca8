"""Several shellserver processes acting as one server through Redis.

Users on any node see everyone on every node (``who``, ``write``, ``wall``, rooms), so a
site can add nodes behind one name without splitting its users; docs/scaling.md says how.
"""

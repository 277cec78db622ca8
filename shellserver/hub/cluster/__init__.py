"""Several shellserver processes acting as one server through Redis (SPEC §13)."""

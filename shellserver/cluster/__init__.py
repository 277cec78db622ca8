"""Several shellserver processes as one server, through Redis (SPEC §13)."""

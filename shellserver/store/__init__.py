"""Accounts, passwords and saved messages: the store behind every node."""

"""The SSH wire (``twisted.conch``): host keys, authorized_keys, the conch server side."""

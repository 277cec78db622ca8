"""Launch and control: twistd options, the one assembly that builds every part, the control socket,
the CLI."""

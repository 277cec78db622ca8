"""Text in, text out: line mode and the line editor (keys, screen, history), the same for every
wire."""

"""Pure text helpers shared by every layer: sanitising, wrapping, words, times."""

"""The browser terminal: the page, its assets and the WebSocket."""

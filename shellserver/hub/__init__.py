"""Sessions and the messages between them: the connection table, rooms, idle; cluster/ is the hub
over Redis."""

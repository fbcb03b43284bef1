"""Chat as every face runs it: the chat service, saved conversations, sources shown."""

"""Text generation behind one small interface (see base.ChatModel)."""

"""Proof tool: the real program against real mail software in netns, stepped by the engine model (engine/)."""

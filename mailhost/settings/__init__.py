"""Stage 1, settings: one validated model of a stack's settings, each value judged alone; imports only records."""

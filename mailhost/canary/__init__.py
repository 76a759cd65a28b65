"""Canary: a probe sent through each host to real mailboxes, read back to see where it landed and why."""

"""jira-mailhost's core, one package per stage; each imports only the stages below it (README: How it works)."""

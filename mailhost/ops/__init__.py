"""Stage 3, ops: the deployed hosts at work: the pinned-key SSH client, the collector's report judged, status."""

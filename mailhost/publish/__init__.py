"""Stage 2, publish: settings → DNS records and pushed files (and the collector); loading a stack via preflight."""

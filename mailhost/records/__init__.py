"""Stage 0, records: grammars for stack values, and DNS record text (TXT, SPF, DKIM, the expected state)."""

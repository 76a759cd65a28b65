"""Reports: DMARC aggregate reports read, kept and judged (unpack, parse, store, judge, export)."""

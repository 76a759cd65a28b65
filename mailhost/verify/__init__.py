"""Stage 2, verify: what the world sees in DNS: lookups (dnspython), pure verdicts, requirements, one report."""

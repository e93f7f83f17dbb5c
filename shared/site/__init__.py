"""What a hospital owns: its privacy policy (checked against every request) and its privacy ledger."""

"""Live venues: each venue's gateway process between execute's command ring and the venue (through ccxt), the
client order ids, credentials, and reconciliation against the venue."""

"""Every write of the ledger, by topic: book (the posting engine), credits (grants,
adjustments, expiry), usage (ingest and re-rating), reconcile."""

"""Tender alerts for community organisations: OCDS notices, subscriptions by chat, matching,
alerts and digests, partner introductions and bidding guidance (see docs/architecture.md)."""

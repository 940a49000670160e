#!/usr/bin/env python3
"""Verify what hookgate delivered with the official Standard Webhooks library, for tests/outbound_*.rs.

Reads a JSON array of {"secret", "body", "headers": {webhook-id, webhook-timestamp, webhook-signature}}
on stdin; prints a JSON array of {"error": null} (verified) or {"error": "why"}, one per request.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook

out = []
for r in json.load(sys.stdin):
    try:
        Webhook(r["secret"]).verify(r["body"], r["headers"])
        out.append({"error": None})
    except Exception as e:  # the library raises WebhookVerificationError; report any failure
        out.append({"error": f"{type(e).__name__}: {e}"})
json.dump(out, sys.stdout)

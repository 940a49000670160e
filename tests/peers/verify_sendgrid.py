#!/usr/bin/env python3
"""Verify SendGrid Event Webhook requests with SendGrid's own library (PyPI sendgrid, EventWebhook),
for tests/verify_presets.rs: what hookgate accepts and refuses must be what SendGrid's library does.

Reads a JSON array of {"public_key", "body", "signature", "timestamp"} on stdin (the key as SendGrid's
settings show it); prints a JSON array of booleans, one per request.
"""
import json
import sys

from sendgrid.helpers.eventwebhook import EventWebhook

out = []
for r in json.load(sys.stdin):
    webhook = EventWebhook()
    try:
        key = webhook.convert_public_key_to_ecdsa(r["public_key"])
        out.append(bool(webhook.verify_signature(r["body"], r["signature"], r["timestamp"], key)))
    except ValueError:  # a key or signature (base64) the library cannot parse verifies nothing
        out.append(False)
json.dump(out, sys.stdout)

#!/usr/bin/env python3
"""Verify Square webhook requests with Square's own SDK (PyPI squareup,
square.utils.webhooks_helper.verify_signature), for tests/verify_presets.rs: on every request Square
sends, hookgate must judge as Square's SDK does.

Reads a JSON array of {"key", "url", "body", "header"} on stdin (the notification URL as registered,
the x-square-hmacsha256-signature header as sent); prints a JSON array of booleans, one per request.
"""
import json
import sys

from square.utils.webhooks_helper import verify_signature

out = []
for r in json.load(sys.stdin):
    out.append(
        bool(
            verify_signature(
                request_body=r["body"],
                signature_header=r["header"],
                signature_key=r["key"],
                notification_url=r["url"],
            )
        )
    )
json.dump(out, sys.stdout)

#!/usr/bin/env python3
"""Verify Paddle Billing webhook requests with Paddle's own SDK (PyPI paddle-python-sdk,
PaddleSignature.verify), for tests/verify_presets.rs: on every request Paddle sends, hookgate must judge
as Paddle's SDK does (the test lists where they differ on headers Paddle never sends). The SDK's time
check (its Verifier refuses a request 5 s old) is left out: the requests carry fixed timestamps, and
the window is hookgate's own, tested beside this.

Reads a JSON array of {"secrets": [...], "body", "header"} on stdin (the Paddle-Signature header as
sent); prints a JSON array of booleans, one per request.
"""
import json
import sys

from paddle_billing.Notifications import PaddleSignature, Secret

out = []
for r in json.load(sys.stdin):
    try:
        secrets = [Secret(s) for s in r["secrets"]]
        out.append(bool(PaddleSignature().verify(r["header"], r["body"], secrets)))
    except (ConnectionRefusedError, ValueError):  # no secret matched, or a header it refuses to parse
        out.append(False)
json.dump(out, sys.stdout)

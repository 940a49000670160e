"""Sequential keep-alive client for scripts/cg-inbound: N signed Stripe customer.created events, distinct ids.

Signs with Python's stdlib HMAC exactly as Stripe documents it (t=<unix>,v1=<hex HMAC-SHA256 of "t.body">);
the signature scheme itself is tested against stripe-python in the test suite. Exits 1 on any answer but 202.
"""
import hashlib
import hmac
import http.client
import json
import sys
import time

port, secret_file, n, tag = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
secret = open(secret_file).read().strip()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
bad = 0
for i in range(n):
    event = {
        "id": "evt_%s_%06d" % (tag, i), "object": "event", "api_version": "2024-06-20",
        "created": 1700000000, "type": "customer.created", "livemode": False, "pending_webhooks": 1,
        "request": {"id": "req_%d" % i, "idempotency_key": None},
        "data": {"object": {
            "id": "cus_%06d" % i, "object": "customer", "email": "jenny.rosen@example.com",
            "name": "Jenny Rosen", "phone": "+15555550123", "currency": "usd", "created": 1234567890,
            "address": {"city": "Paris", "country": "FR", "line1": "1 rue", "postal_code": "75001"},
            "metadata": {"plan": "pro", "note": "x" * 900},
        }},
    }
    body = json.dumps(event).encode()
    t = int(time.time())
    sig = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    conn.request("POST", "/webhooks/stripe", body=body, headers={
        "Content-Type": "application/json",
        "Stripe-Signature": "t=%d,v1=%s" % (t, sig),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    })
    r = conn.getresponse()
    r.read()
    if r.status != 202:
        bad += 1
if bad:
    print("cg client: %d answers were not 202" % bad, file=sys.stderr)
    sys.exit(1)

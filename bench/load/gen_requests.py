#!/usr/bin/env python3
"""Write N signed Stripe `customer.created` webhook requests for bench/load/stripe.lua.

Each event has a distinct id (evt_<run nonce><counter>) and a realistic body: the customer object of
Stripe's OpenAPI fixtures (resources.customer) with id, email, name and created varied, inside the event
envelope, pretty-printed the way Stripe sends it (about 1.5 KB). Each is signed with the endpoint secret
and the current time, with stripe-python's WebhookSignature.generate_signature_header when the venv has
it, else with the same construction from the standard library (the output says which).

Output format (read by stripe.lua): records back to back, each `<byte length>\\n<raw HTTP/1.1 request>`.
The last line on stdout is a JSON summary.
"""

import argparse
import hashlib
import hmac
import json
import os
import secrets
import string
import sys
import time

DEFAULT_FIXTURES = "/work/shared/corpus/stripe/fixtures3.json"
API_VERSION = "2024-06-20"


def load_signer():
    """Stripe's own signer if importable, else the documented construction with hmac."""
    try:
        from stripe import WebhookSignature  # type: ignore

        ver = getattr(sys.modules.get("stripe"), "VERSION", "?")

        def sign(payload: str, secret: str, ts: int) -> str:
            return WebhookSignature.generate_signature_header(payload, secret, timestamp=ts)

        return sign, f"stripe-python {ver} (WebhookSignature.generate_signature_header)"
    except ImportError:

        def sign(payload: str, secret: str, ts: int) -> str:
            mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256)
            return f"t={ts},v1={mac.hexdigest()}"

        return sign, "python stdlib hmac (stripe-python not importable)"


def template(customer: dict) -> str:
    """The event as JSON text with placeholders, so each record is a few string substitutions."""
    cust = dict(customer)
    cust.update(
        id="__CUS__",
        email="__EMAIL__",
        name="__NAME__",
        created=1999999999,  # replaced: a marker number
        description="Load test customer",
        metadata={"source": "hookgate-load", "seq": "__SEQ__"},
    )
    event = {
        "id": "__EVT__",
        "object": "event",
        "api_version": API_VERSION,
        "created": 1999999999,
        "data": {"object": cust},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "__REQ__", "idempotency_key": "__IDEM__"},
        "type": "customer.created",
    }
    return json.dumps(event, indent=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixtures", default=DEFAULT_FIXTURES)
    ap.add_argument("--path", default="/webhooks/stripe")
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()

    with open(args.secret_file, encoding="utf-8") as f:
        secret = f.read().strip()
    with open(args.fixtures, encoding="utf-8") as f:
        customer = json.load(f)["resources"]["customer"]
    sign, signer = load_signer()

    tpl = template(customer)
    ts = int(time.time())
    nonce = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))
    head_tpl = (
        f"POST {args.path} HTTP/1.1\r\n"
        f"Host: {args.host}\r\n"
        "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
        "Accept: */*; q=0.5, application/xml\r\n"
        "Cache-Control: no-cache\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        "Content-Length: {length}\r\n"
        "Stripe-Signature: {sig}\r\n"
        "\r\n"
    )
    total_body = 0
    tmp = args.out + ".tmp"
    with open(tmp, "wb", buffering=1 << 20) as out:
        for i in range(args.n):
            seq = f"{i:08d}"
            body = (
                tpl.replace("__EVT__", f"evt_1{nonce}{seq}")
                .replace("__CUS__", f"cus_{nonce}{seq}")
                .replace("__EMAIL__", f"load.{nonce.lower()}.{seq}@example.com")
                .replace("__NAME__", f"Load Customer {seq}")
                .replace("__SEQ__", seq)
                .replace("__REQ__", f"req_{nonce}{seq}")
                .replace("__IDEM__", f"{nonce}-{seq}")
                .replace("1999999999", str(ts - 1))
            )
            raw = body.encode()
            head = head_tpl.format(length=len(raw), sig=sign(body, secret, ts)).encode()
            req = head + raw
            out.write(b"%d\n" % len(req))
            out.write(req)
            total_body += len(raw)
    os.replace(tmp, args.out)
    summary = {
        "n": args.n,
        "timestamp": ts,
        "signer": signer,
        "avg_body_bytes": round(total_body / max(args.n, 1)),
        "file": args.out,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

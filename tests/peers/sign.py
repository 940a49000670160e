#!/usr/bin/env python3
"""Sign webhook requests with the providers' own libraries, for tests/verify_presets.rs.

Reads a JSON array of requests on stdin and prints a JSON array of results, one per request:
    request: {"preset", "secret", "body", "url", "method", "timestamp", "id", "version", "params"}
    result:  {"headers": {name: value}, "url": signed URL (twilio JSON adds bodySHA256),
              "public_key": the key that verifies (standard-webhooks-v1a: whpk_; sendgrid: base64 DER)}
Batching keeps the (slow) library imports to one per test.

Signers: stripe (PyPI stripe), standard-webhooks (PyPI standardwebhooks; its asymmetric v1a by PyPI
cryptography, which is OpenSSL), sendgrid (OpenSSL through PyPI cryptography; checked by SendGrid's
own library in verify_sendgrid.py), slack (PyPI slack_sdk),
twilio (PyPI twilio), hubspot v1/v2/v3 (PyPI hubspot-api-client). shopify, typeform, calendly, zoom,
paddle, webflow, square, segment, intercom, tally, calcom, customerio and mailgun publish no signer, so they are signed here with the
standard library's hmac, following each provider's documentation independently of hookgate's Rust code (paddle's
are also judged by Paddle's own SDK, verify_paddle.py, webflow's by Webflow's, verify_webflow.mjs,
square's by Square's, verify_square.py, and customerio's by customerio-node, verify_customerio.mjs). mailgun's result has no headers: its
"signature" object goes in the body.
"""
import base64
import hashlib
import hmac
import json
import secrets
import sys
from datetime import datetime, timezone
from urllib.parse import parse_qsl


def stripe_sign(r):
    import stripe

    header = stripe.WebhookSignature.generate_signature_header(
        r["body"], r["secret"], timestamp=r["timestamp"]
    )
    return {"Stripe-Signature": header}


def standard_webhooks_sign(r):
    from standardwebhooks import Webhook

    ts = datetime.fromtimestamp(r["timestamp"], tz=timezone.utc)
    sig = Webhook(r["secret"]).sign(r["id"], ts, r["body"])
    return {
        "webhook-id": r["id"],
        "webhook-timestamp": str(r["timestamp"]),
        "webhook-signature": sig,
    }


def standard_webhooks_v1a_sign(r):
    # Standard Webhooks' asymmetric scheme (the spec: "v1a", Ed25519 over "{id}.{timestamp}.{body}", the
    # public key as base64 after "whpk_"), signed by OpenSSL through pyca/cryptography: no Standard
    # Webhooks library signs v1a. "private_key" is the base64 of the 32-byte seed; the result carries
    # the public key OpenSSL derives from it. With "also_v1" (a secret), the standardwebhooks library's
    # v1 signature comes first in the header, as from a sender that signs both ways during a move.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(r["private_key"]))
    content = f"{r['id']}.{r['timestamp']}.{r['body']}".encode()
    signature = "v1a," + base64.b64encode(key.sign(content)).decode()
    if r.get("also_v1"):
        v1 = standard_webhooks_sign({**r, "secret": r["also_v1"]})["webhook-signature"]
        signature = f"{v1} {signature}"
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    headers = {
        "webhook-id": r["id"],
        "webhook-timestamp": str(r["timestamp"]),
        "webhook-signature": signature,
    }
    return headers, r.get("url"), {"public_key": "whpk_" + base64.b64encode(public).decode()}


def sendgrid_sign(r):
    # SendGrid's signed Event Webhook: ECDSA P-256 with SHA-256 over "{timestamp}{body}", the signature
    # base64 of its DER, the verification key base64 of its DER SubjectPublicKeyInfo (as SendGrid's
    # settings show it). SendGrid publishes no signer (its libraries only verify: verify_sendgrid.py),
    # so OpenSSL signs, through pyca/cryptography. "private_key" is the private scalar (an integer);
    # "s_form" "high" or "low" rewrites the signature to that form of s (both verify).
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature,
        encode_dss_signature,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.derive_private_key(r["private_key"], ec.SECP256R1())
    content = f"{r['timestamp']}{r['body']}".encode()
    der = key.sign(content, ec.ECDSA(hashes.SHA256()))
    if r.get("s_form"):
        n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        rr, s = decode_dss_signature(der)
        low = min(s, n - s)
        der = encode_dss_signature(rr, low if r["s_form"] == "low" else n - low)
    public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(der).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": str(r["timestamp"]),
    }
    return headers, r.get("url"), {"public_key": base64.b64encode(public).decode()}


def slack_sign(r):
    from slack_sdk.signature import SignatureVerifier

    ts = str(r["timestamp"])
    sig = SignatureVerifier(r["secret"]).generate_signature(timestamp=ts, body=r["body"])
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


class MultiDict(dict):
    """Form parameters with repeated names, as twilio's validator reads them (getall)."""

    def __init__(self, pairs):
        super().__init__()
        self._pairs = pairs
        for k, _ in pairs:
            self[k] = None

    def getall(self, name):
        return [v for k, v in self._pairs if k == name]


def twilio_sign(r):
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(r["secret"])
    url = r["url"]
    if r.get("json"):
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}bodySHA256={validator.compute_hash(r['body'])}"
        params = {}
    else:
        params = MultiDict(parse_qsl(r["body"], keep_blank_values=True))
    sig = validator.compute_signature(url, params)
    # Cross-check with the library's own validator before handing the vector to the test.
    assert validator.validate(url, r["body"] if r.get("json") else params, sig)
    return {"X-Twilio-Signature": sig}, url


def hubspot_sign(r):
    from hubspot.utils.signature import Signature

    version = r.get("version", "v3")
    ts = str(r["timestamp"]) if version == "v3" else None
    sig = Signature.get_signature(
        r["secret"], r["body"], version, http_uri=r["url"], http_method=r["method"], timestamp=ts
    )
    if version == "v3":
        return {"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": ts}
    return {"X-HubSpot-Signature": sig, "X-HubSpot-Signature-Version": version}


def stdlib_hmac(r, message):
    return hmac.new(r["secret"].encode(), message.encode(), hashlib.sha256).digest()


def shopify_sign(r):
    # shopify.dev "Verify a webhook": base64 HMAC-SHA256 of the raw body, X-Shopify-Hmac-Sha256.
    return {"X-Shopify-Hmac-Sha256": base64.b64encode(stdlib_hmac(r, r["body"])).decode()}


def zoom_sign(r):
    # Zoom "Verify webhook events": "v0=" + hex HMAC-SHA256 of "v0:{timestamp}:{body}" with the secret
    # token. Zoom publishes no signer; its own library, @zoom/rivet, checks these in the tests
    # (tests/peers/zoom_rivet.mjs).
    ts = str(r["timestamp"])
    sig = hmac.new(r["secret"].encode(), f"v0:{ts}:{r['body']}".encode(), hashlib.sha256).hexdigest()
    return {"x-zm-request-timestamp": ts, "x-zm-signature": "v0=" + sig}


def mailgun_sign(r):
    # Mailgun "Securing Webhooks": hex HMAC-SHA256 of timestamp + token (no separator) under the webhook
    # signing key, posted in the body's "signature" object, not in a header. Mailgun publishes no signer;
    # the unit tests also check the vector of its own PHP library's tests.
    ts = str(r["timestamp"])
    token = r.get("token") or secrets.token_hex(25)
    sig = hmac.new(r["secret"].encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {}, r.get("url"), {"signature": {"timestamp": ts, "token": token, "signature": sig}}


def paddle_sign(r):
    # Paddle "Verify webhook signatures": Paddle-Signature: ts=<ts>;h1=<hex HMAC-SHA256 of "<ts>:<body>">
    # under the notification destination's secret key. "h1s" signs with several secrets (a rotation).
    ts = r["timestamp"]
    secrets_ = r.get("h1s") or [r["secret"]]
    h1 = ";".join("h1=" + hmac.new(s.encode(), f"{ts}:{r['body']}".encode(), hashlib.sha256).hexdigest()
                  for s in secrets_)
    return {"Paddle-Signature": f"ts={ts};{h1}"}


def webflow_sign(r):
    # Webflow "Validating request signatures": x-webflow-signature is the hex HMAC-SHA256 of
    # "<x-webflow-timestamp>:<body>", the timestamp in milliseconds.
    ts = str(r["timestamp"])
    sig = hmac.new(r["secret"].encode(), f"{ts}:{r['body']}".encode(), hashlib.sha256).hexdigest()
    return {"x-webflow-timestamp": ts, "x-webflow-signature": sig}


def square_sign(r):
    # Square "Verify and validate an event notification": x-square-hmacsha256-signature is the base64
    # HMAC-SHA256 of the notification URL (as registered) followed by the raw body, under the
    # subscription's signature key.
    return {"x-square-hmacsha256-signature": base64.b64encode(stdlib_hmac(r, r["url"] + r["body"])).decode()}


def segment_sign(r):
    # Segment's Webhooks destinations: X-Signature is the hex HMAC-SHA1 of the body (the event as
    # JSON.stringify writes it) under the destination's shared secret.
    sig = hmac.new(r["secret"].encode(), r["body"].encode(), hashlib.sha1).hexdigest()
    return {"X-Signature": sig}


def intercom_sign(r):
    # Intercom "Signed notifications": X-Hub-Signature is "sha1=" + the hex HMAC-SHA1 of the body under
    # the app's client_secret, as Intercom's own sample receivers (intercom/intercom-webhooks) compute it.
    sig = hmac.new(r["secret"].encode(), r["body"].encode(), hashlib.sha1).hexdigest()
    return {"X-Hub-Signature": "sha1=" + sig}


def tally_sign(r):
    # Tally "Webhooks", its Express example: Tally-Signature is the base64 HMAC-SHA256 of
    # JSON.stringify(the parsed body) under the signing secret. That is the raw body only when the body
    # is compact JSON as JSON.stringify writes it, which is what Tally sends: the case's body must be so
    # (checked here with Python's compact output, which matches JSON.stringify's for strings, integers
    # and booleans, all a test body holds; not for a float such as 1.0).
    parsed = json.loads(r["body"])
    stringified = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False)
    assert stringified == r["body"], "a Tally body is JSON.stringify's output"
    return {"Tally-Signature": base64.b64encode(stdlib_hmac(r, stringified)).decode()}


def calcom_sign(r):
    # Cal.com's webhook sender (calcom/cal.com, packages/features/webhooks, createWebhookSignature):
    # X-Cal-Signature-256 is the lowercase hex HMAC-SHA256 of the body it posts, under the webhook's
    # secret, with no prefix.
    sig = hmac.new(r["secret"].encode(), r["body"].encode(), hashlib.sha256).hexdigest()
    return {"X-Cal-Signature-256": sig}


def customerio_sign(r):
    # Customer.io reporting webhooks: X-CIO-Signature is the hex HMAC-SHA256 of "v0:<timestamp>:<body>"
    # under the webhook's signing key, the timestamp (seconds) in X-CIO-Timestamp. Customer.io's own
    # library, npm customerio-node, judges these beside hookgate (verify_customerio.mjs).
    ts = str(r["timestamp"])
    sig = hmac.new(r["secret"].encode(), f"v0:{ts}:{r['body']}".encode(), hashlib.sha256).hexdigest()
    return {"X-CIO-Timestamp": ts, "X-CIO-Signature": sig}


def typeform_sign(r):
    # Typeform "Secure your webhooks": "sha256=" + base64 HMAC-SHA256 of the payload.
    sig = base64.b64encode(stdlib_hmac(r, r["body"])).decode()
    return {"Typeform-Signature": f"sha256={sig}"}


def calendly_sign(r):
    # Calendly "Webhook signatures": t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<body>">.
    ts = r["timestamp"]
    sig = stdlib_hmac(r, f"{ts}.{r['body']}").hex()
    return {"Calendly-Webhook-Signature": f"t={ts},v1={sig}"}


def generic_hmac_sign(r):
    # hookgate's generic preset as documented: template placeholders replaced by request values.
    content = r["signed_content"]
    for name, value in [("{id}", r.get("id", "")), ("{timestamp}", str(r["timestamp"])),
                        ("{method}", r["method"]), ("{url}", r["url"]), ("{body}", r["body"])]:
        content = content.replace(name, value)
    mac = hmac.new(r["secret"].encode(), content.encode(), getattr(hashlib, r["algorithm"])).digest()
    sig = mac.hex() if r["encoding"] == "hex" else base64.b64encode(mac).decode()
    headers = {r["header"]: r.get("prefix", "") + sig}
    # The timestamp and id headers are optional in the preset: sent only when the case names them.
    if r.get("timestamp_header"):
        headers[r["timestamp_header"]] = str(r["timestamp"])
    if r.get("id_header"):
        headers[r["id_header"]] = r["id"]
    return headers


def basic_sign(r):
    # requests builds the Authorization header; UTF-8 credentials as RFC 7617 recommends.
    from requests.auth import _basic_auth_str

    return {"Authorization": _basic_auth_str(r["username"].encode(), r["secret"].encode())}


def token_sign(r):
    import requests

    if "param" in r:
        prepared = requests.Request("POST", r["url"], params={r["param"]: r["secret"]}).prepare()
        return {}, prepared.url
    return {r["header"]: r["prefix"] + r["secret"]}


SIGNERS = {
    "hmac": generic_hmac_sign,
    "basic": basic_sign,
    "token": token_sign,
    "stripe": stripe_sign,
    "standard-webhooks": standard_webhooks_sign,
    "standard-webhooks-v1a": standard_webhooks_v1a_sign,
    "slack": slack_sign,
    "zoom": zoom_sign,
    "mailgun": mailgun_sign,
    "paddle": paddle_sign,
    "webflow": webflow_sign,
    "square": square_sign,
    "segment": segment_sign,
    "intercom": intercom_sign,
    "tally": tally_sign,
    "calcom": calcom_sign,
    "customerio": customerio_sign,
    "sendgrid": sendgrid_sign,
    "twilio": twilio_sign,
    "hubspot": hubspot_sign,
    "shopify": shopify_sign,
    "typeform": typeform_sign,
    "calendly": calendly_sign,
}


def sign(r):
    out = SIGNERS[r["preset"]](r)
    headers, url, *extra = out if isinstance(out, tuple) else (out, r.get("url"))
    return {"headers": headers, "url": url, **(extra[0] if extra else {})}


if __name__ == "__main__":
    json.dump([sign(r) for r in json.load(sys.stdin)], sys.stdout)

"""Amazon SNS messages signed as AWS documents it, for tests/sns.rs: a second implementation of the
signing side, with the `cryptography` package (OpenSSL), written from AWS's "Verifying the signatures of
Amazon SNS messages" (the fields each type signs, in order, `Name\\nvalue\\n`; SignatureVersion 1 is
SHA1withRSA, 2 is SHA256withRSA), not from hookgate's code.

stdin: JSON array of requests, each
  {"op": "keygen"}  -> {"key_pem", "cert_pem"}: an RSA-2048 key and a self-signed certificate for it
                       (subject sns.amazonaws.com, SAN IP 127.0.0.1 so it can serve TLS too, valid
                       from a day ago for a year)
  {"op": "sign", "key_pem", "message", "version"} -> the message with "SignatureVersion" and
                       "Signature" set
stdout: JSON array of results, one per request.
"""
import base64
import datetime
import ipaddress
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

NOTIFICATION = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]


def keygen():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return {
        "key_pem": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "cert_pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }


def sign(key_pem, message, version):
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    fields = NOTIFICATION if message["Type"] == "Notification" else CONFIRMATION
    text = "".join(f"{k}\n{message[k]}\n" for k in fields if k in message)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode("utf-8"), padding.PKCS1v15(), digest)
    signed = dict(message)
    signed["SignatureVersion"] = version
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


out = []
for r in json.load(sys.stdin):
    if r["op"] == "keygen":
        out.append(keygen())
    else:
        out.append(sign(r["key_pem"], r["message"], r["version"]))
json.dump(out, sys.stdout)

"""The ISO 4217 minor units as the standard's maintainer publishes them, for tests/mapping_transforms.rs:
PyPI `iso4217` ships SIX's own list (table.xml, the one ISO's site links to), so the test compares
hookgate's `from_minor_units` with the official table, not with the Rust crate's copy of it.

stdin: JSON array of requests, each {"op": "table"}
stdout: JSON array of results, one per request: {"published": "YYYY-MM-DD", "exponents": {code: n or null}}
(null for "N.A.", a currency without a minor unit such as XAU).
"""
import json
import sys

import iso4217


def table():
    exponents = {}
    for code, entry in iso4217.raw_table.items():
        if not code:
            continue
        units = entry.get("CcyMnrUnts")
        exponents[code] = int(units) if units and units.isdigit() else None
    return {"published": iso4217.__published__.isoformat(), "exponents": exponents}


def main():
    requests = json.load(sys.stdin)
    out = []
    for r in requests:
        if r.get("op") != "table":
            raise SystemExit(f"unknown op {r.get('op')!r}")
        out.append(table())
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

// Customer.io's own check of a reporting webhook's signature, from its official library (npm
// customerio-node, `verifyRequestSignature`), for tests/verify_presets.rs: on every request it judges,
// hookgate's generic preset, set up as mappings/customerio.yaml sets it, must agree. The library checks
// no time (the window is hookgate's own, tested beside this).
// stdin: JSON array of {"secret", "timestamp", "signature", "body"}; stdout: JSON array of booleans.
// Run with `node --input-type=module -e <source>` from .peers/node, as sign_github.mjs is.
import cio from "customerio-node";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map((r) =>
  cio.verifyRequestSignature({
    signingSecret: r.secret,
    timestamp: r.timestamp,
    signature: r.signature,
    body: r.body,
  }),
);
process.stdout.write(JSON.stringify(out));

// Webflow's own check of a webhook's signature, from its official SDK (npm webflow-api,
// `client.webhooks.verifySignature`), for tests/verify_presets.rs: on every request Webflow sends,
// hookgate must judge as Webflow's SDK does (the test lists where they differ on headers Webflow never
// sends). The SDK checks no time (the window is hookgate's own, tested beside this).
// stdin: JSON array of {"secret", "body", "headers"}; stdout: JSON array of booleans.
// Run with `node --input-type=module -e <source>` from .peers/node, as sign_github.mjs is.
import webflow from "webflow-api";

const client = new webflow.WebflowClient({ accessToken: "unused: no request is made" });
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const r of JSON.parse(input)) {
  out.push(await client.webhooks.verifySignature({ headers: r.headers, body: r.body, secret: r.secret }));
}
process.stdout.write(JSON.stringify(out));

// Zoom's own webhook handling, from @zoom/rivet (Zoom's official Node library), for tests/verify_presets.rs
// and tests/inbound_signatures.rs. Each request goes through the library's AwsLambdaReceiver, which checks
// the x-zm-signature and answers an endpoint.url_validation with its plainToken and encryptedToken.
// stdin: JSON array of {"secret", "body", "headers"}; stdout: JSON array of {"status", "body"} (body parsed).
// Run with `node --input-type=module -e <source>` from .peers/node, as sign_github.mjs is.
import { AwsLambdaReceiver } from "@zoom/rivet/meetings";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const r of JSON.parse(input)) {
  const handler = new AwsLambdaReceiver({ webhooksSecretToken: r.secret }).start();
  const saved = console.debug;
  console.debug = () => {}; // the receiver logs every event it gets
  const res = await handler({ body: r.body, headers: r.headers, isBase64Encoded: false }, {});
  console.debug = saved;
  out.push({ status: res.statusCode, body: JSON.parse(res.body) });
}
process.stdout.write(JSON.stringify(out));

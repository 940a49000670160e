// Sign bodies with @octokit/webhooks-methods, GitHub's official helper, for tests/verify_presets.rs.
// stdin: JSON array of {"secret", "body"}; stdout: JSON array of {"headers": {"X-Hub-Signature-256": ...}}.
// ES modules resolve bare imports next to the importing file, so the test runs this source with
// `node --input-type=module -e <source>` from .peers/node, where setup-peers installed the package.
import { sign, verify } from "@octokit/webhooks-methods";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const r of JSON.parse(input)) {
  const signature = await sign(r.secret, r.body);
  // Cross-check with the library's own verifier before handing the vector to the test.
  if (!(await verify(r.secret, r.body, signature))) throw new Error("octokit cannot verify its own signature");
  out.push({ headers: { "X-Hub-Signature-256": signature } });
}
process.stdout.write(JSON.stringify(out));

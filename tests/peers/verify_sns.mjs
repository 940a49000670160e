// AWS's own check of SNS messages (npm sns-validator, aws/aws-js-sns-message-validator), for
// tests/sns.rs: the messages hookgate accepts must be ones AWS's validator accepts, and the other way
// round. The validator fetches the certificate over HTTPS from a host its pattern allows; here that is
// a server of this script's own on 127.0.0.1, serving the test's certificate (which also serves as its
// TLS certificate, trusted for this process only). SigningCertURL, which is not signed, is pointed at it.
// Known difference: the validator signs an UnsubscribeConfirmation without its Token (AWS's
// documentation, and AWS's PHP validator, sign the Token), so the test sends it none.
// stdin: JSON array of {"key_pem", "cert_pem", "message"}; stdout: JSON array of booleans.
// Run with `node --input-type=module -e <source>` from .peers/node.
import https from "node:https";
import MessageValidator from "sns-validator";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const r of JSON.parse(input)) {
  const server = https.createServer({ key: r.key_pem, cert: r.cert_pem }, (req, res) => {
    res.writeHead(200, { "content-type": "application/x-pem-file" });
    res.end(r.cert_pem);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  https.globalAgent.options.ca = [r.cert_pem];
  const port = server.address().port;
  // A distinct URL per request: the validator caches certificates by URL for the process.
  const message = { ...r.message, SigningCertURL: `https://127.0.0.1:${port}/SimpleNotificationService-${out.length}.pem` };
  const validator = new MessageValidator(/^127\.0\.0\.1:\d+$/);
  const ok = await new Promise((done) => validator.validate(message, (err) => done(!err)));
  out.push(ok);
  server.close();
}
process.stdout.write(JSON.stringify(out));

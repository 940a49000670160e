<?php
// Sign Mailchimp Transactional (Mandrill) webhook requests with the function Mandrill publishes in "How
// to Authenticate Webhook Requests" (generateSignature: the URL, then each POST variable's key and value
// after ksort, base64 of the binary HMAC-SHA1), fed what PHP itself makes of the body: parse_str, as PHP
// fills $_POST. For the tests (tests/verify_presets.rs).
//
// Reads a JSON array of requests on stdin and prints a JSON array of results, one per request:
//     request: {"secret" (the webhook's key), "url" (as entered in Mandrill), "body" (the form)}
//     result:  {"headers": {name: value}}
function generateSignature($webhook_key, $url, $params) {
    $signed_data = $url;
    ksort($params);
    foreach ($params as $key => $value) {
        $signed_data .= $key;
        $signed_data .= $value;
    }
    return base64_encode(hash_hmac('sha1', $signed_data, $webhook_key, true));
}

$requests = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
$out = [];
foreach ($requests as $r) {
    parse_str($r['body'], $params);
    $out[] = [
        'headers' => [
            'Content-Type' => 'application/x-www-form-urlencoded',
            'User-Agent' => 'Mandrill-Webhook/1.0',
            'X-Mandrill-Signature' => generateSignature($r['secret'], $r['url'], $params),
        ],
    ];
}
echo json_encode($out, JSON_THROW_ON_ERROR);

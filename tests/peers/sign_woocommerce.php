<?php
// Build and sign WooCommerce webhook deliveries as WooCommerce does (WC_Webhook::deliver and
// WC_Webhook::generate_signature, plugins/woocommerce/includes/class-wc-webhook.php), for the tests.
//
// Reads a JSON array of requests on stdin and prints a JSON array of results, one per request:
//     request: {"secret", "payload" (the resource as the REST API returns it), "topic" ("order.created"),
//               "webhook_id", "delivery_id"}, or {"secret", "body"} to sign a body as it is
//               (tests/verify_presets.rs)
//     result:  {"body": the request body, "headers": {name: value}}
// The body is `trim(wp_json_encode($payload))`: PHP's json_encode with its default flags, so `/` is
// sent as `\/` and every non-ASCII character as a `\uXXXX` escape, as WooCommerce sends them. The
// signature is PHP's own base64_encode(hash_hmac('sha256', $body, $secret, true)), the call
// WooCommerce makes (with the default `woocommerce_webhook_hash_algorithm`, sha256), with the secret
// as WooCommerce stores it and decodes it first (wp_specialchars_decode($secret, ENT_QUOTES): PHP's
// htmlspecialchars_decode decodes the same references, of & < > " and ').
$requests = json_decode(stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
$out = [];
foreach ($requests as $r) {
    $body = array_key_exists('body', $r) ? $r['body'] : trim(json_encode($r['payload'], 0, 512));
    $topic = $r['topic'] ?? 'order.created';
    [$resource, $event] = explode('.', $topic, 2);
    $out[] = [
        'body' => $body,
        'headers' => [
            'Content-Type' => 'application/json',
            'User-Agent' => 'WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)',
            'X-WC-Webhook-Source' => 'https://shop.example.com/',
            'X-WC-Webhook-Topic' => $topic,
            'X-WC-Webhook-Resource' => $resource,
            'X-WC-Webhook-Event' => $event,
            'X-WC-Webhook-Signature' => base64_encode(
                hash_hmac('sha256', $body, htmlspecialchars_decode($r['secret'], ENT_QUOTES), true)
            ),
            'X-WC-Webhook-ID' => (string) ($r['webhook_id'] ?? 1),
            'X-WC-Webhook-Delivery-ID' => $r['delivery_id'] ?? bin2hex(random_bytes(20)),
        ],
    ];
}
echo json_encode($out, JSON_THROW_ON_ERROR);

//! Amazon SNS (and Amazon SES, whose events reach HTTPS endpoints through SNS): each message is signed
//! by AWS with RSA (PKCS#1 v1.5; `SignatureVersion` 1 is SHA-1, 2 is SHA-256) over a canonical text of
//! its fields, and carries the address of the certificate to check it with (`SigningCertURL`).
//!
//! AWS signs every account's messages with the same certificate, so a valid signature proves only that
//! SNS sent the message, not that one of *our* topics did: anyone can subscribe our URL to a topic of
//! theirs. The source therefore names the topics it takes (`topics`, required), and a message from any
//! other is refused before its certificate is even fetched.
//!
//! The certificate is fetched (`sns_fetch`) only from an SNS endpoint: `https://sns.<region>.amazonaws.com`
//! (`.com.cn` in China), as AWS's own validators require, or an origin the source lists in `endpoints`
//! (an emulator such as LocalStack). The same holds for the `SubscribeURL` that confirms a subscription
//! (`handshake`). The receive path checks with [`Sns::verify_fetching`], which fetches the certificate
//! unless `sns_fetch` has it cached, after every check that needs nothing fetched.

use super::error::VerifyError;
use super::request::{check_age, optional_header, Window};
use super::sns_fetch::{self, SigningCert};
use super::SignedRequest;
use serde::Deserialize;
use std::time::{Duration, SystemTime};
use url::Url;

/// SNS retries a delivery for at most an hour (the longest HTTP/S delivery policy), keeping the message's
/// `Timestamp` and signature, but a throttled subscription or a backlog can hold a message longer, and
/// SNS takes a 4xx as final: the message would be lost. So the window is a day, inside the 72 h that
/// dedup on `MessageId` keeps by default, which stops replays within it.
pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(24 * 3600);

/// The members AWS signs, in its order, each as `Name\nvalue\n`. A notification has `Message`,
/// `MessageId`, `Subject` (when the publisher set one), `Timestamp`, `TopicArn` and `Type`; a confirmation
/// has `SubscribeURL` and `Token` instead of `Subject`. Every one of them that is present is signed,
/// whatever the type, as AWS's PHP validator builds the text: a member with a signed name can never
/// ride along unsigned (a notification given a `SubscribeURL`, a confirmation a `Subject`), where
/// AWS's JS validator would take a notification with an unsigned `Token`.
const SIGNED_FIELDS: [&str; 8] = [
    "Message",
    "MessageId",
    "Subject",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
];

/// The longest certificate address taken (AWS's are about 90 bytes): anything longer is no SNS address,
/// and would only fill the cache of failed fetches.
const MAX_CERT_URL: usize = 512;
/// The longest `SubscribeURL` taken (AWS's, with the topic ARN and a token of some 250 characters, are
/// under 600 bytes).
const MAX_SUBSCRIBE_URL: usize = 2048;

/// What an `sns` source must dedup on (`VerifySpec::required_dedup`): SNS keeps it across retries.
pub(crate) const MESSAGE_ID: &str = "$.MessageId";

/// The header SNS names the message's type in, beside its `Type`.
const TYPE_HEADER: &str = "x-amz-sns-message-type";
const TOPIC_HEADER: &str = "x-amz-sns-topic-arn";
const RAW_HEADER: &str = "x-amz-sns-rawdelivery";

#[derive(Clone, Debug)]
pub(crate) struct Sns {
    pub topics: Vec<TopicPattern>,
    pub endpoints: Endpoints,
    pub tolerance: Duration,
}

/// A topic a source takes: `arn:<partition>:sns:<region>:<account>:<name>`, where the partition, the
/// region and the name may be `*`; the account may not (that would take every account's topics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicPattern {
    partition: Option<String>,
    region: Option<String>,
    account: String,
    name: Option<String>,
}

impl TopicPattern {
    /// Parse one entry of `topics`; the error is a fixed description.
    pub(crate) fn parse(text: &str) -> Result<TopicPattern, &'static str> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let [arn, partition, service, region, account, name] = parts[..] else {
            return Err("not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)");
        };
        if arn != "arn" || service != "sns" {
            return Err("not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)");
        }
        let wild = |s: &str| (s != "*").then(|| s.to_owned());
        if partition != "*" && !is_word(partition) {
            return Err("the partition must be aws, aws-cn, aws-us-gov, ... or *");
        }
        if region != "*" && !is_word(region) {
            return Err("the region must be a region name (us-east-1) or *");
        }
        if !is_account(account) {
            return Err(
                "the account must be 12 digits (a wildcard would take every AWS account's topics)",
            );
        }
        if name != "*" && !is_topic_name(name) {
            return Err("the topic name must be 1 to 256 letters, digits, -, _ and ., or *");
        }
        Ok(TopicPattern {
            partition: wild(partition),
            region: wild(region),
            account: account.to_owned(),
            name: wild(name),
        })
    }

    fn matches(&self, arn: &str) -> bool {
        let parts: Vec<&str> = arn.split(':').collect();
        let [p0, partition, service, region, account, name] = parts[..] else {
            return false;
        };
        // A wildcard takes any well-formed value, never odd text.
        let field = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        p0 == "arn"
            && service == "sns"
            && is_word(partition)
            && is_word(region)
            && is_topic_name(name)
            && field(&self.partition, partition)
            && field(&self.region, region)
            && self.account == account
            && field(&self.name, name)
    }
}

/// A partition or region name: lowercase letters, digits and `-`.
fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A topic name as AWS allows it (`.fifo` for FIFO topics).
fn is_topic_name(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where certificates and confirmation links may be fetched from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoints {
    /// `https://sns.<region>.amazonaws.com` and `https://sns.<region>.amazonaws.com.cn`, default port.
    Aws,
    /// Exactly these origins (scheme, host, port), instead of AWS's.
    Listed(Vec<url::Origin>),
}

impl Endpoints {
    /// Parse one entry of `endpoints`: an origin, `http(s)://host[:port]`, with nothing after it.
    pub(crate) fn parse_origin(text: &str) -> Result<url::Origin, &'static str> {
        let url = Url::parse(text.trim()).map_err(|_| "not an absolute URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials");
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err("must be an origin only (scheme, host and port), with no path or query");
        }
        Ok(url.origin())
    }

    /// Whether `url` is on an endpoint SNS serves from.
    fn trusts(&self, url: &Url) -> bool {
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        match self {
            Endpoints::Aws => {
                url.scheme() == "https"
                    && url.port().is_none()
                    && url.host_str().is_some_and(is_aws_sns_host)
            }
            Endpoints::Listed(origins) => origins.contains(&url.origin()),
        }
    }

    /// `SigningCertURL`, if it names a certificate (`.pem`) on a trusted endpoint.
    pub(crate) fn cert_url(&self, text: &str) -> Result<Url, VerifyError> {
        if text.len() > MAX_CERT_URL {
            return Err(untrusted(
                "SigningCertURL is too long for an SNS certificate",
            ));
        }
        let url = Url::parse(text).map_err(|_| untrusted("SigningCertURL is not a URL"))?;
        // One spelling per certificate (no query, fragment or escapes), so each is one cache entry.
        let plain = url.query().is_none() && url.fragment().is_none();
        let path_ok = match self {
            // AWS's are all `/SimpleNotificationService-<hex>.pem`.
            Endpoints::Aws => url
                .path()
                .strip_prefix("/SimpleNotificationService-")
                .and_then(|p| p.strip_suffix(".pem"))
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())),
            Endpoints::Listed(_) => url.path().ends_with(".pem"),
        };
        if !self.trusts(&url) || !plain || !path_ok {
            return Err(untrusted(
                "SigningCertURL is not a certificate on an SNS endpoint",
            ));
        }
        Ok(url)
    }

    /// `SubscribeURL`, if it is a `ConfirmSubscription` call on a trusted endpoint.
    pub(crate) fn subscribe_url(&self, text: &str) -> Result<Url, VerifyError> {
        if text.len() > MAX_SUBSCRIBE_URL {
            return Err(untrusted(
                "SubscribeURL is too long for an SNS confirmation",
            ));
        }
        let url = Url::parse(text).map_err(|_| untrusted("SubscribeURL is not a URL"))?;
        let confirms = url
            .query_pairs()
            .any(|(k, v)| k == "Action" && v == "ConfirmSubscription");
        if !self.trusts(&url) || !confirms {
            return Err(untrusted(
                "SubscribeURL is not a ConfirmSubscription call on an SNS endpoint",
            ));
        }
        Ok(url)
    }
}

fn untrusted(problem: &'static str) -> VerifyError {
    VerifyError::Untrusted(problem)
}

/// `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`: AWS's validators' pattern
/// (`^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$`; `url` has lowercased the host).
fn is_aws_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region
        .is_some_and(|r| r.len() >= 3 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The kinds of message SNS posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl MessageType {
    fn parse(text: &str) -> Option<MessageType> {
        match text {
            "Notification" => Some(MessageType::Notification),
            "SubscriptionConfirmation" => Some(MessageType::SubscriptionConfirmation),
            "UnsubscribeConfirmation" => Some(MessageType::UnsubscribeConfirmation),
            _ => None,
        }
    }
}

/// An SNS message as posted: a JSON object whose members are text; other members (`UnsubscribeURL`,
/// `MessageAttributes`) are not signed and not read here. A repeated member is refused by serde, and a
/// body that is not an object (serde would fill the struct from an array too) is refused, so the text
/// checked is the text dedup and the mapping read.
#[derive(Deserialize)]
struct Message {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
    #[serde(rename = "TopicArn")]
    topic_arn: Option<String>,
    #[serde(rename = "Subject")]
    subject: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "Timestamp")]
    timestamp: Option<String>,
    #[serde(rename = "SignatureVersion")]
    signature_version: Option<String>,
    #[serde(rename = "Signature")]
    signature: Option<String>,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: Option<String>,
    #[serde(rename = "SubscribeURL")]
    subscribe_url: Option<String>,
    #[serde(rename = "Token")]
    token: Option<String>,
}

impl Message {
    /// Read a body as an SNS message.
    fn parse(body: &[u8]) -> Result<Message, VerifyError> {
        let malformed = || VerifyError::Malformed {
            field: "body".to_owned(),
            problem: "not an SNS message (a JSON object whose members are text)",
        };
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(malformed());
        }
        serde_json::from_slice(body).map_err(|_| malformed())
    }

    fn field(&self, name: &str) -> Option<&str> {
        match name {
            "Message" => self.message.as_deref(),
            "MessageId" => self.message_id.as_deref(),
            "Subject" => self.subject.as_deref(),
            "SubscribeURL" => self.subscribe_url.as_deref(),
            "Timestamp" => self.timestamp.as_deref(),
            "Token" => self.token.as_deref(),
            "TopicArn" => self.topic_arn.as_deref(),
            "Type" => self.kind.as_deref(),
            _ => None,
        }
    }

    /// The text AWS signs: each signed member present, `Name\nvalue\n`, in [`SIGNED_FIELDS`]' order.
    fn string_to_sign(&self) -> String {
        let mut out = String::new();
        for name in SIGNED_FIELDS {
            if let Some(value) = self.field(name) {
                out.push_str(name);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
        }
        out
    }
}

/// A message whose form, topic, age and addresses passed; its signature is still to check.
struct Checked {
    message: Message,
    cert_url: Url,
    sha256: bool,
    signature: Vec<u8>,
}

/// The member `name`, which every message has.
fn required<'m>(value: &'m Option<String>, name: &'static str) -> Result<&'m str, VerifyError> {
    value.as_deref().ok_or(VerifyError::MissingField(name))
}

impl Sns {
    /// Everything but the signature: the message's form, that SNS's headers agree with it, its topic,
    /// its signature version, its age, and that its certificate (and, to confirm a subscription, its
    /// `SubscribeURL`) is on an SNS endpoint.
    fn checked(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Checked, VerifyError> {
        let message = Message::parse(req.body)?;
        // Raw message delivery posts the bare message, unsigned (and says so in a header): name the
        // setting rather than a missing field.
        if message.signature.is_none()
            || optional_header(req.headers, RAW_HEADER)?
                .is_some_and(|h| h.eq_ignore_ascii_case("true"))
        {
            return Err(VerifyError::Malformed {
                field: "body".to_owned(),
                problem:
                    "not a signed SNS message: turn raw message delivery off for this subscription",
            });
        }
        let kind_text = required(&message.kind, "Type")?;
        let kind = MessageType::parse(kind_text).ok_or(VerifyError::Malformed {
            field: "Type".to_owned(),
            problem: "not Notification, SubscriptionConfirmation or UnsubscribeConfirmation",
        })?;
        if optional_header(req.headers, TYPE_HEADER)?.is_some_and(|h| h != kind_text) {
            return Err(VerifyError::malformed_header(
                TYPE_HEADER,
                "differs from the message's Type",
            ));
        }
        let topic = required(&message.topic_arn, "TopicArn")?;
        if optional_header(req.headers, TOPIC_HEADER)?.is_some_and(|h| h != topic) {
            return Err(VerifyError::malformed_header(
                TOPIC_HEADER,
                "differs from the message's TopicArn",
            ));
        }
        for (value, name) in [
            (&message.message_id, "MessageId"),
            (&message.message, "Message"),
        ] {
            required(value, name)?;
        }
        if !self.topics.iter().any(|t| t.matches(topic)) {
            return Err(VerifyError::TopicNotAllowed(crate::error::one_line_within(
                topic, 256,
            )));
        }
        let sha256 = match message.signature_version.as_deref() {
            Some("1") => false,
            Some("2") => true,
            Some(_) => {
                return Err(VerifyError::Malformed {
                    field: "SignatureVersion".to_owned(),
                    problem: "not 1 or 2",
                })
            }
            None => return Err(VerifyError::MissingField("SignatureVersion")),
        };
        let signature = required(&message.signature, "Signature")?;
        let signature = super::crypto::base64_decode(signature).ok_or(VerifyError::Malformed {
            field: "Signature".to_owned(),
            problem: "not base64",
        })?;
        let timestamp = required(&message.timestamp, "Timestamp")?;
        let signed_at = chrono::DateTime::parse_from_rfc3339(timestamp).map_err(|_| {
            VerifyError::Malformed {
                field: "Timestamp".to_owned(),
                problem: "not an ISO 8601 time",
            }
        })?;
        check_age(
            i128::from(signed_at.timestamp_millis()),
            now,
            (self.tolerance, Window::Both),
        )?;
        let cert_url = self
            .endpoints
            .cert_url(required(&message.signing_cert_url, "SigningCertURL")?)?;
        if kind != MessageType::Notification {
            required(&message.token, "Token")?;
            self.endpoints
                .subscribe_url(required(&message.subscribe_url, "SubscribeURL")?)?;
        }
        Ok(Checked {
            message,
            cert_url,
            sha256,
            signature,
        })
    }

    /// The whole check, fetching the certificate unless it is cached: the one step that waits on the
    /// network, after every other check, so a request that fails them fetches nothing.
    pub(crate) async fn verify_fetching(
        &self,
        req: &SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let checked = self.checked(req, now)?;
        let cert = sns_fetch::certificate(&checked.cert_url).await?;
        verify_with(&cert, &checked, now)
    }

    /// Confirm a subscription: fetch `subscribe_url` (a verified message's), once it is found to be a
    /// `ConfirmSubscription` call on an endpoint this source trusts.
    pub(crate) async fn confirm(&self, subscribe_url: &str) -> Result<Option<String>, String> {
        let url = self
            .endpoints
            .subscribe_url(subscribe_url)
            .map_err(|e| e.to_string())?;
        sns_fetch::confirm(&url).await
    }

    /// The whole check, with the certificate from the cache (for a caller that cannot wait on the
    /// network; the receive path uses [`Sns::verify_fetching`]).
    pub(crate) fn verify(
        &self,
        req: &SignedRequest<'_>,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let checked = self.checked(req, now)?;
        let cert = sns_fetch::cached(&checked.cert_url)
            .ok_or_else(|| VerifyError::CertUnavailable("not fetched".to_owned()))?;
        verify_with(&cert, &checked, now)
    }
}

/// Check a message's signature with its certificate, which must be valid now.
fn verify_with(cert: &SigningCert, checked: &Checked, now: SystemTime) -> Result<(), VerifyError> {
    if !cert.valid_at(now) {
        return Err(untrusted(
            "the signing certificate is expired or not yet valid",
        ));
    }
    let text = checked.message.string_to_sign();
    if cert.verifies(checked.sha256, text.as_bytes(), &checked.signature) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_take_wildcards_but_not_for_the_account() {
        let t = TopicPattern::parse("arn:aws:sns:*:123456789012:ses-*").unwrap_err();
        assert!(t.contains("topic name"), "{t}");
        let any_region = TopicPattern::parse("arn:aws:sns:*:123456789012:ses-events").unwrap();
        assert!(any_region.matches("arn:aws:sns:eu-west-1:123456789012:ses-events"));
        assert!(!any_region.matches("arn:aws:sns:eu-west-1:123456789013:ses-events"));
        assert!(!any_region.matches("arn:aws:sns:eu-west-1:123456789012:ses-events-2"));
        assert!(!any_region.matches("arn:aws:sqs:eu-west-1:123456789012:ses-events"));
        let any_topic = TopicPattern::parse("arn:*:sns:us-east-1:123456789012:*").unwrap();
        assert!(any_topic.matches("arn:aws-cn:sns:us-east-1:123456789012:x"));
        assert!(!any_topic.matches("arn:aws:sns:us-east-2:123456789012:x"));
        assert!(!any_topic.matches("arn:aws:sns:us-east-1:123456789012:x:extra"));
        assert!(!any_topic.matches("arn:aws:sns:us-east-1:123456789012:"));
        assert!(!any_topic.matches("arn:aws:sns:us-east-1:123456789012:x\ny"));
        assert!(!any_topic.matches("arn:AWS:sns:us-east-1:123456789012:x"));
        assert!(any_topic.matches("arn:aws:sns:us-east-1:123456789012:orders.fifo"));
        for bad in [
            "arn:aws:sns:us-east-1:*:topic",
            "arn:aws:sns:us-east-1:12345:topic",
            "arn:aws:sqs:us-east-1:123456789012:topic",
            "arn:aws:sns:us-east-1:123456789012",
            "arn:aws:sns:US-EAST-1:123456789012:t",
            "arn:aws:sns:us-east-1:123456789012:",
        ] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_sns_endpoints_are_trusted() {
        let aws = Endpoints::Aws;
        let long = format!(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{}.pem",
            "a".repeat(512)
        );
        assert!(aws.cert_url(&long).is_err());
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://SNS.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-abc.pem",
        ] {
            assert!(aws.cert_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?n=1",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#1",
            "https://sns.us-east-1.amazonaws.com//SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a%62c.pem",
            "https://sns.us-east-1.amazonaws.com/x/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-.pem",
            "https://sns.a.amazonaws.com/x.pem",
            "https://s3.us-east-1.amazonaws.com/x.pem",
            "not a url",
        ] {
            assert!(aws.cert_url(bad).is_err(), "{bad}");
        }
        let confirm = "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336";
        assert!(aws.subscribe_url(confirm).is_ok());
        assert!(aws
            .subscribe_url("https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&Token=1")
            .is_err());
        let local = Endpoints::Listed(vec![Endpoints::parse_origin(
            "http://localhost.localstack.cloud:4566",
        )
        .unwrap()]);
        assert!(local
            .cert_url(
                "http://localhost.localstack.cloud:4566/_aws/sns/SimpleNotificationService-x.pem"
            )
            .is_ok());
        assert!(local
            .cert_url("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem")
            .is_err());
        assert!(local
            .cert_url("http://localhost.localstack.cloud:4567/x.pem")
            .is_err());
        assert!(Endpoints::parse_origin("http://localhost:4566/_aws").is_err());
        assert!(Endpoints::parse_origin("ftp://localhost").is_err());
    }

    #[test]
    fn the_signed_text_has_each_present_member_in_order() {
        let m = Message::parse(
            br#"{"Type":"Notification","MessageId":"m","TopicArn":"t","Message":"a\nb","Timestamp":"2012-05-02T00:54:06.655Z","SignatureVersion":"1","Signature":"x","SigningCertURL":"u","UnsubscribeURL":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            m.string_to_sign(),
            "Message\na\nb\nMessageId\nm\nTimestamp\n2012-05-02T00:54:06.655Z\nTopicArn\nt\nType\nNotification\n"
        );
        assert!(Message::parse(br#"{"Type":"Notification","Type":"Notification"}"#).is_err());
        // serde would fill the struct from an array of its members in order: what dedup and the
        // mapping could not read.
        let array = br#"["Notification","m","t",null,"a","2012-05-02T00:54:06.655Z","1","x","u",null,null]"#;
        assert!(
            serde_json::from_slice::<Message>(array).is_ok(),
            "what serde alone takes"
        );
        assert!(Message::parse(array).is_err());
        assert!(Message::parse(br#" {"Type":"Notification"}"#).is_ok());
        assert!(Message::parse(br#"{"Type":1}"#).is_err());
    }
}

//! Why a request failed verification: one precise line for the 401 body and a stable metrics label.
//! Nothing here ever carries a secret, an expected signature or a received credential.

use std::time::Duration;

/// Why a request failed verification. `Display` is the one-line reason sent with the 401;
/// [`VerifyError::reason`] is a short stable label for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(String),
    /// The token preset's query parameter is absent.
    #[error("missing query parameter {0}")]
    MissingParam(String),
    /// A member of the body a scheme reads is absent (Mailgun's `signature.token`, say).
    #[error("missing body field {0}")]
    MissingField(&'static str),
    /// A header (or parameter) is present but cannot be parsed. `problem` is a fixed description,
    /// never the received value.
    #[error("malformed {field}: {problem}")]
    Malformed {
        field: String,
        problem: &'static str,
    },
    /// The signed timestamp is too old or too far in the future.
    #[error("timestamp outside the {} window", format_window(*.0))]
    Stale(Duration),
    /// No configured secret produces any of the received signatures.
    #[error("no signature matches")]
    Mismatch,
    /// Twilio JSON requests: the body's SHA-256 differs from the signed `bodySHA256` parameter.
    #[error("body does not match the signed bodySHA256")]
    BodyHashMismatch,
    /// Basic auth or token presets: the credentials are wrong.
    #[error("bad credentials")]
    BadCredentials,
    /// SNS: the message comes from a topic the source does not take (AWS signs every account's messages).
    #[error("topic {0} is not one this source takes")]
    TopicNotAllowed(String),
    /// SNS: the certificate or a link the message names is not on an SNS endpoint, or the certificate is
    /// not valid now. `0` is a fixed description.
    #[error("untrusted: {0}")]
    Untrusted(&'static str),
    /// SNS: the signing certificate could not be fetched. Not the sender's fault: answered with 502 so it
    /// retries.
    #[error("the SNS signing certificate could not be fetched: {0}")]
    CertUnavailable(String),
}

impl VerifyError {
    /// A short stable label for metrics: `missing_header`, `missing_field`, `malformed`, `stale`,
    /// `mismatch`, `bad_credentials`, or for SNS `topic_not_allowed`, `untrusted`, `cert_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) | VerifyError::MissingParam(_) => "missing_header",
            VerifyError::MissingField(_) => "missing_field",
            VerifyError::Malformed { .. } => "malformed",
            VerifyError::Stale(_) => "stale",
            VerifyError::Mismatch | VerifyError::BodyHashMismatch => "mismatch",
            VerifyError::BadCredentials => "bad_credentials",
            VerifyError::TopicNotAllowed(_) => "topic_not_allowed",
            VerifyError::Untrusted(_) => "untrusted",
            VerifyError::CertUnavailable(_) => "cert_unavailable",
        }
    }

    pub(crate) fn malformed_header(header: &str, problem: &'static str) -> VerifyError {
        VerifyError::Malformed {
            field: format!("{header} header"),
            problem,
        }
    }
}

/// `300 s`, or `1500 ms` for windows that are not whole seconds.
pub(crate) fn format_window(window: Duration) -> String {
    if window.subsec_millis() == 0 {
        format!("{} s", window.as_secs())
    } else {
        format!("{} ms", window.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_reasons() {
        let cases = [
            (
                VerifyError::MissingHeader("Stripe-Signature".into()),
                "missing header Stripe-Signature",
                "missing_header",
            ),
            (
                VerifyError::malformed_header("Stripe-Signature", "no t= timestamp"),
                "malformed Stripe-Signature header: no t= timestamp",
                "malformed",
            ),
            (
                VerifyError::Stale(Duration::from_secs(300)),
                "timestamp outside the 300 s window",
                "stale",
            ),
            (
                VerifyError::Stale(Duration::from_millis(1500)),
                "timestamp outside the 1500 ms window",
                "stale",
            ),
            (VerifyError::Mismatch, "no signature matches", "mismatch"),
            (
                VerifyError::MissingField("signature.token"),
                "missing body field signature.token",
                "missing_field",
            ),
            (
                VerifyError::BadCredentials,
                "bad credentials",
                "bad_credentials",
            ),
            (
                VerifyError::TopicNotAllowed("arn:aws:sns:us-east-1:123456789012:x".into()),
                "topic arn:aws:sns:us-east-1:123456789012:x is not one this source takes",
                "topic_not_allowed",
            ),
            (
                VerifyError::CertUnavailable("SNS answered 404 Not Found".into()),
                "the SNS signing certificate could not be fetched: SNS answered 404 Not Found",
                "cert_unavailable",
            ),
        ];
        for (err, message, reason) in cases {
            assert_eq!(err.to_string(), message);
            assert_eq!(err.reason(), reason);
        }
    }
}

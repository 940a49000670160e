//! Compiling a [`VerifySpec`] into a [`Verifier`]: resolve secrets and validate options, collecting
//! every problem so an operator fixes a source file in one pass. Messages are one line each and
//! name options and references, never secret values.

use super::credentials::{Basic, Token, TokenLocation};
use super::crypto::{KeyKind, PublicKey};
use super::mailgun::Mailgun;
use super::sns::{Endpoints, Sns, TopicPattern};
use super::twilio::{Mandrill, Twilio};
use super::{presets, Check, Preset, Verifier, VerifySpec};
use crate::secret::{Secret, SecretRef};
use std::time::Duration;

/// Replay window when `tolerance` is not set.
pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Problems found so far; each is one line.
pub(crate) type Problems = Vec<String>;

/// Whether compiling reads secrets (`build`) or only checks their references (`check`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrets {
    Resolve,
    SyntaxOnly,
}

impl VerifySpec {
    /// Resolve secrets and compile the verifier; every problem is returned.
    pub fn build(&self) -> Result<Verifier, Vec<String>> {
        match self.compile(Secrets::Resolve) {
            (Some(check), problems) if problems.is_empty() => Ok(Verifier {
                preset: self.preset,
                check,
            }),
            (_, problems) => Err(problems),
        }
    }

    /// Everything `build` checks except reading the secrets: options, and that each secret is a
    /// well-formed `${env:..}`/`${file:..}` reference. For `hookgate check`, which runs without
    /// secrets. (Checks that need the value, such as a Standard Webhooks secret being base64,
    /// happen in `build` only.)
    pub fn check(&self) -> Result<(), Vec<String>> {
        let (_, problems) = self.compile(Secrets::SyntaxOnly);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn compile(&self, mode: Secrets) -> (Option<Check>, Problems) {
        let mut problems = Problems::new();
        self.check_applicable(&mut problems);
        let check = match self.preset {
            Preset::Twilio => self.twilio(mode, &mut problems).map(Check::Twilio),
            Preset::Mandrill => self
                .twilio(mode, &mut problems)
                .map(|Twilio { keys, public_url }| Check::Mandrill(Mandrill { keys, public_url })),
            Preset::Mailgun => self.mailgun(mode, &mut problems).map(Check::Mailgun),
            Preset::Basic => self.basic(mode, &mut problems).map(Check::Basic),
            Preset::Token => self.token(mode, &mut problems).map(Check::Token),
            Preset::Sns => self.sns(&mut problems).map(Check::Sns),
            _ => presets::mac_scheme(self, mode, &mut problems).map(Check::Mac),
        };
        (check, problems)
    }

    /// Options set in the spec, by YAML name.
    fn set_options(&self) -> [(&'static str, bool); 21] {
        [
            ("secret", self.secret.is_some()),
            ("secrets", !self.secrets.is_empty()),
            ("public_key", self.public_key.is_some()),
            ("public_keys", !self.public_keys.is_empty()),
            ("tolerance", self.tolerance.is_some()),
            ("version", self.version.is_some()),
            ("public_url", self.public_url.is_some()),
            ("header", self.header.is_some()),
            ("prefix", self.prefix.is_some()),
            ("algorithm", self.algorithm.is_some()),
            ("encoding", self.encoding.is_some()),
            ("timestamp_header", self.timestamp_header.is_some()),
            ("id_header", self.id_header.is_some()),
            ("signed_content", self.signed_content.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("passwords", !self.passwords.is_empty()),
            ("param", self.param.is_some()),
            ("field", self.field.is_some()),
            ("topics", !self.topics.is_empty()),
            ("endpoints", !self.endpoints.is_empty()),
        ]
    }

    /// Report options the preset never uses. Options that apply only in some configurations
    /// (hubspot `tolerance` with v3, token `prefix` with `header`) are checked by the preset.
    fn check_applicable(&self, problems: &mut Problems) {
        const SECRETS: &[&str] = &["secret", "secrets"];
        let extra = self.preset.options();
        let uses_secrets = !matches!(self.preset, Preset::Basic | Preset::Sendgrid | Preset::Sns);
        for (name, set) in self.set_options() {
            let applies = extra.contains(&name) || (uses_secrets && SECRETS.contains(&name));
            if set && !applies {
                problems.push(format!("`{name}` does not apply to preset {}", self.preset));
            }
        }
    }

    /// All configured secrets (`secret` then `secrets`), at least one, each resolved.
    /// Returned with the option name each came from, for messages about its content: those resolved, so
    /// that their content is checked even when another could not be (its problem is reported).
    pub(crate) fn secrets(&self, mode: Secrets, problems: &mut Problems) -> Vec<(String, Secret)> {
        let needs = format!("preset {} needs `secret` or `secrets`", self.preset);
        resolve_all(
            ("secret", self.secret.as_ref()),
            ("secrets", &self.secrets),
            &needs,
            mode,
            problems,
        )
        .0
    }

    /// Standard Webhooks: the shared secrets, for symmetric `v1` signatures, and the sender's public
    /// keys, for asymmetric `v1a` ones. A source needs one kind and may have both (a sender moving from
    /// one to the other signs with both for a while).
    pub(crate) fn standard_webhooks_keys(
        &self,
        mode: Secrets,
        problems: &mut Problems,
    ) -> (Vec<(String, Secret)>, Vec<PublicKey>) {
        let has_secret = self.secret.is_some() || !self.secrets.is_empty();
        let has_public_key = self.public_key.is_some() || !self.public_keys.is_empty();
        if !has_secret && !has_public_key {
            problems.push(
                "preset standard-webhooks needs `secret` or `secrets` (v1 signatures), or `public_key` or `public_keys` (v1a)"
                    .to_owned(),
            );
            return (Vec::new(), Vec::new());
        }
        let secrets = if has_secret {
            self.secrets(mode, problems)
        } else {
            Vec::new()
        };
        (secrets, self.public_keys(KeyKind::Ed25519, mode, problems))
    }

    /// The public keys of a preset that checks nothing else (SendGrid): at least one.
    pub(crate) fn public_keys_needed(
        &self,
        kind: KeyKind,
        mode: Secrets,
        problems: &mut Problems,
    ) -> Vec<PublicKey> {
        if self.public_key.is_none() && self.public_keys.is_empty() {
            problems.push(format!(
                "preset {} needs `public_key` (or `public_keys` to rotate)",
                self.preset
            ));
            return Vec::new();
        }
        self.public_keys(kind, mode, problems)
    }

    /// `public_key` then `public_keys`, each checked to be a usable key of `kind`. A key is no secret, so
    /// it may be written as it is (then `hookgate check` checks it too), or referenced like a secret
    /// (`${file:}` from a mounted Secret or ConfigMap); the value is never quoted in a message, in case
    /// a private key was given by mistake.
    fn public_keys(&self, kind: KeyKind, mode: Secrets, problems: &mut Problems) -> Vec<PublicKey> {
        let mut keys = Vec::new();
        let named = named(
            ("public_key", self.public_key.as_ref()),
            ("public_keys", &self.public_keys),
        );
        for (field, text) in named {
            let parsed = if text.trim_start().starts_with("${") {
                match secret(&field, text, mode, problems) {
                    // Parsed where it was read: the text is not copied out of its `Secret`, in case it
                    // was a private key after all.
                    Some(resolved) => PublicKey::parse(kind, resolved.expose()),
                    // Not read (`hookgate check`), or its problem is reported.
                    None => continue,
                }
            } else {
                PublicKey::parse(kind, text)
            };
            match parsed {
                Ok(key) => keys.push(key),
                Err(why) => problems.push(format!("{field}: {why}")),
            }
        }
        keys
    }

    /// The replay window: `tolerance` parsed as a duration (`300s`, `5m`), else the preset's default
    /// (also when invalid: reported). The default is 300 s, but Mailgun's is 9 hours, since it resends
    /// a failed delivery with its original signature for 8 hours, and SNS's a day (`sns::DEFAULT_TOLERANCE`).
    pub(crate) fn tolerance(&self, problems: &mut Problems) -> Duration {
        let default = match self.preset {
            Preset::Mailgun => super::mailgun::DEFAULT_TOLERANCE,
            Preset::Sns => super::sns::DEFAULT_TOLERANCE,
            _ => DEFAULT_TOLERANCE,
        };
        let Some(text) = &self.tolerance else {
            return default;
        };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => {
                problems.push("tolerance: must be more than zero".to_owned());
                default
            }
            Ok(d) => d,
            Err(_) => {
                problems.push(format!(
                    "tolerance: invalid duration `{}` (write e.g. 300s or 5m)",
                    crate::error::one_line(text)
                ));
                default
            }
        }
    }

    /// `public_url`, checked to be an absolute http(s) URL without query or fragment (the
    /// received query string is appended to it).
    pub(crate) fn public_url(&self, problems: &mut Problems) -> Option<String> {
        let url = self.public_url.as_ref()?.trim();
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        if !scheme_ok || url.contains(['?', '#']) || url.contains(char::is_whitespace) {
            problems.push(
                "public_url: must be an absolute http(s) URL without query or fragment".to_owned(),
            );
            return None;
        }
        Some(url.to_owned())
    }

    /// Twilio's keys and public URL; Mandrill's are the same.
    fn twilio(&self, mode: Secrets, problems: &mut Problems) -> Option<Twilio> {
        let keys = presets::utf8_keys(self.secrets(mode, problems));
        let public_url = self.public_url(problems);
        Some(Twilio { keys, public_url })
    }

    /// SNS: the topics (at least one: AWS signs every account's messages alike), the endpoints trusted
    /// instead of AWS's, the replay window. Nothing secret.
    fn sns(&self, problems: &mut Problems) -> Option<Sns> {
        if self.topics.is_empty() {
            problems.push(
                "preset sns needs `topics`: the topic ARNs it takes (AWS signs every account's messages, so a signature alone does not say they are yours)"
                    .to_owned(),
            );
        }
        let mut topics = Vec::new();
        for (i, text) in self.topics.iter().enumerate() {
            match TopicPattern::parse(text) {
                Ok(t) => topics.push(t),
                Err(why) => problems.push(format!("topics[{i}]: {why}")),
            }
        }
        let mut origins = Vec::new();
        for (i, text) in self.endpoints.iter().enumerate() {
            match Endpoints::parse_origin(text) {
                Ok(o) => origins.push(o),
                Err(why) => problems.push(format!("endpoints[{i}]: {why}")),
            }
        }
        let endpoints = if origins.is_empty() {
            Endpoints::Aws
        } else {
            Endpoints::Listed(origins)
        };
        let tolerance = self.tolerance(problems);
        Some(Sns {
            topics,
            endpoints,
            tolerance,
        })
    }

    fn mailgun(&self, mode: Secrets, problems: &mut Problems) -> Option<Mailgun> {
        let keys = presets::utf8_keys(self.secrets(mode, problems));
        let tolerance = self.tolerance(problems);
        Some(Mailgun { keys, tolerance })
    }

    fn basic(&self, mode: Secrets, problems: &mut Problems) -> Option<Basic> {
        let username = match self.username.as_deref() {
            None => {
                problems.push("preset basic needs `username`".to_owned());
                None
            }
            // A user name may be a reference too, but need not be: it is not a secret.
            Some(r) if r.trim_start().starts_with("${") => {
                secret("username", r, mode, problems).map(|s| s.expose().to_owned())
            }
            Some(name) if name.contains(':') => {
                problems.push("username: must not contain `:`".to_owned());
                None
            }
            Some(name) => Some(name.to_owned()),
        };
        // `password` then `passwords`: during a rotation every one of them is accepted.
        let (passwords, all) = resolve_all(
            ("password", self.password.as_ref()),
            ("passwords", &self.passwords),
            "preset basic needs `password` (or `passwords` to rotate)",
            mode,
            problems,
        );
        if !all {
            return None;
        }
        Some(Basic {
            username: username?,
            passwords: passwords.into_iter().map(|(_, p)| p).collect(),
        })
    }

    fn token(&self, mode: Secrets, problems: &mut Problems) -> Option<Token> {
        let tokens = self
            .secrets(mode, problems)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let location = match (&self.header, &self.param, &self.field) {
            (Some(name), None, None) => Some(TokenLocation::Header {
                name: header_name("header", name, problems)?,
                prefix: self.prefix.clone().unwrap_or_default(),
            }),
            (None, Some(param), None) => {
                if param.is_empty() {
                    problems.push("param: must not be empty".to_owned());
                }
                Some(TokenLocation::Param(param.clone()))
            }
            (None, None, Some(field)) => {
                if field.is_empty() || field.starts_with('$') {
                    problems.push(
                        "field: the name of a top-level member of the JSON body, such as google_key (not a JSONPath)"
                            .to_owned(),
                    );
                }
                Some(TokenLocation::Field(field.clone()))
            }
            (None, None, None) => {
                problems.push("preset token needs `header`, `param` or `field`".to_owned());
                None
            }
            _ => {
                problems.push("preset token takes one of `header`, `param` and `field`".to_owned());
                None
            }
        };
        if self.prefix.is_some() && self.header.is_none() {
            problems.push("`prefix` applies to preset token only with `header`".to_owned());
        }
        Some(Token {
            location: location?,
            tokens,
        })
    }
}

/// Parse a secret reference and, in `Resolve` mode, read it. Problems are prefixed with the option.
/// The secrets of an option pair such as `secret` + `secrets: [..]`: the single one first, then the list's
/// items named by index (`secrets[1]`). Those resolved, and whether every one was: not when a problem was
/// reported (each one, all at once), when only the syntax is checked, or when neither option is set
/// (`needs`).
fn resolve_all(
    (one_name, one): (&str, Option<&String>),
    (many_name, many): (&str, &[String]),
    needs: &str,
    mode: Secrets,
    problems: &mut Problems,
) -> (Vec<(String, Secret)>, bool) {
    if one.is_none() && many.is_empty() {
        problems.push(needs.to_owned());
        return (Vec::new(), false);
    }
    let references = named((one_name, one), (many_name, many));
    let mut resolved = Vec::new();
    let mut all = true;
    for (field, reference) in references {
        match secret(&field, reference, mode, problems) {
            Some(s) => resolved.push((field, s)),
            None => all = false,
        }
    }
    (resolved, all)
}

/// The values of an option pair such as `secret` + `secrets: [..]`, each with the name a message gives
/// it: the single one first, then the list's items by index (`secrets[1]`).
fn named<'a>(
    (one_name, one): (&str, Option<&'a String>),
    (many_name, many): (&str, &'a [String]),
) -> impl Iterator<Item = (String, &'a String)> {
    let many_name = many_name.to_owned();
    one.map(|r| (one_name.to_owned(), r)).into_iter().chain(
        many.iter()
            .enumerate()
            .map(move |(i, r)| (format!("{many_name}[{i}]"), r)),
    )
}

fn secret(field: &str, reference: &str, mode: Secrets, problems: &mut Problems) -> Option<Secret> {
    let resolved = SecretRef::parse(reference).and_then(|r| match mode {
        Secrets::Resolve => r.resolve().map(Some),
        Secrets::SyntaxOnly => Ok(None),
    });
    match resolved {
        Ok(secret) => secret,
        Err(e) => {
            problems.push(format!("{field}: {e}"));
            None
        }
    }
}

/// Validate a header name from the spec, keeping the spelling for messages.
pub(crate) fn header_name(field: &str, name: &str, problems: &mut Problems) -> Option<String> {
    let name = name.trim();
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        problems.push(format!(
            "{field}: `{}` is not a valid header name",
            crate::error::one_line(name)
        ));
        return None;
    }
    Some(name.to_owned())
}

impl Preset {
    /// The options besides `secret`/`secrets` the preset may take. Some apply only in some
    /// configurations (hubspot `tolerance` with v3, token `prefix` with `header`): the preset checks those.
    pub(crate) fn options(self) -> &'static [&'static str] {
        match self {
            Preset::StandardWebhooks | Preset::Sendgrid => {
                &["tolerance", "public_key", "public_keys"]
            }
            Preset::Stripe
            | Preset::Calendly
            | Preset::Paddle
            | Preset::Webflow
            | Preset::Slack
            | Preset::Zoom
            | Preset::Mailgun => &["tolerance"],
            Preset::Github
            | Preset::Shopify
            | Preset::Typeform
            | Preset::Woocommerce
            | Preset::Segment => &[],
            Preset::Hubspot => &["version", "public_url", "tolerance"],
            Preset::Twilio | Preset::Mandrill | Preset::Square => &["public_url"],
            Preset::Sns => &["topics", "endpoints", "tolerance"],
            Preset::Hmac => &[
                "tolerance",
                "public_url",
                "header",
                "prefix",
                "algorithm",
                "encoding",
                "timestamp_header",
                "id_header",
                "signed_content",
            ],
            Preset::Basic => &["username", "password", "passwords"],
            Preset::Token => &["header", "prefix", "param", "field"],
        }
    }
}

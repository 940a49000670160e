//! Secrets referenced from mapping files and config as `${env:NAME}` or `${file:/path}`.
//!
//! Secure by default: a literal value is refused, so secrets never live in files that get committed,
//! reviewed or printed by `hookgate check`. A resolved [`Secret`] never shows its value through
//! `Debug` or `Display`, and no error here ever contains a secret value.

use std::fmt;
use std::path::PathBuf;

/// A resolved secret. `Debug` and `Display` print `***`; use [`Secret::expose`] at the point of use.
/// No `PartialEq`: comparing secrets must go through a constant-time comparison.
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a secret reference could not be resolved. Messages name the reference, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The value is not a `${...}` reference. The value itself is not echoed: it may be a pasted secret.
    #[error("a literal secret is not allowed; write ${{env:NAME}} or ${{file:/path}}")]
    Literal,
    #[error("unknown secret reference kind `{0}`; use ${{env:NAME}} or ${{file:/path}}")]
    UnknownKind(String),
    #[error("secret reference ${{{0}:}} has an empty name")]
    EmptyName(&'static str),
    #[error("env var {0} is not set")]
    EnvNotSet(String),
    #[error("env var {0} is not valid UTF-8")]
    EnvNotUnicode(String),
    #[error("env var {0} is empty")]
    EnvEmpty(String),
    #[error("secret file {path} cannot be read: {kind}")]
    FileUnreadable {
        path: PathBuf,
        kind: std::io::ErrorKind,
    },
    #[error("secret file {0} is not valid UTF-8")]
    FileNotUnicode(PathBuf),
    #[error("secret file {0} is empty")]
    FileEmpty(PathBuf),
}

/// A parsed secret reference, not yet read. Parsing needs no secret, so `hookgate check` can
/// validate references on a machine that has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// `${env:NAME}`: the variable's value, as is.
    Env(String),
    /// `${file:/path}`: the file's content without trailing newlines.
    File(PathBuf),
}

impl SecretRef {
    /// Parse `${env:NAME}` or `${file:/path}`. Anything else, including a literal value, is an error.
    pub fn parse(reference: &str) -> Result<SecretRef, SecretError> {
        let inner = reference
            .trim()
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .ok_or(SecretError::Literal)?;
        let (kind, name) = inner.split_once(':').ok_or(SecretError::Literal)?;
        match kind {
            "env" if name.is_empty() => Err(SecretError::EmptyName("env")),
            "env" => Ok(SecretRef::Env(name.to_owned())),
            "file" if name.is_empty() => Err(SecretError::EmptyName("file")),
            "file" => Ok(SecretRef::File(PathBuf::from(name))),
            other => Err(SecretError::UnknownKind(truncate_for_message(other))),
        }
    }

    /// Read the secret. Empty secrets are refused: an empty HMAC key or token would accept
    /// forged requests.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env(name) => resolve_env(name),
            SecretRef::File(path) => resolve_file(path),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "${{env:{name}}}"),
            SecretRef::File(path) => write!(f, "${{file:{}}}", path.display()),
        }
    }
}

impl Secret {
    /// Resolve `${env:NAME}` (the variable's value, as is) or `${file:/path}` (the file's content
    /// without trailing newlines, which Kubernetes Secret files and editors often add).
    /// Anything else, including a literal value, is an error; so is an empty secret.
    pub fn resolve(reference: &str) -> Result<Secret, SecretError> {
        SecretRef::parse(reference)?.resolve()
    }

    /// A value stored through the admin API (a subscription's credentials), where a literal is the point:
    /// the API is authenticated and the value never reaches a file. Empty is refused like everywhere.
    pub fn stored(value: &str) -> Result<Secret, SecretError> {
        if value.is_empty() {
            return Err(SecretError::EnvEmpty("(stored value)".into()));
        }
        Ok(Secret(value.to_owned()))
    }

    /// The secret value. Call it only where the value is used (HMAC key, comparison), never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn resolve_env(name: &str) -> Result<Secret, SecretError> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Err(SecretError::EnvEmpty(name.to_owned())),
        Ok(value) => Ok(Secret(value)),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvNotSet(name.to_owned())),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode(name.to_owned())),
    }
}

fn resolve_file(path: &std::path::Path) -> Result<Secret, SecretError> {
    let bytes = std::fs::read(path).map_err(|e| SecretError::FileUnreadable {
        path: path.to_owned(),
        kind: e.kind(),
    })?;
    let text =
        String::from_utf8(bytes).map_err(|_| SecretError::FileNotUnicode(path.to_owned()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::FileEmpty(path.to_owned()));
    }
    Ok(Secret(value.to_owned()))
}

/// Reference kinds are echoed in errors; keep a mistyped one short so a message stays one line.
fn truncate_for_message(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(20).collect();
    clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn env_reference_resolves() {
        // Each test uses its own variable, so parallel tests do not race on the environment.
        std::env::set_var("HOOKGATE_TEST_SECRET_ENV_OK", "s3cr3t-value");
        let s = Secret::resolve("${env:HOOKGATE_TEST_SECRET_ENV_OK}").unwrap();
        assert_eq!(s.expose(), "s3cr3t-value");
    }

    #[test]
    fn missing_env_is_named_in_the_error() {
        let e = Secret::resolve("${env:HOOKGATE_TEST_SECRET_SURELY_UNSET}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "env var HOOKGATE_TEST_SECRET_SURELY_UNSET is not set"
        );
    }

    #[test]
    fn empty_env_is_refused() {
        std::env::set_var("HOOKGATE_TEST_SECRET_ENV_EMPTY", "");
        let e = Secret::resolve("${env:HOOKGATE_TEST_SECRET_ENV_EMPTY}").unwrap_err();
        assert!(matches!(e, SecretError::EnvEmpty(_)));
    }

    #[test]
    fn file_reference_trims_trailing_newline_only() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"  padded secret \n").unwrap();
        let reference = format!("${{file:{}}}", f.path().display());
        let s = Secret::resolve(&reference).unwrap();
        assert_eq!(s.expose(), "  padded secret ");

        let mut crlf = tempfile::NamedTempFile::new().unwrap();
        crlf.write_all(b"whsec_abc\r\n").unwrap();
        let s = Secret::resolve(&format!("${{file:{}}}", crlf.path().display())).unwrap();
        assert_eq!(s.expose(), "whsec_abc");
    }

    #[test]
    fn missing_file_is_reported_without_value() {
        let e = Secret::resolve("${file:/nonexistent/hookgate/secret}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret file /nonexistent/hookgate/secret cannot be read: entity not found"
        );
    }

    #[test]
    fn empty_file_is_refused() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"\n").unwrap();
        let e = Secret::resolve(&format!("${{file:{}}}", f.path().display())).unwrap_err();
        assert!(matches!(e, SecretError::FileEmpty(_)));
    }

    #[test]
    fn literal_is_rejected_and_not_echoed() {
        for literal in ["whsec_live_value", "${env}", "$env:X", "{env:X}", ""] {
            let e = Secret::resolve(literal).unwrap_err();
            assert!(matches!(e, SecretError::Literal), "{literal}: {e}");
            if !literal.is_empty() {
                assert!(!e.to_string().contains(literal));
            }
        }
    }

    #[test]
    fn unknown_kind_and_empty_name() {
        assert!(matches!(
            Secret::resolve("${vault:kv/x}").unwrap_err(),
            SecretError::UnknownKind(k) if k == "vault"
        ));
        assert!(matches!(
            Secret::resolve("${env:}").unwrap_err(),
            SecretError::EmptyName("env")
        ));
    }

    #[test]
    fn references_parse_without_reading() {
        assert_eq!(
            SecretRef::parse("${env:STRIPE_WEBHOOK_SECRET}").map(|r| r.to_string()),
            Ok("${env:STRIPE_WEBHOOK_SECRET}".to_owned())
        );
        assert_eq!(
            SecretRef::parse(" ${file:/run/secrets/hook} "),
            Ok(SecretRef::File(PathBuf::from("/run/secrets/hook")))
        );
        assert!(SecretRef::parse("plain").is_err());
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        std::env::set_var("HOOKGATE_TEST_SECRET_ENV_DEBUG", "do-not-print-me");
        let s = Secret::resolve("${env:HOOKGATE_TEST_SECRET_ENV_DEBUG}").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{:?}", Some(&s)).contains("do-not-print-me"));
    }
}

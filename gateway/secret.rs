//! Secrets referenced from mapping files and config as `${env:NAME}` or `${file:/path}`.
//!
//! Secure by default: a literal value is refused, so secrets never live in files that get committed,
//! reviewed or printed by `hookgate check`. A resolved [`Secret`] never shows its value through
//! `Debug` or `Display`, and no error here ever contains a secret value.

use std::fmt;
use std::path::PathBuf;

/// A resolved secret. `Debug` and `Display` print `***`; use [`Secret::expose`] at the point of use.
#[derive(Clone, PartialEq, Eq)]
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
#[derive(Debug, thiserror::Error)]
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

impl Secret {
    /// Resolve `${env:NAME}` (the variable's value, as is) or `${file:/path}` (the file's content
    /// without trailing newlines, which Kubernetes Secret files and editors often add).
    /// Anything else, including a literal value, is an error; empty secrets are refused too, since
    /// an empty HMAC key or token would accept forged requests.
    pub fn resolve(reference: &str) -> Result<Secret, SecretError> {
        let inner = reference
            .trim()
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .ok_or(SecretError::Literal)?;
        let (kind, name) = inner.split_once(':').ok_or(SecretError::Literal)?;
        match kind {
            "env" => resolve_env(name),
            "file" => resolve_file(name),
            other => Err(SecretError::UnknownKind(truncate_for_message(other))),
        }
    }

    /// The secret value. Call it only where the value is used (HMAC key, comparison), never for output.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn resolve_env(name: &str) -> Result<Secret, SecretError> {
    if name.is_empty() {
        return Err(SecretError::EmptyName("env"));
    }
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Err(SecretError::EnvEmpty(name.to_owned())),
        Ok(value) => Ok(Secret(value)),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvNotSet(name.to_owned())),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode(name.to_owned())),
    }
}

fn resolve_file(path: &str) -> Result<Secret, SecretError> {
    if path.is_empty() {
        return Err(SecretError::EmptyName("file"));
    }
    let path = PathBuf::from(path);
    let bytes = std::fs::read(&path).map_err(|e| SecretError::FileUnreadable {
        path: path.clone(),
        kind: e.kind(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| SecretError::FileNotUnicode(path.clone()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::FileEmpty(path));
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
        // SAFETY-free: each test uses its own variable name, so parallel tests do not race on it.
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
    fn debug_and_display_hide_the_value() {
        std::env::set_var("HOOKGATE_TEST_SECRET_ENV_DEBUG", "do-not-print-me");
        let s = Secret::resolve("${env:HOOKGATE_TEST_SECRET_ENV_DEBUG}").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{:?}", Some(&s)).contains("do-not-print-me"));
    }
}

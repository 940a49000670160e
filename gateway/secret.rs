//! Secrets referenced from files and config as `${env:NAME}` or `${file:/path}`; never logged.
//! (Stub: the verification work fills this in.)

/// A resolved secret. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

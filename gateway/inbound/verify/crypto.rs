//! The cryptographic primitives every scheme shares: MAC computation, signature decoding and
//! constant-time comparison. Keeping them in one place means one audited comparison path.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::Hmac;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Standard-alphabet base64 that accepts padded and unpadded input: senders differ, and padding
/// carries no information.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Hash function of an HMAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub(crate) fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

/// How the expected signature is derived from a key and the signed content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mac {
    Hmac(Algorithm),
    /// HubSpot v1/v2: a plain SHA-256 of `key || content` (not an HMAC, but what HubSpot sends).
    /// It is open to length extension (a captured signature lets an attacker append bytes to the
    /// body) and has no timestamp, which is why hubspot defaults to v3.
    KeyPrefixedSha256,
}

impl Mac {
    /// The MAC of `parts` concatenated, or `None` if the key is unusable (HMAC accepts any key
    /// length, so this does not happen in practice; `None` can never compare equal to anything).
    pub(crate) fn compute(self, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        match self {
            Mac::Hmac(alg) => Some(Keyed::new(alg, key)?.finish(parts)),
            Mac::KeyPrefixedSha256 => {
                let mut hash = Sha256::new();
                hash.update(key);
                for p in parts {
                    hash.update(p);
                }
                Some(hash.finalize().to_vec())
            }
        }
    }
}

impl Mac {
    /// [`Mac::compute`] with `key`'s keyed HMAC state, made once and cloned after that (a key is used
    /// with one algorithm; another one is keyed afresh).
    pub(crate) fn compute_keyed(self, key: &Key, parts: &[&[u8]]) -> Option<Vec<u8>> {
        let Mac::Hmac(alg) = self else {
            return self.compute(key.bytes(), parts);
        };
        let state = match key.keyed.get() {
            Some(k) if k.algorithm() == alg => k.clone(),
            cached => {
                let k = Keyed::new(alg, key.bytes())?;
                if cached.is_none() {
                    let _ = key.keyed.set(k.clone());
                }
                k
            }
        };
        Some(state.finish(parts))
    }
}

/// Text encoding of a signature on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    pub(crate) fn parse(name: &str) -> Option<Encoding> {
        match name.to_ascii_lowercase().as_str() {
            "hex" => Some(Encoding::Hex),
            "base64" => Some(Encoding::Base64),
            _ => None,
        }
    }

    /// Decode a received signature to bytes, so comparison is on bytes (case of hex digits and
    /// base64 padding do not matter). Empty results are refused: they must never "match" anything.
    pub(crate) fn decode(self, text: &str) -> Option<Vec<u8>> {
        let text = text.trim();
        let bytes = match self {
            Encoding::Hex => hex::decode(text).ok()?,
            Encoding::Base64 => BASE64.decode(text).ok()?,
        };
        (!bytes.is_empty()).then_some(bytes)
    }
}

/// Like [`BASE64`], and also lenient about non-zero trailing bits, as Python's decoder is: used
/// for secrets (Standard Webhooks keys made by other tools) and basic-auth credentials, where
/// refusing an encoding the sender's library accepts would only cause confusion.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decode base64 leniently (Standard Webhooks secrets, basic auth).
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    BASE64_LENIENT.decode(text.trim()).ok()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality of two byte strings. Lengths are public (a signature's length is fixed
/// by the scheme), so only the content comparison needs to be constant time.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Constant-time equality of two secrets of possibly different lengths (tokens, passwords):
/// comparing their SHA-256 digests hides the expected length as well as the content.
pub(crate) fn ct_eq_secret(received: &[u8], expected: &[u8]) -> bool {
    bool::from(sha256(received).ct_eq(&sha256(expected)))
}

/// Key material derived from a [`crate::secret::Secret`]; `Debug` hides it like the secret does.
#[derive(Clone)]
pub(crate) struct Key {
    bytes: Vec<u8>,
    /// The HMAC state keyed with `bytes`, made at the first verification and cloned for each one after:
    /// keying hashes the padded key twice, the same work on every request otherwise.
    keyed: std::sync::OnceLock<Keyed>,
}

/// An HMAC keyed and ready for the message, for the algorithm it was made for.
#[derive(Clone)]
enum Keyed {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

impl Keyed {
    fn new(alg: Algorithm, key: &[u8]) -> Option<Keyed> {
        use hmac::Mac as _;
        Some(match alg {
            Algorithm::Sha1 => Keyed::Sha1(Hmac::new_from_slice(key).ok()?),
            Algorithm::Sha256 => Keyed::Sha256(Hmac::new_from_slice(key).ok()?),
            Algorithm::Sha512 => Keyed::Sha512(Hmac::new_from_slice(key).ok()?),
        })
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Keyed::Sha1(_) => Algorithm::Sha1,
            Keyed::Sha256(_) => Algorithm::Sha256,
            Keyed::Sha512(_) => Algorithm::Sha512,
        }
    }

    fn finish(self, parts: &[&[u8]]) -> Vec<u8> {
        fn feed<M: hmac::Mac>(mut mac: M, parts: &[&[u8]]) -> Vec<u8> {
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Keyed::Sha1(m) => feed(m, parts),
            Keyed::Sha256(m) => feed(m, parts),
            Keyed::Sha512(m) => feed(m, parts),
        }
    }
}

impl Key {
    pub(crate) fn new(bytes: Vec<u8>) -> Key {
        Key {
            bytes,
            keyed: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding_ignores_case_and_refuses_garbage() {
        assert_eq!(Encoding::Hex.decode("0aFF"), Some(vec![0x0a, 0xff]));
        assert_eq!(Encoding::Hex.decode("0g"), None);
        assert_eq!(Encoding::Hex.decode("abc"), None);
        assert_eq!(Encoding::Hex.decode(""), None);
    }

    #[test]
    fn base64_decoding_accepts_both_padding_styles() {
        assert_eq!(Encoding::Base64.decode("YQ=="), Some(b"a".to_vec()));
        assert_eq!(Encoding::Base64.decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(Encoding::Base64.decode("Y!Q="), None);
        assert_eq!(Encoding::Base64.decode(""), None);
    }

    #[test]
    fn constant_time_compare_paths() {
        assert!(ct_eq(b"abcd", b"abcd"));
        assert!(!ct_eq(b"abcd", b"abce"));
        assert!(!ct_eq(b"abcd", b"abc"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq_secret(b"token", b"token"));
        assert!(!ct_eq_secret(b"token", b"token2"));
        assert!(!ct_eq_secret(b"", b"token"));
    }

    /// The keyed state, made at first use and cloned after, gives the published MACs (RFC 2202 and RFC
    /// 4231, test case 2) for every algorithm, also for a key first used with another algorithm.
    #[test]
    fn a_cached_keyed_state_computes_the_published_macs() {
        let parts: [&[u8]; 2] = [b"what do ya ", b"want for nothing?"];
        let published = |alg| match alg {
            Algorithm::Sha1 => "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            Algorithm::Sha256 => "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            Algorithm::Sha512 => concat!(
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554",
                "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
            ),
        };
        let mac = |alg, key: &Key| Mac::Hmac(alg).compute_keyed(key, &parts).map(hex::encode);
        for alg in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            let key = Key::new(b"Jefe".to_vec());
            assert_eq!(
                mac(alg, &key).as_deref(),
                Some(published(alg)),
                "{alg:?} first"
            );
            assert_eq!(
                mac(alg, &key).as_deref(),
                Some(published(alg)),
                "{alg:?} cached"
            );
            let other = if alg == Algorithm::Sha1 {
                Algorithm::Sha256
            } else {
                Algorithm::Sha1
            };
            assert_eq!(
                mac(other, &key).as_deref(),
                Some(published(other)),
                "{other:?} after {alg:?}"
            );
        }
        let key = Key::new(b"k".to_vec());
        assert_eq!(
            Mac::KeyPrefixedSha256.compute_keyed(&key, &[b"m"]),
            Mac::KeyPrefixedSha256.compute(b"k", &[b"m"])
        );
    }

    #[test]
    fn hmac_lengths_per_algorithm() {
        for (alg, len) in [
            (Algorithm::Sha1, 20),
            (Algorithm::Sha256, 32),
            (Algorithm::Sha512, 64),
        ] {
            let mac = Mac::Hmac(alg).compute(b"k", &[b"m"]).unwrap_or_default();
            assert_eq!(mac.len(), len);
        }
        // RFC 4231 test case 2.
        let mac = Mac::Hmac(Algorithm::Sha256)
            .compute(b"Jefe", &[b"what do ya ", b"want for nothing?"])
            .unwrap_or_default();
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_debug_is_redacted() {
        assert_eq!(format!("{:?}", Key::new(b"secret".to_vec())), "Key(***)");
    }
}

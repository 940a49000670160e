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

/// The kind of public key a scheme checks signatures with. It fixes how the key is written and what a
/// signature looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// Standard Webhooks `v1a`: Ed25519, the key `whpk_` + base64 of its 32 bytes, signatures of 64
    /// bytes.
    Ed25519,
    /// SendGrid's Event Webhook: ECDSA over P-256 with SHA-256, the key as SendGrid shows it (the base64
    /// of its DER SubjectPublicKeyInfo) or as PEM, signatures DER-encoded.
    EcdsaP256,
}

impl KeyKind {
    /// Whether a decoded signature has a length this kind's signatures have: a cheap refusal, and a
    /// precise reason, before any curve arithmetic.
    pub(crate) fn signature_fits(self, len: usize) -> bool {
        match self {
            KeyKind::Ed25519 => len == ED25519_SIGNATURE_LEN,
            // SEQUENCE { INTEGER r, INTEGER s }: 8 bytes for one-byte integers, 72 with both 33 bytes.
            KeyKind::EcdsaP256 => (8..=72).contains(&len),
        }
    }

    /// A 401's reason when no signature of this kind decodes.
    pub(crate) fn not_decoded(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "signature is not base64 of 64 bytes",
            KeyKind::EcdsaP256 => "signature is not base64 of a DER-encoded ECDSA signature",
        }
    }
}

/// A sender's public key: only the sender holds the private key, so a leaked public key forges
/// nothing, and it is no secret.
#[derive(Clone, Debug)]
pub(crate) enum PublicKey {
    /// Standard Webhooks' asymmetric (`v1a`) signatures.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// SendGrid's signed Event Webhook.
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

/// The length of an Ed25519 signature, in bytes.
pub(crate) const ED25519_SIGNATURE_LEN: usize = ed25519_dalek::SIGNATURE_LENGTH;

impl PublicKey {
    /// A key of `kind` as written. A private key or a shared secret given by mistake is named as such
    /// (and never quoted), and a key that would verify forged signatures is refused.
    pub(crate) fn parse(kind: KeyKind, text: &str) -> Result<PublicKey, &'static str> {
        match kind {
            KeyKind::Ed25519 => Self::parse_whpk(text),
            KeyKind::EcdsaP256 => Self::parse_p256(text),
        }
    }

    /// `whpk_` followed by the base64 of the 32-byte key (the prefix may be left out, as for
    /// `whsec_`). A small-order key, which verifies forged signatures, is refused.
    fn parse_whpk(text: &str) -> Result<PublicKey, &'static str> {
        let text = text.trim();
        if text.starts_with("whsk_") {
            return Err("this is the sender's private key (whsk_); give its public key (whpk_)");
        }
        if text.starts_with("whsec_") {
            return Err(
                "this is a shared secret (whsec_), which goes in `secret` or `secrets`, not a public key (whpk_)",
            );
        }
        let encoded = text.strip_prefix("whpk_").unwrap_or(text);
        let bytes: [u8; ed25519_dalek::PUBLIC_KEY_LENGTH] = base64_decode(encoded)
            .and_then(|b| b.try_into().ok())
            .ok_or("not a Standard Webhooks public key (expected whpk_ followed by the base64 of 32 bytes)")?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "not an Ed25519 public key (the 32 bytes are no point of the curve)")?;
        if key.is_weak() {
            return Err("a small-order Ed25519 key, which would verify forged signatures");
        }
        Ok(PublicKey::Ed25519(key))
    }

    /// SendGrid's verification key: the base64 of a DER SubjectPublicKeyInfo, as SendGrid's settings
    /// page and API show it, or the same in PEM (one line, as SendGrid's own library wraps the key, or
    /// many, any width). The point must be on the curve and not the identity (the SEC1 decoding checks
    /// both).
    fn parse_p256(text: &str) -> Result<PublicKey, &'static str> {
        use p256::pkcs8::DecodePublicKey;
        const WHAT: &str = "not a P-256 public key (expected SendGrid's verification key: the base64 of its DER SubjectPublicKeyInfo, or PEM)";
        const PRIVATE: &str = "this is a private key; give the public (verification) key";
        let text = text.trim();
        if text.contains("PRIVATE KEY") {
            return Err(PRIVATE);
        }
        let inner = text
            .strip_prefix("-----BEGIN PUBLIC KEY-----")
            .and_then(|t| t.strip_suffix("-----END PUBLIC KEY-----"))
            .unwrap_or(text);
        let compact: String = inner.split_ascii_whitespace().collect();
        let der = base64_decode(&compact).ok_or(WHAT)?;
        p256::ecdsa::VerifyingKey::from_public_key_der(&der)
            .map(PublicKey::EcdsaP256)
            .map_err(|_| if is_private_key(&der) { PRIVATE } else { WHAT })
    }

    /// The kind of key this is.
    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
            PublicKey::EcdsaP256(_) => KeyKind::EcdsaP256,
        }
    }

    /// Whether `signature` is this key's signature of `content` (prepared for this kind of key).
    ///
    /// - Ed25519: strict verification (RFC 8032's checks plus canonical encodings), so no signature
    ///   has a second valid form.
    /// - ECDSA: strict DER, and both forms of `s` (low and high), as SendGrid's own libraries (OpenSSL)
    ///   accept: what SendGrid signs is not normalised. The second form changes nothing here, since
    ///   dedup never reads the signature.
    pub(crate) fn verifies(&self, content: &SignedContent, signature: &[u8]) -> bool {
        match (self, content) {
            (PublicKey::Ed25519(key), SignedContent::Whole(message)) => {
                match ed25519_dalek::Signature::from_slice(signature) {
                    Ok(sig) => key.verify_strict(message, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            (PublicKey::EcdsaP256(key), SignedContent::Sha256(digest)) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
                match p256::ecdsa::Signature::from_der(signature) {
                    Ok(sig) => key.verify_prehash(digest, &sig).is_ok(),
                    Err(_) => false,
                }
            }
            // Content prepared for the other kind verifies nothing.
            _ => false,
        }
    }
}

/// The signed content as a kind of key takes it, prepared once per request for every key and signature:
/// Ed25519 takes the message whole (it hashes it twice, with the key between), ECDSA its SHA-256, fed
/// piece by piece so the body is not copied.
pub(crate) enum SignedContent {
    Whole(Vec<u8>),
    Sha256([u8; 32]),
}

impl KeyKind {
    /// `pieces`, concatenated, as this kind of key verifies them.
    pub(crate) fn prepare(self, pieces: &[&[u8]]) -> SignedContent {
        match self {
            KeyKind::Ed25519 => SignedContent::Whole(pieces.concat()),
            KeyKind::EcdsaP256 => {
                let mut hash = Sha256::new();
                for piece in pieces {
                    hash.update(piece);
                }
                SignedContent::Sha256(hash.finalize().into())
            }
        }
    }
}

/// Whether `der` is a private key: PKCS#8 of any algorithm, or an EC key in SEC1 form (`openssl ec`'s).
fn is_private_key(der: &[u8]) -> bool {
    p256::pkcs8::PrivateKeyInfo::try_from(der).is_ok()
        || p256::SecretKey::from_sec1_der(der).is_ok()
}

/// Whether text given as a public key may be shown (in `hookgate check`'s excerpt of its line): only when
/// it is a usable public key of some kind. Anything else may be a secret given by mistake (a private key
/// in any form, a shared secret, an API key), and its problem is told without it.
pub(crate) fn is_public_key(text: &str) -> bool {
    [KeyKind::Ed25519, KeyKind::EcdsaP256]
        .into_iter()
        .any(|kind| PublicKey::parse(kind, text).is_ok())
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

    /// RFC 8032 section 7.1, tests 1 to 3: the published key and signature verify; one changed bit of
    /// the message or the signature does not, nor does another test's key.
    #[test]
    fn rfc8032_ed25519_vectors_verify() {
        use base64::Engine as _;
        let vectors: [(&str, &str, &str); 3] = [
            (
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                concat!(
                    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155",
                    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
                ),
            ),
            (
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                concat!(
                    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da",
                    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
                ),
            ),
            (
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                concat!(
                    "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac",
                    "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
                ),
            ),
        ];
        let decode = |h: &str| hex::decode(h).unwrap_or_default();
        for (i, (key, message, signature)) in vectors.iter().enumerate() {
            let whpk = format!("whpk_{}", BASE64.encode(decode(key)));
            let key = PublicKey::parse(KeyKind::Ed25519, &whpk)
                .unwrap_or_else(|e| panic!("test {}: {e}", i + 1));
            let (message, signature) = (decode(message), decode(signature));
            let whole = |m: &[u8]| KeyKind::Ed25519.prepare(&[m]);
            assert!(key.verifies(&whole(&message), &signature), "test {}", i + 1);
            let mut changed = message.clone();
            changed.push(0);
            assert!(
                !key.verifies(&whole(&changed), &signature),
                "test {}: longer message",
                i + 1
            );
            let mut bad = signature.clone();
            bad[10] ^= 1;
            assert!(
                !key.verifies(&whole(&message), &bad),
                "test {}: changed signature",
                i + 1
            );
            assert!(
                !key.verifies(&whole(&message), &signature[..63]),
                "test {}: short signature",
                i + 1
            );
            let (other, _, _) = vectors[(i + 1) % 3];
            let other = PublicKey::parse(KeyKind::Ed25519, &BASE64.encode(decode(other)))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                !other.verifies(&whole(&message), &signature),
                "test {}: another key",
                i + 1
            );
        }
    }

    #[test]
    fn public_keys_that_cannot_verify_are_refused_with_a_reason() {
        use base64::Engine as _;
        let reason = |text: &str| {
            PublicKey::parse(KeyKind::Ed25519, text)
                .err()
                .unwrap_or("accepted")
        };
        assert!(reason("whsk_AAAA").contains("private key"));
        assert!(reason("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").contains("shared secret"));
        assert!(reason("whpk_AAAA").contains("32 bytes"));
        assert!(reason("whpk_!!").contains("32 bytes"));
        // The identity point (y = 1) has small order: any signature with R = identity, s = 0 verifies
        // under plain RFC 8032 rules.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(reason(&format!("whpk_{}", BASE64.encode(identity))).contains("small-order"));
        // y = 2 is no point of the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(reason(&format!("whpk_{}", BASE64.encode(off_curve))).contains("no point"));
    }

    #[test]
    fn key_debug_is_redacted() {
        assert_eq!(format!("{:?}", Key::new(b"secret".to_vec())), "Key(***)");
    }
}

//! What SNS verification fetches: signing certificates (cached for the process, shared by every source
//! and every reload, since a certificate's URL never changes content) and subscription confirmations.
//! Both go only to addresses `sns::Endpoints` trusts; every call is bounded in time and size, follows no
//! redirect and takes no proxy from the environment.

use super::error::VerifyError;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// The longest a fetch (connect, request, whole answer) may take: SNS waits 15 s for our answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest certificate read; SNS's are about 2 KB.
const MAX_CERT_BYTES: usize = 64 * 1024;
/// The largest confirmation answer read (a short XML document).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Certificates kept; the oldest goes first. SNS uses one per region at a time.
const MAX_CACHED: usize = 64;
/// How long a failed fetch is answered from the cache, so a burst does not hammer a failing endpoint.
const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Failures remembered at once (each key at most `sns::MAX_CERT_URL` bytes).
const MAX_FAILURES: usize = 1024;
/// Certificates fetched at once.
const MAX_FETCHES: usize = 8;

/// A signing certificate, reduced to what the check needs.
#[derive(Debug)]
pub(crate) struct SigningCert {
    /// The RSA public key, PKCS#1 `RSAPublicKey` DER, as ring reads it.
    rsa_key: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl SigningCert {
    /// Read a PEM certificate; only an RSA key is taken.
    pub(crate) fn from_pem(pem: &[u8]) -> Result<SigningCert, String> {
        use x509_cert::der::DecodePem;
        let cert = x509_cert::Certificate::from_pem(pem)
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        const RSA_ENCRYPTION: x509_cert::der::oid::ObjectIdentifier =
            x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err("the certificate's key is not RSA".to_owned());
        }
        let rsa_key = spki
            .subject_public_key
            .as_bytes()
            .ok_or("the certificate's key is not whole bytes")?
            .to_vec();
        Ok(SigningCert {
            rsa_key,
            not_before: tbs.validity.not_before.to_system_time(),
            not_after: tbs.validity.not_after.to_system_time(),
        })
    }

    pub(crate) fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether `signature` is this key's RSA PKCS#1 v1.5 signature of `text` (SHA-256, else SHA-1).
    /// ring refuses keys under 2048 bits.
    pub(crate) fn verifies(&self, sha256: bool, text: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{
            UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            RSA_PKCS1_2048_8192_SHA256,
        };
        let algorithm = if sha256 {
            &RSA_PKCS1_2048_8192_SHA256
        } else {
            &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
        };
        UnparsedPublicKey::new(algorithm, &self.rsa_key)
            .verify(text, signature)
            .is_ok()
    }
}

/// Certificates fetched, and fetches that failed, kept apart: the failures (which anyone can cause by
/// naming addresses that do not exist) can never push a good certificate out.
struct Cache {
    /// By URL, with when each was fetched; at most [`MAX_CACHED`], the oldest going first.
    certs: Mutex<HashMap<String, (Instant, Arc<SigningCert>)>>,
    /// By URL: when and why; forgotten after [`FAILURE_TTL`], at most [`MAX_FAILURES`].
    failures: Mutex<HashMap<String, (Instant, String)>>,
    /// One fetch per URL at a time: a burst of first messages fetches their certificate once, and a slow
    /// or failing address holds up only the requests that name it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Fetches of different URLs at once, at most: the network calls anyone can cause stay few.
    slots: tokio::sync::Semaphore,
}

static CACHE: LazyLock<Cache> = LazyLock::new(|| Cache {
    certs: Mutex::new(HashMap::new()),
    failures: Mutex::new(HashMap::new()),
    fetching: Mutex::new(HashMap::new()),
    slots: tokio::sync::Semaphore::const_new(MAX_FETCHES),
});

/// The one client of these fetches: no redirects, no proxy from the environment, bounded in time. If it
/// cannot be built (no TLS roots, say), every fetch fails with the reason, rather than falling back to a
/// client without those limits.
static CLIENT: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| {
    reqwest::Client::builder()
        .user_agent(crate::egress::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))
});

/// Lock a map, whatever a panicking holder left in it (each update is one insert or remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cached certificate, or the recent failure, for `url`.
fn lookup(url: &str) -> Option<Result<Arc<SigningCert>, String>> {
    if let Some((_, cert)) = lock(&CACHE.certs).get(url) {
        return Some(Ok(cert.clone()));
    }
    match lock(&CACHE.failures).get(url) {
        Some((at, why)) if at.elapsed() < FAILURE_TTL => Some(Err(why.clone())),
        _ => None,
    }
}

/// Insert into a bounded map, the oldest entry going first when it is full.
fn insert_bounded<V>(map: &mut HashMap<String, (Instant, V)>, max: usize, key: &str, value: V) {
    if map.len() >= max && !map.contains_key(key) {
        if let Some(oldest) = map
            .iter()
            .min_by_key(|(_, (at, _))| *at)
            .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
    map.insert(key.to_owned(), (Instant::now(), value));
}

fn remember_failure(url: &str, why: &str) {
    let mut failures = lock(&CACHE.failures);
    failures.retain(|_, (at, _)| at.elapsed() < FAILURE_TTL);
    insert_bounded(&mut failures, MAX_FAILURES, url, why.to_owned());
}

/// The certificate at `url` if it has been fetched.
pub(crate) fn cached(url: &Url) -> Option<Arc<SigningCert>> {
    lookup(url.as_str()).and_then(Result::ok)
}

/// The certificate at `url`, from the cache or fetched. A failure is `CertUnavailable`: the sender
/// should retry, the message may well be good.
pub(crate) async fn certificate(url: &Url) -> Result<Arc<SigningCert>, VerifyError> {
    let key = url.as_str();
    if let Some(found) = lookup(key) {
        return found.map_err(VerifyError::CertUnavailable);
    }
    // One deadline for waiting and fetching, inside the 15 s SNS waits for an answer.
    let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
    let unavailable = |why: &str| VerifyError::CertUnavailable(why.to_owned());
    let one = lock(&CACHE.fetching)
        .entry(key.to_owned())
        .or_default()
        .clone();
    let Ok(_turn) = tokio::time::timeout_at(deadline, one.lock()).await else {
        return Err(unavailable("another fetch of it is still running"));
    };
    // Taken off the map when this turn ends, however it ends (a cancelled request included).
    let _leave = Turn { key, one: &one };
    // The fetch ahead of this one may have settled it.
    if let Some(found) = lookup(key) {
        return found.map_err(VerifyError::CertUnavailable);
    }
    let Ok(_slot) = tokio::time::timeout_at(deadline, CACHE.slots.acquire()).await else {
        return Err(unavailable("too many certificates being fetched"));
    };
    let fetched = match tokio::time::timeout_at(deadline, fetch_cert(url)).await {
        Ok(fetched) => fetched,
        Err(_) => Err("no answer in time".to_owned()),
    };
    let shown = crate::error::one_line_within(key, 160);
    match fetched {
        Ok(cert) => {
            let cert = Arc::new(cert);
            insert_bounded(&mut lock(&CACHE.certs), MAX_CACHED, key, cert.clone());
            tracing::info!(url = %shown, "SNS signing certificate fetched");
            Ok(cert)
        }
        Err(why) => {
            tracing::warn!(url = %shown, reason = %why, "SNS signing certificate not fetched");
            remember_failure(key, &why);
            Err(VerifyError::CertUnavailable(why))
        }
    }
}

/// A fetch's place in `Cache::fetching`, given up when the fetch ends: only its own entry, which a
/// later fetch of the same URL may have replaced.
struct Turn<'a> {
    key: &'a str,
    one: &'a Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut fetching = lock(&CACHE.fetching);
        if fetching
            .get(self.key)
            .is_some_and(|o| Arc::ptr_eq(o, self.one))
        {
            fetching.remove(self.key);
        }
    }
}

async fn fetch_cert(url: &Url) -> Result<SigningCert, String> {
    let (status, body) = get(url, MAX_CERT_BYTES).await?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("the certificate's address answered {status}"));
    }
    SigningCert::from_pem(&body)
}

/// Confirm a subscription: GET its `SubscribeURL`. The subscription's ARN (from SNS's XML answer) when
/// it says; otherwise the reason it failed, one line.
pub(crate) async fn confirm(url: &Url) -> Result<Option<String>, String> {
    let (status, body) = get(url, MAX_ANSWER_BYTES).await?;
    if !status.is_success() {
        return Err(format!("SNS answered {status}"));
    }
    let text = String::from_utf8_lossy(&body);
    let arn = text
        .split_once("<SubscriptionArn>")
        .and_then(|(_, rest)| rest.split_once("</SubscriptionArn>"))
        .map(|(arn, _)| crate::error::one_line_within(arn.trim(), 256));
    Ok(arn)
}

/// GET `url`, reading at most `max` bytes of its answer.
async fn get(url: &Url, max: usize) -> Result<(reqwest::StatusCode, Vec<u8>), String> {
    let fail = |e: reqwest::Error| crate::error::one_line_within(&e.without_url().to_string(), 200);
    let client = CLIENT.as_ref().map_err(Clone::clone)?;
    let mut resp = client
        .get(url.clone())
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(fail)?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fail)? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

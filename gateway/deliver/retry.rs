//! Retry timing, and the parking lot: a failed event is stored in a sorted set (score = due time, ms) and
//! ACKed from its stream in one MULTI, so a slow upstream never holds up the stream and nothing is lost in
//! between. A mover moves due events, atomically (Lua), onto the retry-due stream the workers also read.

use super::envelope::Envelope;
use super::Keys;
use crate::clock::now_ms;
use crate::redis_conn::Conn;
use rand::Rng;
use redis::{RedisError, Script};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often each process looks for due retries.
pub const MOVE_EVERY: Duration = Duration::from_millis(250);
/// Due retries moved per script call (a bounded Lua run keeps Redis responsive).
const MOVE_BATCH: usize = 200;

/// Exponential backoff with full jitter: uniform in `[0, min(max, base × 2^(attempt-1))]`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
    let ceiling = exp.min(max);
    let ms = ceiling.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// When to try a failed delivery again (ms since the epoch), inbound and outbound alike: after the backoff, or the subscriber's
/// `Retry-After` when longer, and never later than `give_up` after the first failure: the last try is
/// at that deadline. `None` (give up now) once the deadline has passed, or when the subscriber asks to
/// wait beyond it: trying before it asked would be rude, and after it too late.
pub fn next_try(
    now: u64,
    first_failed: u64,
    give_up: Duration,
    backoff: Duration,
    retry_after: Option<Duration>,
) -> Option<u64> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let deadline = first_failed.saturating_add(ms(give_up));
    if now >= deadline {
        return None;
    }
    let asked = retry_after.map(|d| now.saturating_add(ms(d)));
    if asked.is_some_and(|t| t > deadline) {
        return None;
    }
    let due = now.saturating_add(ms(backoff)).max(asked.unwrap_or(0));
    Some(due.min(deadline))
}

/// `Retry-After` as delta seconds or an HTTP date; a date in the past means now.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // The three forms RFC 9110 makes a recipient accept (IMF-fixdate, RFC 850, asctime), then any
    // RFC 2822 date (a numeric zone such as `+0000`), which some servers send.
    let at = match httpdate::parse_http_date(v) {
        Ok(at) => at,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).ok()?)
        }
    };
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Add "take this entry off its stream" to a MULTI: XACK, and XDEL on the retry-due stream (ours alone,
/// so handled entries do not pile up there).
pub fn add_ack(pipe: &mut redis::Pipeline, keys: &Keys, stream: &str, entry_id: &str) {
    pipe.cmd("XACK")
        .arg(stream)
        .arg(crate::stream::MAPPERS_GROUP)
        .arg(entry_id)
        .ignore();
    if stream == keys.due {
        pipe.cmd("XDEL").arg(stream).arg(entry_id).ignore();
    }
}

/// Park `env` until `due_ms` and take the entry off its stream, atomically, with `also` (the records of
/// what this pass delivered).
pub async fn park(
    conn: &mut Conn,
    keys: &Keys,
    env: &Envelope,
    due_ms: u64,
    stream: &str,
    entry_id: &str,
    also: &[redis::Cmd],
) -> Result<(), RedisError> {
    let record = format!("{}{}", keys.record_prefix, env.origin_id);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for cmd in also {
        pipe.add_command(cmd.clone()).ignore();
    }
    pipe.cmd("DEL").arg(&record).ignore();
    let mut hset = redis::cmd("HSET");
    hset.arg(&record);
    for (k, v) in env.fields() {
        hset.arg(k).arg(v);
    }
    pipe.add_command(hset).ignore();
    pipe.cmd("ZADD")
        .arg(&keys.retry)
        .arg(due_ms)
        .arg(&env.origin_id)
        .ignore();
    add_ack(&mut pipe, keys, stream, entry_id);
    pipe.query_async::<()>(conn).await
}

/// KEYS: sorted set, due stream. ARGV: now ms, batch, record key prefix.
const MOVE_SCRIPT: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local rk = ARGV[3] .. id
  local f = redis.call('HGETALL', rk)
  if #f > 0 then redis.call('XADD', KEYS[2], '*', unpack(f)) end
  redis.call('DEL', rk)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"#;

/// Move due retries onto the due stream until none is left or `stop` fires. Every process runs one; the
/// script is atomic, so two movers never move the same event twice.
pub async fn mover(mut conn: Conn, keys: Keys, mut stop: tokio::sync::watch::Receiver<bool>) {
    let script = Script::new(MOVE_SCRIPT);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(MOVE_EVERY) => {}
        }
        loop {
            let moved: Result<usize, RedisError> = script
                .key(&keys.retry)
                .key(&keys.due)
                .arg(now_ms())
                .arg(MOVE_BATCH)
                .arg(&keys.record_prefix)
                .invoke_async(&mut conn)
                .await;
            match moved {
                Ok(n) if n == MOVE_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "moving due retries failed; trying again");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_a_doubling_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(600));
        for attempt in 1..40 {
            let d = backoff(attempt, base, max);
            let cap = base.saturating_mul(1 << (attempt - 1).min(30)).min(max);
            assert!(d <= cap, "{attempt}: {d:?} > {cap:?}");
        }
        assert!(backoff(1, base, max) <= base);
    }

    #[test]
    fn retries_stop_at_the_give_up_deadline() {
        let s = Duration::from_secs;
        let (first, give_up) = (1_000_000, s(100));
        // Within the window: the backoff, or a longer Retry-After.
        assert_eq!(
            next_try(first + 10_000, first, give_up, s(5), None),
            Some(first + 15_000)
        );
        assert_eq!(
            next_try(first + 10_000, first, give_up, s(5), Some(s(30))),
            Some(first + 40_000)
        );
        // A backoff past the deadline: one last try at it.
        assert_eq!(
            next_try(first + 90_000, first, give_up, s(60), None),
            Some(first + 100_000)
        );
        // Asked to wait past the deadline, or the deadline reached: give up now.
        assert_eq!(
            next_try(first + 90_000, first, give_up, s(1), Some(s(60))),
            None
        );
        assert_eq!(next_try(first + 100_000, first, give_up, s(1), None), None);
        // An absurd Retry-After does not overflow.
        assert_eq!(
            next_try(first, first, give_up, s(1), Some(Duration::MAX)),
            None
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // RFC 9110's obsolete forms, which a recipient must accept, and a numeric zone.
        for v in [
            "Sunday, 06-Nov-94 08:50:37 GMT",
            "Sun Nov  6 08:50:37 1994",
            "Sun, 06 Nov 1994 08:50:37 +0000",
            "Sun, 06 Nov 1994 09:50:37 +0100",
        ] {
            assert_eq!(
                parse_retry_after(v, now),
                Some(Duration::from_secs(60)),
                "{v}"
            );
        }
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

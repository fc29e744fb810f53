//! Login throttling: per account and per client address, growing delays after a few
//! free failures. In memory; a restart forgets (and costs an attacker nothing new).

use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Failures allowed before delays start.
pub const ACCOUNT_FREE_FAILURES: u32 = 5;
pub const ADDRESS_FREE_FAILURES: u32 = 20;
/// First delay; each further failure doubles it, up to the maximum.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// At most this many bytes of counters (keys and values) are kept; the least used go first.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Counters are forgotten after this long without a failure.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone, Copy)]
struct Attempts {
    failures: u32,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct LoginThrottle {
    attempts: Cache<String, Attempts>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginThrottle {
    pub fn new() -> Self {
        // Weighed by key size, so that the memory is bounded whatever the keys hold (user
        // names are refused above 64 characters, but a proxy's client-address header is not).
        let attempts = Cache::builder()
            .weigher(|key: &String, _: &Attempts| u32::try_from(key.len() + 32).unwrap_or(u32::MAX))
            .max_capacity(MAX_BYTES)
            .time_to_idle(FORGET_AFTER)
            .build();
        Self { attempts }
    }

    /// `Err(retry_after)` while the account or the address must wait.
    pub fn check(&self, account: &str, address: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let wait = [account_key(account), address_key(address)]
            .iter()
            .filter_map(|key| self.attempts.get(key)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        wait.map_or(Ok(()), Err)
    }

    pub fn record_failure(&self, account: &str, address: &str) {
        for (key, free) in
            [(account_key(account), ACCOUNT_FREE_FAILURES), (address_key(address), ADDRESS_FREE_FAILURES)]
        {
            self.attempts.entry(key).and_upsert_with(|existing| {
                let failures = existing.map_or(0, |e| e.into_value().failures) + 1;
                let blocked_until = (failures > free).then(|| Instant::now() + delay(failures - free));
                Attempts { failures, blocked_until }
            });
        }
    }

    /// A successful login clears the account's counter (not the address's: one account
    /// an attacker owns must not reset the guessing budget for the others).
    pub fn record_success(&self, account: &str) {
        self.attempts.invalidate(&account_key(account));
    }
}

fn delay(over: u32) -> Duration {
    let factor = 2u32.saturating_pow(over.saturating_sub(1).min(20));
    BASE_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

fn account_key(account: &str) -> String {
    format!("account:{}", account.to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("address:{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_grow() {
        let throttle = LoginThrottle::new();
        for _ in 0..ACCOUNT_FREE_FAILURES {
            assert!(throttle.check("alice", "10.0.0.1").is_ok());
            throttle.record_failure("alice", "10.0.0.1");
        }
        assert!(throttle.check("alice", "10.0.0.1").is_ok());
        throttle.record_failure("Alice", "10.0.0.1");
        let first = throttle.check("alice", "10.0.0.2").unwrap_err();
        assert!(first <= BASE_DELAY && first > Duration::ZERO, "{first:?}");
        throttle.record_failure("alice", "10.0.0.1");
        let second = throttle.check("alice", "10.0.0.3").unwrap_err();
        assert!(second > BASE_DELAY, "{second:?}");
        assert!(throttle.check("bob", "10.0.0.9").is_ok(), "other accounts are not affected");
        throttle.record_success("alice");
        assert!(throttle.check("alice", "10.0.0.4").is_ok());
    }

    #[test]
    fn memory_is_bounded_whatever_the_keys() {
        let throttle = LoginThrottle::new();
        let long = "x".repeat(100_000);
        for i in 0..200 {
            throttle.record_failure(&format!("{i}{long}"), &format!("{i}{long}"));
        }
        throttle.attempts.run_pending_tasks();
        assert!(throttle.attempts.weighted_size() <= MAX_BYTES, "{}", throttle.attempts.weighted_size());
    }

    #[test]
    fn the_delay_is_capped() {
        assert_eq!(delay(1), BASE_DELAY);
        assert_eq!(delay(3), BASE_DELAY * 4);
        assert_eq!(delay(40), MAX_DELAY);
    }
}

//! Per-user limits on sending: a request rate (governor's keyed GCRA limiter) whose quota
//! follows the live config, and a cap on answers generated at once.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

#[derive(Debug, Default)]
pub struct SendRate {
    /// The per-minute quota the limiter was built for, and the limiter.
    limiter: Mutex<Option<(u32, Arc<DefaultKeyedRateLimiter<i64>>)>>,
}

impl SendRate {
    /// `Err(wait)` when `user_id` sent more than `per_minute` messages in the last minute.
    pub fn check(&self, user_id: i64, per_minute: u32) -> Result<(), Duration> {
        let limiter = {
            let mut slot = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                Some((quota, limiter)) if *quota == per_minute => limiter.clone(),
                _ => {
                    let per_minute_nz = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
                    let limiter = Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute_nz)));
                    *slot = Some((per_minute, limiter.clone()));
                    limiter
                }
            }
        };
        limiter.check_key(&user_id).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_quota_then_a_wait() {
        let rate = SendRate::default();
        for _ in 0..3 {
            assert!(rate.check(7, 3).is_ok());
        }
        let wait = rate.check(7, 3).unwrap_err();
        assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(rate.check(8, 3).is_ok(), "limits are per user");
        assert!(rate.check(7, 100).is_ok(), "a new quota from a config reload starts afresh");
    }
}

//! A small pseudo-random source for retry jitter and for spreading
//! borrowers over blocks; not for anything secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// xorshift64* seeded from the clock and the process ID.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the clock and process ID: different in every call.
    pub fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u128) -> u128 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next()) << 64) | u128::from(self.next())) % n
    }

    /// Random wait before retry `attempt` (1, 2, ...): up to 1, 2, 4 ... 16 ms.
    pub fn backoff(&mut self, attempt: u32) -> Duration {
        let cap_us = 1000u64 << attempt.saturating_sub(1).min(4);
        Duration::from_micros(self.next() % cap_us)
    }
}

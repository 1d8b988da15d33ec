//! A small deterministic random source (xorshift) for tests: seeded from
//! the clock (or `SYNCLINE_TEST_SEED`) and printed, so a failing run can be
//! repeated.

#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from `SYNCLINE_TEST_SEED`, else the clock; the seed is printed.
    pub fn from_time() -> Self {
        let seed = std::env::var("SYNCLINE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random seed: {seed} (set SYNCLINE_TEST_SEED to repeat)");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

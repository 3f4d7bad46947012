//! Latency percentiles of the load generator: every sample is kept (runs are bounded in count),
//! sorted once, and read by nearest rank.

use std::time::Duration;

/// Latencies of one run, in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    /// An empty set, with room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Latencies {
            samples: Vec::with_capacity(capacity),
            sorted: true,
        }
    }

    /// Add one sample.
    pub fn record(&mut self, latency: Duration) {
        self.samples
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.samples.extend_from_slice(&other.samples);
        self.sorted = false;
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `q` quantile (`0.0..=1.0`) by nearest rank; zero when empty.
    pub fn quantile(&mut self, q: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
        let n = self.samples.len();
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        Duration::from_nanos(self.samples.get(index).copied().unwrap_or_default())
    }

    /// The mean; zero when empty.
    pub fn mean(&self) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let sum: u128 = self.samples.iter().map(|&s| u128::from(s)).sum();
        Duration::from_nanos(u64::try_from(sum / self.samples.len() as u128).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let mut l = Latencies::with_capacity(1000);
        for i in (1..=1000u64).rev() {
            l.record(Duration::from_micros(i));
        }
        assert_eq!(l.len(), 1000);
        assert_eq!(l.quantile(0.5), Duration::from_micros(500));
        assert_eq!(l.quantile(0.99), Duration::from_micros(990));
        assert_eq!(l.quantile(0.999), Duration::from_micros(999));
        assert_eq!(l.quantile(1.0), Duration::from_micros(1000));
        assert_eq!(l.quantile(0.0), Duration::from_micros(1));
        assert_eq!(l.mean(), Duration::from_nanos(500_500));
    }

    #[test]
    fn merged_and_empty_sets() {
        let mut empty = Latencies::default();
        assert!(empty.is_empty());
        assert_eq!(empty.quantile(0.99), Duration::ZERO);
        assert_eq!(empty.mean(), Duration::ZERO);
        let mut a = Latencies::with_capacity(2);
        a.record(Duration::from_millis(3));
        let mut b = Latencies::default();
        b.record(Duration::from_millis(1));
        a.merge(&b);
        assert_eq!(a.quantile(0.5), Duration::from_millis(1));
        assert_eq!(a.quantile(1.0), Duration::from_millis(3));
    }
}

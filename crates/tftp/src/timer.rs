//! Retransmission timing (RFC 1123 4.2.3.2 requires an adaptive timeout with exponential
//! backoff).
//!
//! The estimator is RFC 6298's (smoothed RTT and its variance), with Karn's rule: no sample is
//! taken from a packet that was retransmitted, since its ACK cannot be matched to one send. The
//! deadline is absolute and only our own sends arm it, so packets that we ignore (wrong TID,
//! stale ACKs) can never push a retransmission back (tftpy PR #133 had a peer keep the timer
//! from ever firing that way).

use std::time::{Duration, Instant};

/// Timing policy of one server; copied into every transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Retransmission timeout before any round trip was measured.
    pub initial_rto: Duration,
    /// Floor for the adaptive timeout. iPXE's own floor is 250 ms.
    pub min_rto: Duration,
    /// Ceiling for the adaptive timeout and its backoff.
    pub max_rto: Duration,
    /// Consecutive timeouts after which the peer is considered gone.
    pub max_retries: u32,
    /// A transfer that makes no progress for this long is ended, whatever its retry count
    /// (dnsmasq uses 120 s).
    pub no_progress_limit: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(5),
            max_retries: 8,
            no_progress_limit: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Retransmit {
    config: TimerConfig,
    /// RFC 2349 `timeout`: the client chose the interval, so it is used as is, without backoff
    /// beyond it.
    fixed: Option<Duration>,
    srtt: Option<Duration>,
    rttvar: Duration,
    backoff: u32,
    deadline: Option<Instant>,
    /// Consecutive expiries without progress.
    retries: u32,
    last_progress: Instant,
    /// Karn's rule: set by a retransmission, cleared by progress.
    ambiguous: bool,
}

/// What an expired timer means for the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    NotYet,
    Retransmit,
    GiveUp,
}

impl Retransmit {
    pub(crate) fn new(
        config: TimerConfig,
        negotiated_timeout: Option<u8>,
        now: Instant,
    ) -> Retransmit {
        Retransmit {
            config,
            fixed: negotiated_timeout.map(|s| Duration::from_secs(u64::from(s))),
            srtt: None,
            rttvar: Duration::ZERO,
            backoff: 0,
            deadline: None,
            retries: 0,
            last_progress: now,
            ambiguous: false,
        }
    }

    pub(crate) fn rto(&self) -> Duration {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        let base = match self.srtt {
            Some(srtt) => srtt + (self.rttvar * 4).max(Duration::from_millis(10)),
            None => self.config.initial_rto,
        };
        let backed_off = base.saturating_mul(1u32 << self.backoff.min(16));
        backed_off.clamp(
            self.config.min_rto,
            self.config.max_rto.max(self.config.min_rto),
        )
    }

    /// Arms the timer after a send, unless it is already running: the deadline belongs to the
    /// oldest unacknowledged packet, not the newest.
    pub(crate) fn on_send(&mut self, now: Instant) {
        if self.deadline.is_none() {
            self.deadline = Some(now + self.rto());
        }
    }

    /// The peer acknowledged new data. `sent_at` is when the acknowledged packet was sent, for
    /// an RTT sample when that packet was not retransmitted.
    pub(crate) fn on_progress(&mut self, now: Instant, sent_at: Option<Instant>) {
        if let (false, Some(sent_at)) = (self.ambiguous, sent_at) {
            self.sample(now.saturating_duration_since(sent_at));
        }
        self.ambiguous = false;
        self.backoff = 0;
        self.retries = 0;
        self.deadline = None;
        self.last_progress = now;
    }

    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// Checks the deadline. On expiry, backs off and disarms, so the retransmission re-arms it.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Expiry {
        if now.saturating_duration_since(self.last_progress) >= self.config.no_progress_limit {
            return Expiry::GiveUp;
        }
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return Expiry::NotYet,
        }
        self.retries += 1;
        if self.retries > self.config.max_retries {
            return Expiry::GiveUp;
        }
        self.backoff += 1;
        self.ambiguous = true;
        self.deadline = None;
        Expiry::Retransmit
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        let limit = self.last_progress + self.config.no_progress_limit;
        Some(self.deadline.map_or(limit, |d| d.min(limit)))
    }

    /// Starts the timer for a receiver waiting on its peer (a write transfer), whether or not a
    /// timer is running.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.deadline = Some(now + self.rto());
    }

    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }
}

#[cfg(test)]
// A virtual clock needs some instant to start from; nothing here waits on it.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_then_gives_up() {
        let t0 = Instant::now();
        let config = TimerConfig {
            max_retries: 2,
            ..TimerConfig::default()
        };
        let mut timer = Retransmit::new(config, None, t0);
        timer.on_send(t0);
        assert_eq!(
            timer.on_timeout(t0 + Duration::from_millis(999)),
            Expiry::NotYet
        );
        assert_eq!(
            timer.on_timeout(t0 + Duration::from_secs(1)),
            Expiry::Retransmit
        );
        assert_eq!(timer.rto(), Duration::from_secs(2));
        let t1 = t0 + Duration::from_secs(1);
        timer.on_send(t1);
        assert_eq!(timer.deadline(), Some(t1 + Duration::from_secs(2)));
        assert_eq!(
            timer.on_timeout(t1 + Duration::from_secs(2)),
            Expiry::Retransmit
        );
        let t2 = t1 + Duration::from_secs(2);
        timer.on_send(t2);
        assert_eq!(timer.rto(), Duration::from_secs(4));
        assert_eq!(
            timer.on_timeout(t2 + Duration::from_secs(4)),
            Expiry::GiveUp
        );
    }

    #[test]
    fn adapts_to_measured_rtt_and_ignores_ambiguous_samples() {
        let t0 = Instant::now();
        let mut timer = Retransmit::new(TimerConfig::default(), None, t0);
        for i in 0..20 {
            let sent = t0 + Duration::from_millis(100 * i);
            timer.on_send(sent);
            timer.on_progress(sent + Duration::from_millis(40), Some(sent));
        }
        // srtt ~40 ms: the floor applies.
        assert_eq!(timer.rto(), Duration::from_millis(250));
        let t1 = t0 + Duration::from_secs(10);
        timer.on_send(t1);
        assert_eq!(
            timer.on_timeout(t1 + Duration::from_millis(250)),
            Expiry::Retransmit
        );
        // The ACK of a retransmitted packet must not be taken as a 3 s round trip.
        timer.on_progress(t1 + Duration::from_secs(3), Some(t1));
        assert_eq!(timer.rto(), Duration::from_millis(250));
    }

    #[test]
    fn negotiated_timeout_is_the_interval() {
        let t0 = Instant::now();
        let mut timer = Retransmit::new(TimerConfig::default(), Some(3), t0);
        timer.on_send(t0);
        assert_eq!(timer.deadline(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(
            timer.on_timeout(t0 + Duration::from_secs(3)),
            Expiry::Retransmit
        );
        assert_eq!(timer.rto(), Duration::from_secs(3));
    }

    #[test]
    fn no_progress_limit_ends_a_transfer_even_without_expiry() {
        let t0 = Instant::now();
        let config = TimerConfig {
            no_progress_limit: Duration::from_secs(5),
            ..TimerConfig::default()
        };
        let timer = &mut Retransmit::new(config, None, t0);
        assert_eq!(timer.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            timer.on_timeout(t0 + Duration::from_secs(5)),
            Expiry::GiveUp
        );
    }
}

//! How many password checks may run, and for whom. argon2 is slow and takes 19 MiB per check
//! on purpose, so guessing must be limited without letting anyone lock the admin out:
//! - each source address may fail a few times a minute; an attempt reserves its place before
//!   the hash is checked, so parallel guesses cannot all slip past the count;
//! - a few checks run at once in total, so a flood from many addresses costs bounded memory;
//! - the lockout is per source: guesses from one host never stop a login from another.
//!
//! sshd's MaxStartups and fail2ban's per-address bans are the model.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins one source may have per [`WINDOW`].
pub(crate) const FAILURES_PER_SOURCE: usize = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Password checks running at once (each holds argon2's 19 MiB for a fraction of a second).
pub(crate) const CONCURRENT_CHECKS: usize = 4;
/// Sources remembered; past it, the one whose last failure is oldest is forgotten first.
const SOURCES: usize = 4096;

/// Why an attempt may not check a password now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This source failed too often lately.
    TooManyFailures,
    /// Too many checks are running already; retry in a moment.
    Busy,
}

#[derive(Debug, Default)]
struct Table {
    /// Failures (and attempts in progress) per source, oldest first.
    failures: HashMap<IpAddr, VecDeque<Instant>>,
    checking: usize,
    #[cfg(test)]
    peak: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Attempts(Mutex<Table>);

/// A password check in progress: counted as a failure unless [`Attempt::succeeded`] is called.
#[derive(Debug)]
pub(crate) struct Attempt<'a> {
    attempts: &'a Attempts,
    source: IpAddr,
    succeeded: bool,
}

impl Attempts {
    pub(crate) fn begin(&self, source: IpAddr, now: Instant) -> Result<Attempt<'_>, Refused> {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let recent = table.failures.entry(source).or_default();
        while recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() >= FAILURES_PER_SOURCE {
            return Err(Refused::TooManyFailures);
        }
        if table.checking >= CONCURRENT_CHECKS {
            return Err(Refused::Busy);
        }
        table.failures.entry(source).or_default().push_back(now);
        table.checking += 1;
        #[cfg(test)]
        {
            table.peak = table.peak.max(table.checking);
        }
        if table.failures.len() > SOURCES {
            table.forget_oldest(now);
        }
        Ok(Attempt {
            attempts: self,
            source,
            succeeded: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn peak(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).peak
    }
}

impl Table {
    fn forget_oldest(&mut self, now: Instant) {
        self.failures.retain(|_, recent| {
            recent
                .back()
                .is_some_and(|at| now.duration_since(*at) < WINDOW)
        });
        while self.failures.len() > SOURCES {
            let Some(oldest) = self
                .failures
                .iter()
                .min_by_key(|(_, recent)| recent.back().copied())
                .map(|(source, _)| *source)
            else {
                break;
            };
            self.failures.remove(&oldest);
        }
    }
}

impl Attempt<'_> {
    /// The password was right: this attempt is not a failure, and the source starts afresh.
    pub(crate) fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut table = self.attempts.0.lock().unwrap_or_else(|p| p.into_inner());
        table.checking = table.checking.saturating_sub(1);
        // A failed attempt's reservation stays, as the failure it turned out to be.
        if self.succeeded {
            table.failures.remove(&self.source);
        }
    }
}

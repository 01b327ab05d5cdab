//! Who may change things: one admin password (argon2id hash) that opens a session, and named
//! API tokens for automation. Sessions live in memory (a restart logs everyone out, which is
//! fine for an appliance); tokens are stored hashed in `<data>/api-tokens.yaml`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::attempts::{Attempts, Refused};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "bootherd_session";
/// A session unused for this long is gone.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first. Logging in in a loop must not grow memory.
const MAX_SESSIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error(
        "the admin password hash is not a valid argon2 hash (PHC string '$argon2id$...'): {0}; make a new one with `bootherd password`"
    )]
    BadHash(String),
    #[error("the password must be at least 8 characters long")]
    WeakPassword,
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
    #[error("{0}")]
    Token(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] bootherd_store::StoreError),
}

/// Hashes a password for storage (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < 8 {
        return Err(AuthError::WeakPassword);
    }
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| AuthError::BadHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::BadHash(e.to_string()))
}

/// Whether `hash` is a password hash bootherd can check passwords against.
pub fn check_password_hash(hash: &str) -> Result<(), AuthError> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|e| AuthError::BadHash(e.to_string()))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

fn random_token(prefix: &str) -> Result<String, AuthError> {
    let bytes = random_bytes::<32>()?;
    Ok(format!("{prefix}{}", hex(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    last_used: Instant,
}

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The token forms and script requests must send back (CSRF protection).
    pub csrf: String,
}

/// A named API token, as stored (the token itself is only shown once, at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    pub sha256: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFileContents {
    #[serde(default)]
    tokens: Vec<ApiToken>,
}

/// The token file's version (modified time, length) and its tokens.
/// Which version of the file (device, inode, mtime, length) a cached token list was read from.
type TokenStamp = (u64, u64, SystemTime, u64);
type TokenCache = (Option<TokenStamp>, Vec<ApiToken>);

/// `api-tokens.yaml`, re-read when it changes on disk (so `bootherd token add` works while
/// the server runs).
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cache: Mutex<TokenCache>,
}

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile {
            path: path.into(),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every write is a rename, so a new inode: the inode tells versions apart even when two
    /// writes fall in one clock tick and leave files of one length.
    fn stamp(&self) -> Option<TokenStamp> {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.path).ok().map(|m| {
            (
                m.dev(),
                m.ino(),
                m.modified().unwrap_or(UNIX_EPOCH),
                m.len(),
            )
        })
    }

    /// Reads the file, changes the tokens and writes them back while holding the writers'
    /// lock, so no writer (another thread or process) replaces the file from a stale copy.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Vec<ApiToken>) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let _lock = bootherd_files::lock::WriteLock::acquire(&self.path).map_err(|source| {
            AuthError::Io {
                path: bootherd_files::lock::lock_path(&self.path),
                source,
            }
        })?;
        let before = self.read()?;
        let mut tokens = before.clone();
        let value = change(&mut tokens)?;
        // A removal of a token that is not there writes nothing.
        if tokens != before {
            self.save(tokens)?;
        }
        Ok(value)
    }

    fn read(&self) -> Result<Vec<ApiToken>, AuthError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(serde_yaml_ng::from_str::<TokenFileContents>(&text)
                .map_err(|e| AuthError::Token(format!("{}: {e}", self.path.display())))?
                .tokens),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(AuthError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    pub fn list(&self) -> Result<Vec<ApiToken>, AuthError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = self.stamp();
        if stamp != cache.0 || stamp.is_none() {
            let tokens = self.read()?;
            *cache = (stamp, tokens);
        }
        Ok(cache.1.clone())
    }

    fn save(&self, tokens: Vec<ApiToken>) -> Result<(), AuthError> {
        let text = serde_yaml_ng::to_string(&TokenFileContents {
            tokens: tokens.clone(),
        })
        .map_err(|e| AuthError::Token(e.to_string()))?;
        let text = format!(
            "# API tokens for bootherd's REST API. Only hashes are stored; manage them with\n# `bootherd token add|list|remove` or on the web UI's Tokens page.\n{text}"
        );
        bootherd_store::write_private(&self.path, text.as_bytes())?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        *cache = (self.stamp(), tokens);
        Ok(())
    }

    /// Creates a token named `name` and returns it; only its hash is kept.
    pub fn create(&self, name: &str) -> Result<String, AuthError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(AuthError::Token(format!(
                "invalid token name '{name}': use 1-64 letters, digits, '-', '_' or '.'"
            )));
        }
        let token = random_token("bh_")?;
        self.modify(|tokens| {
            if tokens.iter().any(|t| t.name == name) {
                return Err(AuthError::Token(format!(
                    "a token named '{name}' already exists; remove it first or pick another name"
                )));
            }
            tokens.push(ApiToken {
                name: name.to_string(),
                sha256: sha256_hex(&token),
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            });
            Ok(())
        })?;
        Ok(token)
    }

    pub fn remove(&self, name: &str) -> Result<bool, AuthError> {
        self.modify(|tokens| {
            let before = tokens.len();
            tokens.retain(|t| t.name != name);
            Ok(tokens.len() != before)
        })
    }

    /// The name of the token, if `token` is one.
    pub fn check(&self, token: &str) -> Option<String> {
        let hash = sha256_hex(token);
        self.list()
            .ok()?
            .into_iter()
            .find(|t| same(&t.sha256, &hash))
            .map(|t| t.name)
    }
}

/// Why a login did not work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// No admin password is set: nobody can log in until one is.
    NoPassword,
    WrongPassword,
    /// Too many wrong passwords lately from this address.
    TooManyAttempts,
    /// Too many password checks running at once; retry in a moment.
    Busy,
}

#[derive(Debug)]
pub struct Auth {
    password_hash: Option<String>,
    sessions: Mutex<HashMap<String, Session>>,
    attempts: Attempts,
    pub tokens: TokenFile,
}

impl Auth {
    /// `password_hash` is a PHC string from `hash_password`; none means no one can log in
    /// (API tokens still work).
    pub fn new(password_hash: Option<String>, tokens: TokenFile) -> Result<Auth, AuthError> {
        if let Some(hash) = &password_hash {
            check_password_hash(hash)?;
        }
        Ok(Auth {
            password_hash,
            sessions: Mutex::new(HashMap::new()),
            attempts: Attempts::default(),
            tokens,
        })
    }

    pub fn has_password(&self) -> bool {
        self.password_hash.is_some()
    }

    /// Checks the password sent from `source` and opens a session; returns the cookie value and
    /// the session. Guessing is limited per source (see `attempts`).
    pub fn login(
        &self,
        password: &str,
        source: IpAddr,
    ) -> Result<(String, SessionInfo), LoginError> {
        let Some(hash) = &self.password_hash else {
            return Err(LoginError::NoPassword);
        };
        let attempt =
            self.attempts
                .begin(source, Instant::now())
                .map_err(|refused| match refused {
                    Refused::TooManyFailures => LoginError::TooManyAttempts,
                    Refused::Busy => LoginError::Busy,
                })?;
        let good = PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        if !good {
            return Err(LoginError::WrongPassword);
        }
        attempt.succeeded();
        let id = random_token("").map_err(|_| LoginError::WrongPassword)?;
        let csrf = random_token("").map_err(|_| LoginError::WrongPassword)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.last_used.elapsed() < SESSION_IDLE);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            sha256_hex(&id),
            Session {
                csrf: csrf.clone(),
                last_used: Instant::now(),
            },
        );
        Ok((id, SessionInfo { csrf }))
    }

    /// The session a cookie value belongs to, if it is current.
    pub fn session(&self, cookie: &str) -> Option<SessionInfo> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let key = sha256_hex(cookie);
        let session = sessions.get_mut(&key)?;
        if session.last_used.elapsed() >= SESSION_IDLE {
            sessions.remove(&key);
            return None;
        }
        session.last_used = Instant::now();
        Some(SessionInfo {
            csrf: session.csrf.clone(),
        })
    }

    pub fn logout(&self, cookie: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&sha256_hex(cookie));
    }
}

/// Whether a CSRF token sent back matches the session's.
pub fn csrf_matches(session: &SessionInfo, sent: &str) -> bool {
    same(&session.csrf, sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempts::{CONCURRENT_CHECKS, FAILURES_PER_SOURCE};

    /// Writers in separate processes each have their own `TokenFile`; threads with one each
    /// stand in for them. Every create must land and work.
    #[test]
    fn parallel_creates_all_land_and_all_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-tokens.yaml");
        let created: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..30)
                .map(|i| {
                    let path = path.clone();
                    scope.spawn(move || TokenFile::new(path).create(&format!("t{i}")).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let tokens = TokenFile::new(&path);
        assert_eq!(tokens.list().unwrap().len(), 30);
        for token in &created {
            assert!(
                tokens.check(token).is_some(),
                "a created token does not work"
            );
        }
    }

    /// A revoked token never works again, whatever is created meanwhile, and a reader that
    /// cached the file before sees the revocation (names of one length give files of one
    /// length, written within one clock tick).
    #[test]
    fn a_revoked_token_stays_revoked_while_others_are_created() {
        for round in 0..15 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("api-tokens.yaml");
            let reader = TokenFile::new(&path);
            let victim = TokenFile::new(&path).create("victim").unwrap();
            assert!(reader.check(&victim).is_some());
            std::thread::scope(|scope| {
                for i in 0..4 {
                    let path = path.clone();
                    scope.spawn(move || TokenFile::new(path).create(&format!("other{i}")).unwrap());
                }
                let path = path.clone();
                scope.spawn(move || assert!(TokenFile::new(path).remove("victim").unwrap()));
            });
            assert!(
                reader.check(&victim).is_none(),
                "round {round}: revoked token still valid"
            );
            assert_eq!(reader.list().unwrap().len(), 4, "round {round}");
        }
    }

    #[test]
    fn password_login_session_logout() {
        let dir = tempfile::tempdir().unwrap();
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(matches!(
            hash_password("short"),
            Err(AuthError::WeakPassword)
        ));
        let auth = Auth::new(Some(hash), TokenFile::new(dir.path().join("t.yaml"))).unwrap();
        assert_eq!(
            auth.login("wrong horse", HERE).unwrap_err(),
            LoginError::WrongPassword
        );
        let (cookie, info) = auth.login("correct horse", HERE).unwrap();
        assert_eq!(auth.session(&cookie), Some(info.clone()));
        assert!(csrf_matches(&info, &info.csrf));
        assert!(!csrf_matches(&info, "x"));
        assert_eq!(auth.session("forged"), None);
        auth.logout(&cookie);
        assert_eq!(auth.session(&cookie), None);
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));
    const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 6));

    #[test]
    fn guessing_is_limited_per_source_and_never_locks_out_others() {
        let dir = tempfile::tempdir().unwrap();
        let hash = hash_password("correct horse").unwrap();
        let auth = Auth::new(Some(hash), TokenFile::new(dir.path().join("t.yaml"))).unwrap();
        for _ in 0..FAILURES_PER_SOURCE {
            assert_eq!(
                auth.login("guess", HERE).unwrap_err(),
                LoginError::WrongPassword
            );
        }
        // The guesser waits now, even with the right password...
        assert_eq!(
            auth.login("correct horse", HERE).unwrap_err(),
            LoginError::TooManyAttempts
        );
        // ...while the admin at another address logs in.
        assert!(auth.login("correct horse", ELSEWHERE).is_ok());
    }

    /// Parallel guesses reserve their place before the slow check, so no more than the limit
    /// are ever checked (before, 20 parallel guesses were all checked), and no more than a few
    /// checks run at once (100 parallel guesses held 683 MB of argon2 memory).
    #[test]
    fn parallel_guesses_cannot_race_the_limit_and_checks_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let hash = hash_password("correct horse").unwrap();
        let auth = Auth::new(Some(hash), TokenFile::new(dir.path().join("t.yaml"))).unwrap();
        let results: Vec<LoginError> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..20)
                .map(|_| scope.spawn(|| auth.login("guess", HERE).unwrap_err()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let checked = results
            .iter()
            .filter(|e| **e == LoginError::WrongPassword)
            .count();
        assert!(
            checked <= FAILURES_PER_SOURCE,
            "{checked} guesses checked: {results:?}"
        );
        let many: Vec<LoginError> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..100u8)
                .map(|i| {
                    let auth = &auth;
                    scope.spawn(move || {
                        let source = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i));
                        auth.login("guess", source).unwrap_err()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(many.contains(&LoginError::WrongPassword));
        assert!(
            auth.attempts.peak() <= CONCURRENT_CHECKS,
            "{} at once",
            auth.attempts.peak()
        );
    }

    #[test]
    fn no_password_means_no_login_and_bad_hashes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::new(None, TokenFile::new(dir.path().join("t.yaml"))).unwrap();
        assert_eq!(
            auth.login("anything", HERE).unwrap_err(),
            LoginError::NoPassword
        );
        let err = Auth::new(
            Some("plain".into()),
            TokenFile::new(dir.path().join("t.yaml")),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bootherd password"), "{err}");
    }

    #[test]
    fn tokens_are_stored_hashed_and_picked_up_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-tokens.yaml");
        let file = TokenFile::new(&path);
        let token = file.create("ci").unwrap();
        assert!(token.starts_with("bh_"));
        assert!(!fs::read_to_string(&path).unwrap().contains(&token));
        assert_eq!(file.check(&token).as_deref(), Some("ci"));
        assert_eq!(file.check("bh_nope"), None);
        assert!(file.create("ci").is_err());
        assert!(file.create("bad name").is_err());
        // Another process (the CLI) adds a token while this one runs.
        let other = TokenFile::new(&path).create("cli").unwrap();
        assert_eq!(file.check(&other).as_deref(), Some("cli"));
        assert!(file.remove("ci").unwrap());
        assert_eq!(file.check(&token), None);
        assert!(!file.remove("ci").unwrap());
    }
}

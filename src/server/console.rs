//! Signing in to the console: `POST /console/api/login`, `POST /console/api/logout`, `GET
//! /console/api/me`, the session cookie and the limit on failed sign-ins.
//!
//! The cookie (`kefu_session`) is `base64url(claims) "." base64url(HMAC-SHA256(key,
//! claims))`; the claims are the user's name, the issue and expiry times (12 hours) and a
//! fingerprint of the user's password hash, so that removing a user or changing their
//! password ends their sessions at once. The key is `STATE_DIR/console.key` (or
//! `--console-key-file`): 32 random bytes made, mode 0600, the first time one is needed,
//! and shared by the nodes that share the state directory. Each request looks its user up
//! in the users file again (see [`super::users::Users`]): the role that counts is the
//! file's, not the one the user had at sign-in.
//!
//! A cookie is sent by the browser on its own, so a request it authenticates that changes
//! something must carry `X-CSRF-Token` (an HMAC of the cookie, which only pages of this
//! origin can read from `/console/api/me`), and its `Origin`, when present, must be this
//! host (see [`super::auth`]).
//!
//! Failed sign-ins are counted per name and per client address in bounded maps (moka,
//! 100,000 entries each): 5 failures for a name or 20 from an address within 15 minutes
//! answer 429 `too_many_attempts` with `Retry-After` until the window ends. An unknown
//! name costs the same argon2 verification as a wrong password, so timing does not tell
//! which names exist.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac as _};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::auth::Principal;
use super::http::read_json;
use super::users::{Role, Users, verify_password};
use super::{ApiError, Body, State, json_response};
use crate::safety::logsafe::LogSafe;

/// The session cookie's name.
pub const COOKIE: &str = "kefu_session";
/// How long a sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The window failed sign-ins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failed sign-ins of one name within the window before 429.
pub const FAILURES_PER_NAME: u32 = 5;
/// Failed sign-ins from one client address within the window before 429.
pub const FAILURES_PER_CLIENT: u32 = 20;
/// Names and addresses whose failures are remembered, each: the maps stay this small
/// whatever an attacker sends (the least used are dropped first).
const TRACKED: u64 = 100_000;

/// How the console's sign-in is set up (`kefu serve --users`, `--console-key-file`,
/// `--console-secure-cookie`).
#[derive(Clone, Debug, Default)]
pub struct ConsoleConfig {
    /// The users file. `None`: `STATE_DIR/users.yaml` when the service has a state
    /// directory, else no users (loopback clients keep their rights).
    pub users: Option<PathBuf>,
    /// The file holding the cookie-signing key, made when missing. `None`:
    /// `STATE_DIR/console.key` when there is a state directory, else a key in memory
    /// (sessions end with the process).
    pub key_file: Option<PathBuf>,
    /// Mark the session cookie `Secure` on every response (kefu behind TLS that does not
    /// say `X-Forwarded-Proto: https`).
    pub secure_cookie: bool,
}

/// The console's sign-in state, one per service.
pub struct Console {
    key: Vec<u8>,
    /// The users file.
    pub users: Users,
    secure_cookie: bool,
    by_name: moka::sync::Cache<String, Failures>,
    by_client: moka::sync::Cache<IpAddr, Failures>,
}

/// Failed sign-ins in one window.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

/// What a session cookie says.
#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user's name.
    u: String,
    /// Issued at (Unix seconds).
    iat: i64,
    /// Expires at (Unix seconds).
    exp: i64,
    /// The fingerprint of the user's password hash at sign-in.
    fp: String,
}

impl Console {
    /// The console for `config`; `state_dir`, when the service has one, is where the users
    /// file and the key are by default.
    pub fn open(config: &ConsoleConfig, state_dir: Option<&Path>) -> Result<Console, std::io::Error> {
        let key_file = config
            .key_file
            .clone()
            .or_else(|| state_dir.map(|d| d.join("console.key")));
        let key = match &key_file {
            Some(path) => load_or_create_key(path)?,
            None => random_key()?,
        };
        let users = config.users.clone().or_else(|| state_dir.map(|d| d.join("users.yaml")));
        Ok(Console {
            key,
            users: Users::new(users),
            secure_cookie: config.secure_cookie,
            by_name: moka::sync::Cache::builder()
                .max_capacity(TRACKED)
                .time_to_live(FAILURE_WINDOW)
                .build(),
            by_client: moka::sync::Cache::builder()
                .max_capacity(TRACKED)
                .time_to_live(FAILURE_WINDOW)
                .build(),
        })
    }

    fn mac(&self, purpose: &[u8], data: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(purpose);
        mac.update(&[0]);
        mac.update(data);
        mac
    }

    /// The fingerprint of a password hash a cookie carries: keyed, so the cookie tells
    /// nothing about the hash.
    fn fingerprint(&self, password_hash: &str) -> String {
        let tag = self
            .mac(b"fingerprint", password_hash.as_bytes())
            .finalize()
            .into_bytes();
        B64.encode(&tag[..16])
    }

    /// The CSRF token of a session cookie's value.
    pub fn csrf(&self, cookie: &str) -> String {
        B64.encode(self.mac(b"csrf", cookie.as_bytes()).finalize().into_bytes())
    }

    /// A signed session cookie's value for `name`, whose password hash is `hash`.
    fn issue(&self, name: &str, hash: &str, now: i64) -> String {
        let claims = Claims {
            u: name.to_owned(),
            iat: now,
            exp: now + SESSION_LIFETIME.as_secs() as i64,
            fp: self.fingerprint(hash),
        };
        let payload = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let tag = self.mac(b"session", payload.as_bytes()).finalize().into_bytes();
        format!("{payload}.{}", B64.encode(tag))
    }

    /// The user a session cookie's value signs in, with their role as the users file says
    /// now: `None` for a forged, expired or ended session (user removed, password changed).
    pub fn session(&self, cookie: &str, now: i64) -> Option<(String, Role)> {
        let (payload, tag) = cookie.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        // `verify_slice` compares in constant time.
        self.mac(b"session", payload.as_bytes()).verify_slice(&tag).ok()?;
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        if claims.exp <= now || claims.iat > now + 60 {
            return None;
        }
        let users = self.users.current();
        let user = users.find(&claims.u)?;
        let fingerprint = self.fingerprint(&user.password_hash);
        crate::engine::constant_time_eq(fingerprint.as_bytes(), claims.fp.as_bytes()).then_some((claims.u, user.role))
    }

    /// Seconds to wait when `name` or `client` failed too often in the current window.
    fn blocked(&self, name: &str, client: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let wait = |failures: Option<Failures>, limit: u32| {
            failures
                .filter(|f| f.count >= limit && now.duration_since(f.since) < FAILURE_WINDOW)
                .map(|f| (FAILURE_WINDOW - now.duration_since(f.since)).as_secs().max(1))
        };
        let by_name = wait(self.by_name.get(name), FAILURES_PER_NAME);
        let by_client = wait(self.by_client.get(&client), FAILURES_PER_CLIENT);
        by_name.max(by_client)
    }

    /// Counts a failed sign-in of `name` (none when it cannot be a user's name: the map
    /// keeps only short keys) from `client`.
    fn failed(&self, name: Option<&str>, client: IpAddr) {
        let now = Instant::now();
        let bump = |old: Option<Failures>| match old {
            Some(f) if now.duration_since(f.since) < FAILURE_WINDOW => Failures {
                count: f.count.saturating_add(1),
                since: f.since,
            },
            _ => Failures { count: 1, since: now },
        };
        if let Some(name) = name {
            self.by_name
                .entry(name.to_owned())
                .and_upsert_with(|e| bump(e.map(|e| *e.value())));
        }
        self.by_client
            .entry(client)
            .and_upsert_with(|e| bump(e.map(|e| *e.value())));
    }

    /// The `Set-Cookie` value of a session, `Secure` when asked for or when the request
    /// came over https (said by a proxy on this host).
    fn set_cookie(&self, value: &str, max_age: u64, https: bool) -> String {
        let secure = if self.secure_cookie || https { "; Secure" } else { "" };
        format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
    }
}

/// The key in `path`, or a new one written there (mode 0600, never over a file another
/// node wrote meanwhile).
fn load_or_create_key(path: &Path) -> Result<Vec<u8>, std::io::Error> {
    let read = |path: &Path| -> Result<Vec<u8>, std::io::Error> {
        let text = std::fs::read(path)?;
        let key = text.trim_ascii().to_vec();
        if key.len() < 16 {
            return Err(std::io::Error::other(format!(
                "{}: the console key is shorter than 16 bytes",
                path.display()
            )));
        }
        Ok(key)
    };
    match read(path) {
        Ok(key) => return Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let key: String = random_key()?.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(key.as_bytes())?;
            file.sync_all()?;
            tracing::info!(key = %path.display(), "made the console's cookie-signing key");
            Ok(key.into_bytes())
        }
        // Another node (or test) made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

fn random_key() -> Result<Vec<u8>, std::io::Error> {
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(key)
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The value of the `kefu_session` cookie of a request, if it sends one.
pub(super) fn session_cookie(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

/// Whether the request came over https, as a proxy on this host says.
fn over_https(req: &Request<Incoming>, peer: SocketAddr) -> bool {
    super::auth::is_loopback(peer.ip())
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The client's address for the failure count: the peer, or, when the peer is a proxy on
/// this host, the address it says it forwards for (`X-Real-IP`, else the last
/// `X-Forwarded-For` entry, the one it added itself).
fn client_ip(req: &Request<Incoming>, peer: SocketAddr) -> IpAddr {
    if !super::auth::is_loopback(peer.ip()) {
        return peer.ip();
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    header("x-real-ip")
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| {
            header("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(peer.ip())
}

/// The body of `POST /console/api/login`.
#[derive(Deserialize)]
struct Login {
    name: String,
    password: String,
}

/// The argon2 hash an unknown name is checked against, so that it takes as long as a
/// wrong password.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| super::users::hash_password("no such user, no such password").unwrap_or_default())
}

/// `POST /console/api/login`: 200 `{user, role, csrf}` with the session cookie; 401
/// `wrong_credentials` for an unknown name or a wrong password alike; 429
/// `too_many_attempts` with `Retry-After` after too many failures.
pub(super) async fn login(
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    super::auth::check_origin(&req)?;
    let https = over_https(&req, peer);
    let client = client_ip(&req, peer);
    let body: Login = read_json(req, state.limits.max_body_bytes, false).await?;
    let console = &state.console;
    if let Some(wait) = console.blocked(&body.name, client) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed sign-ins; try again in {} minutes", wait.div_ceil(60)),
        )
        .with_retry_after(wait));
    }
    let user = console.users.current().find(&body.name).cloned();
    let password = body.password;
    // argon2 takes tens of milliseconds of CPU: off the runtime's workers.
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let verified = tokio::task::spawn_blocking(move || match &hash {
        Some(hash) => verify_password(hash, &password),
        None => {
            let _ = verify_password(dummy_hash(), &password);
            false
        }
    })
    .await
    .map_err(|_| ApiError::internal())?;
    let Some(user) = user.filter(|_| verified) else {
        let name = super::users::check_name(&body.name)
            .is_ok()
            .then_some(body.name.as_str());
        console.failed(name, client);
        tracing::warn!(name = %LogSafe(&body.name), client = %client, "console sign-in refused");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong_credentials",
            "wrong name or password",
        ));
    };
    console.by_name.invalidate(&user.name);
    let cookie = console.issue(&user.name, &user.password_hash, unix_now());
    tracing::info!(user = %LogSafe(&user.name), role = user.role.name(), "signed in to the console");
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "user": user.name, "role": user.role.name(), "csrf": console.csrf(&cookie) }),
    );
    let set = console.set_cookie(&cookie, SESSION_LIFETIME.as_secs(), https);
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set).map_err(|_| ApiError::internal())?,
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /console/api/logout`: 204 and the cookie cleared. The cookie itself stays valid
/// until it expires if someone kept a copy; changing the password ends it everywhere.
pub(super) fn logout(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ApiError> {
    super::auth::check_origin(req)?;
    let mut response = Response::new(http_body_util::Either::Left(http_body_util::Full::new(
        bytes::Bytes::new(),
    )));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let set = state.console.set_cookie("", 0, over_https(req, peer));
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set).map_err(|_| ApiError::internal())?,
    );
    Ok(response)
}

/// `GET /console/api/me`: who the console is working for: `{user, role, csrf, can, via}`
/// (`via`: `cookie`, `token` or `loopback`; the last two have no CSRF token and need
/// none); 401 `unauthenticated` when nobody.
pub(super) fn me(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, ApiError> {
    let unauthenticated = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "not signed in: POST /console/api/login",
        )
    };
    let principal = state.authenticate(req, peer).map_err(|_| unauthenticated())?;
    let (user, role, csrf, via) = match &principal {
        Principal::User { name, role } => {
            let cookie = session_cookie(req).ok_or_else(unauthenticated)?;
            (name.clone(), *role, state.console.csrf(cookie), "cookie")
        }
        Principal::Token => ("admin".to_owned(), Role::Admin, String::new(), "token"),
        Principal::Loopback => ("local".to_owned(), Role::Admin, String::new(), "loopback"),
    };
    let mut response = json_response(
        StatusCode::OK,
        &json!({ "user": user, "role": role.name(), "csrf": csrf, "can": role.permissions(), "via": via }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::users::{User, UsersFile, hash_password};

    fn open(dir: &Path) -> Console {
        let config = ConsoleConfig::default();
        Console::open(&config, Some(dir)).unwrap()
    }

    fn add(dir: &Path, name: &str, password: &str, role: Role) {
        let path = dir.join("users.yaml");
        let mut file = UsersFile::load(&path).unwrap().unwrap_or_default();
        file.users.retain(|u| u.name != name);
        file.users.push(User {
            name: name.into(),
            role,
            password_hash: hash_password(password).unwrap(),
            created: "2026-12-06T00:00:00Z".into(),
        });
        file.save(&path).unwrap();
    }

    #[test]
    fn a_cookie_signs_in_until_it_expires_or_the_password_changes() {
        let dir = tempfile::tempdir().unwrap();
        add(dir.path(), "li", "password1", Role::Editor);
        let console = open(dir.path());
        let hash = console.users.current().find("li").unwrap().password_hash.clone();
        let now = unix_now();
        let cookie = console.issue("li", &hash, now);
        assert_eq!(console.session(&cookie, now), Some(("li".into(), Role::Editor)));
        assert_eq!(console.session(&cookie, now + 12 * 3600), None, "expired");
        // Tampered: another name with the same tag.
        let (_, tag) = cookie.split_once('.').unwrap();
        let forged = B64.encode(br#"{"u":"admin","iat":0,"exp":99999999999,"fp":"x"}"#);
        assert_eq!(console.session(&format!("{forged}.{tag}"), now), None);
        // A key made again from the same file signs the same.
        let again = open(dir.path());
        assert_eq!(again.session(&cookie, now), Some(("li".into(), Role::Editor)));
        // The role counts as the file says now; a new password ends the session.
        add(dir.path(), "li", "password2", Role::Viewer);
        assert_eq!(console.session(&cookie, now), None);
        let hash = console.users.current().find("li").unwrap().password_hash.clone();
        let cookie = console.issue("li", &hash, now);
        assert_eq!(console.session(&cookie, now), Some(("li".into(), Role::Viewer)));
        assert_ne!(console.csrf(&cookie), console.csrf(&format!("{cookie}x")));
    }

    #[test]
    fn the_key_file_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/console.key");
        let key = load_or_create_key(&path).unwrap();
        assert_eq!(key.len(), 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_key(&path).unwrap(), key);
    }

    #[test]
    fn failures_block_a_name_after_five_and_a_client_after_twenty() {
        let dir = tempfile::tempdir().unwrap();
        let console = open(dir.path());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FAILURES_PER_NAME - 1 {
            console.failed(Some("li"), a);
        }
        assert_eq!(console.blocked("li", a), None);
        console.failed(Some("li"), b);
        assert!(console.blocked("li", a).is_some_and(|s| s > 14 * 60));
        assert_eq!(console.blocked("wang", a), None);
        for i in 0..FAILURES_PER_CLIENT {
            console.failed(Some(&format!("n{i}")), b);
        }
        assert!(console.blocked("zhao", b).is_some());
        assert_eq!(console.blocked("zhao", a), None);
    }
}

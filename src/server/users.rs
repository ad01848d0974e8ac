//! The console's users: the users file (`STATE_DIR/users.yaml`, or `kefu serve --users
//! FILE`), their roles and what each role may do, and their argon2id password hashes.
//!
//! The file is YAML, `users: [{name, role, password_hash, created}]`, written by `kefu
//! users` atomically (a temporary file in the same directory, renamed over) with mode
//! 0600: it holds password hashes. The server reads it through [`Users`], which looks at
//! the file's modification time on each use and reads it again when it changed, so a user
//! added, removed or given a new password counts at once without a restart.
//!
//! While no users file exists, the admin routes keep answering loopback clients without a
//! token (a fresh `make run`); once it exists, a signed-in user or the admin token is
//! needed (see [`super::auth`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use serde::{Deserialize, Serialize};

/// What a caller may do; each route names the one it needs (`routes::Route::needs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Look: the admin routes that read, checking and testing the draft.
    Read,
    /// Change the draft (files, tables, saved tests) and replay it.
    Edit,
    /// Publish, start a canary, promote, roll back.
    Publish,
    /// Take conversations over, answer and release them.
    Agent,
    /// Everything, reloading included.
    Admin,
}

impl Permission {
    /// Every permission, in the order `/console/api/me` lists them.
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::Edit,
        Permission::Publish,
        Permission::Agent,
        Permission::Admin,
    ];

    /// The permission's name (`read`, `edit`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Edit => "edit",
            Permission::Publish => "publish",
            Permission::Agent => "agent",
            Permission::Admin => "admin",
        }
    }

    /// The least role that has this permission: what a 403 says is needed.
    pub fn least_role(self) -> Role {
        match self {
            Permission::Read => Role::Viewer,
            Permission::Edit => Role::Editor,
            Permission::Publish => Role::Publisher,
            Permission::Agent => Role::Agent,
            Permission::Admin => Role::Admin,
        }
    }
}

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything, tests the draft; changes nothing.
    Viewer,
    /// A viewer who edits the draft.
    Editor,
    /// An editor who publishes.
    Publisher,
    /// A viewer who answers customers (takeover, reply, release).
    Agent,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, from least to most.
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Editor, Role::Publisher, Role::Agent, Role::Admin];

    /// Whether this role has `permission`.
    pub fn can(self, permission: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Admin => true,
            Role::Viewer => permission == P::Read,
            Role::Editor => matches!(permission, P::Read | P::Edit),
            Role::Publisher => matches!(permission, P::Read | P::Edit | P::Publish),
            Role::Agent => matches!(permission, P::Read | P::Agent),
        }
    }

    /// The names of the permissions this role has.
    pub fn permissions(self) -> Vec<&'static str> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.can(*p))
            .map(Permission::name)
            .collect()
    }

    /// The role's name as the file and the API write it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Publisher => "publisher",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == text)
            .ok_or_else(|| format!("`{text}` is not a role: viewer, editor, publisher, agent or admin"))
    }
}

/// One user of the console.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The name they sign in with.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// The argon2id hash of their password, a PHC string.
    pub password_hash: String,
    /// When the user was added (RFC 3339).
    pub created: String,
}

/// The users file's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Every user.
    #[serde(default)]
    pub users: Vec<User>,
}

/// A users file that could not be read or written; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct UsersError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong (with `line N column M` for bad YAML).
    pub message: String,
}

/// The most a users file may weigh: it is read on the request path.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

impl UsersFile {
    /// Reads the users file at `path`; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<UsersFile>, UsersError> {
        let error = |message: String| UsersError {
            path: path.to_path_buf(),
            message,
        };
        let text = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(error(e.to_string())),
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                return Err(error(format!("larger than {MAX_FILE_BYTES} bytes")));
            }
            Ok(_) => std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?,
        };
        if text.trim().is_empty() {
            return Ok(Some(UsersFile::default()));
        }
        let file: UsersFile = serde_yaml::from_str(&text).map_err(|e| error(e.to_string()))?;
        for (i, user) in file.users.iter().enumerate() {
            if let Err(message) = check_name(&user.name) {
                return Err(error(format!("user {}: {message}", i + 1)));
            }
            if PasswordHash::new(&user.password_hash).is_err() {
                return Err(error(format!(
                    "user `{}`: `password_hash` is not a PHC string",
                    user.name
                )));
            }
            if file.users[..i].iter().any(|u| u.name == user.name) {
                return Err(error(format!("user `{}` is listed twice", user.name)));
            }
        }
        Ok(Some(file))
    }

    /// Writes the file atomically with mode 0600 (a temporary file beside it, renamed
    /// over it), creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let error = |message: String| UsersError {
            path: path.to_path_buf(),
            message,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
        let text = serde_yaml::to_string(self).map_err(|e| error(e.to_string()))?;
        // tempfile creates its files with mode 0600.
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| error(e.to_string()))?;
        use std::io::Write as _;
        temp.write_all(b"# kefu's console users: edit with `kefu users` (docs/operations.md).\n")
            .and_then(|()| temp.write_all(text.as_bytes()))
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| error(e.to_string()))?;
        temp.persist(path).map_err(|e| error(e.error.to_string()))?;
        Ok(())
    }

    /// The user called `name`.
    pub fn find(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// Whether `name` can be a user's name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn check_name(name: &str) -> Result<(), String> {
    let count = name.chars().count();
    if count == 0 || count > 64 {
        return Err("a user name has 1 to 64 characters".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "`{bad}` cannot be in a user name (letters, digits, `.`, `_`, `-`, `@`)"
        ));
    }
    Ok(())
}

/// Whether `password` can be a password: 8 to 1,024 characters.
pub fn check_password(password: &str) -> Result<(), String> {
    let count = password.chars().count();
    if count < 8 {
        return Err("a password has at least 8 characters".into());
    }
    if count > 1024 {
        return Err("a password has at most 1024 characters".into());
    }
    Ok(())
}

/// The argon2id hash of `password` (default parameters: 19 MiB, 2 passes), a PHC string
/// with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random numbers for the salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` is the one `hash` was made from (the comparison is constant-time,
/// inside `argon2`).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The users file as the server sees it: read again whenever its modification time, size
/// or inode changed.
pub struct Users {
    path: Option<PathBuf>,
    cache: Mutex<Cached>,
    /// When [`Users::exists_recently`] last looked, in ms since `born` (0: never).
    looked: std::sync::atomic::AtomicU64,
    /// What it saw then.
    existed: std::sync::atomic::AtomicBool,
    born: std::time::Instant,
}

/// What was read last, and the stamp of the file it was read from.
#[derive(Default)]
struct Cached {
    stamp: Option<Stamp>,
    current: Current,
}

/// What identifies one content of the file without reading it.
type Stamp = (std::time::SystemTime, u64, u64);

/// The users as they stand.
#[derive(Clone, Debug, Default)]
pub enum Current {
    /// There is no users file: loopback clients keep their old rights.
    #[default]
    NoFile,
    /// The users file's users (none when it could not be read: fail closed).
    Users(Arc<UsersFile>),
}

impl Current {
    /// The user called `name`, if the file has one.
    pub fn find(&self, name: &str) -> Option<&User> {
        match self {
            Current::NoFile => None,
            Current::Users(file) => file.find(name),
        }
    }

    /// Whether a users file exists.
    pub fn exists(&self) -> bool {
        matches!(self, Current::Users(_))
    }
}

impl Users {
    /// The users of the file at `path`; `None`: no users file (loopback clients keep
    /// their rights).
    pub fn new(path: Option<PathBuf>) -> Self {
        Users {
            path,
            cache: Mutex::new(Cached::default()),
            looked: std::sync::atomic::AtomicU64::new(0),
            existed: std::sync::atomic::AtomicBool::new(false),
            born: std::time::Instant::now(),
        }
    }

    /// Whether a users file exists, looked at no more than once a second. The chat
    /// routes ask it on every turn (may this loopback caller see the whole trace?),
    /// where a `stat` and a lock per turn would cost more than the answer to a
    /// question that changes once, when the first user is added.
    pub fn exists_recently(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = u64::try_from(self.born.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let looked = self.looked.load(Relaxed);
        if looked != 0 && now.saturating_sub(looked) < 1000 {
            return self.existed.load(Relaxed);
        }
        let exists = self.current().exists();
        self.existed.store(exists, Relaxed);
        self.looked.store(now, Relaxed);
        exists
    }

    /// The file's path, if there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The users now: the file is looked at (one `stat`) and read again when it changed.
    /// A file that cannot be read counts as a file without users, logged once per change.
    pub fn current(&self) -> Current {
        let Some(path) = &self.path else {
            return Current::NoFile;
        };
        let stamp = std::fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len(), m.ino())
        });
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // An absent file both times is a hit too: the default is `NoFile`.
        if cache.stamp == stamp {
            return cache.current.clone();
        }
        let current = match UsersFile::load(path) {
            Ok(None) => Current::NoFile,
            Ok(Some(file)) => Current::Users(Arc::new(file)),
            Err(error) => {
                tracing::error!(%error, "the users file cannot be read: nobody can sign in until it is fixed");
                Current::Users(Arc::default())
            }
        };
        cache.stamp = stamp;
        cache.current = current.clone();
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_have_their_permissions() {
        assert_eq!(Role::Viewer.permissions(), ["read"]);
        assert_eq!(Role::Editor.permissions(), ["read", "edit"]);
        assert_eq!(Role::Publisher.permissions(), ["read", "edit", "publish"]);
        assert_eq!(Role::Agent.permissions(), ["read", "agent"]);
        assert_eq!(Role::Admin.permissions(), ["read", "edit", "publish", "agent", "admin"]);
        for permission in Permission::ALL {
            assert!(permission.least_role().can(permission));
        }
        assert_eq!("publisher".parse::<Role>(), Ok(Role::Publisher));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct hors"));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("小王").is_ok());
        assert!(check_name("ops.li@shop").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }

    #[test]
    fn the_file_is_written_0600_and_read_again_when_it_changes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.yaml");
        let users = Users::new(Some(path.clone()));
        assert!(!users.current().exists());
        let mut file = UsersFile::default();
        file.users.push(User {
            name: "li".into(),
            role: Role::Editor,
            password_hash: hash_password("password1").unwrap(),
            created: "2026-12-06T00:00:00Z".into(),
        });
        file.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(users.current().find("li").map(|u| u.role), Some(Role::Editor));
        file.users[0].role = Role::Viewer;
        file.save(&path).unwrap();
        assert_eq!(users.current().find("li").map(|u| u.role), Some(Role::Viewer));
        std::fs::write(&path, "users: [{name: x}]").unwrap();
        let broken = users.current();
        assert!(broken.exists() && broken.find("li").is_none(), "fails closed");
        let error = UsersFile::load(&path).unwrap_err().to_string();
        assert!(error.contains("users.yaml") && error.contains("line 1"), "{error}");
    }
}

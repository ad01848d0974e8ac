//! The version store in Redis, shared by a fleet: every node reads the same versions and
//! pointers, and hears of a change on the `kefu:rules:changed` channel.
//!
//! Keys, under a prefix (`kefu:rules:` by default):
//!
//! ```text
//! next             INCR: version ids (a refused publish may leave a gap)
//! version:ID       a version's record (JSON, written once)
//! notes:ID         its notes (a list of JSON, RPUSH)
//! ids              sorted set of every id
//! rules:HASH       the latest version with that rules hash
//! blob:SHA256      a file's bytes
//! pointers         live, canary, serial (JSON)
//! serial           the pointers' serial alone (what the compare-and-set reads)
//! artifact:SHA256  a cached artifact, by the sha256 of its key
//! changed          the pub/sub channel: the new serial after every pointer change
//! ```
//!
//! A publish stores its blobs first (content-addressed, so harmless if it then fails),
//! takes an id with `INCR`, then one Lua script checks the pointers' serial, writes the
//! record and moves the pointers, and publishes the serial: the record and the pointer move
//! land together or not at all. A changed serial (another publish, promote or rollback in
//! between) means reading the pointers again and checking the publish rules again, so the
//! second of two publishes from one parent is refused with a conflict.
//!
//! One connection, made on first use and again after a failure, with a timeout on connect,
//! read and write like the session store's (`store::redis`); versions change rarely and
//! are read when the pointers move, so a pool would buy nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{
    NewVersion, Note, Pointers, Result, Version, VersionError, VersionId, VersionStore, check_publish, file_refs,
    new_record, sha256_hex, verify,
};

/// Moves the pointers if the serial is still `ARGV[1]`, and with a record (`ARGV[4]`, not
/// empty) records a new version `ARGV[5]` in the same step; publishes the new serial on
/// channel `ARGV[3]`. Answers `{1, serial}` when done, `{0, serial}` when the serial moved,
/// `{-1, serial}` when the record exists already.
const SET_POINTERS: &str = r"
local serial = tonumber(redis.call('GET', KEYS[1]) or '0')
if serial ~= tonumber(ARGV[1]) then
  return {0, serial}
end
if ARGV[4] ~= '' then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return {-1, serial}
  end
  redis.call('SET', KEYS[3], ARGV[4])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[5]), ARGV[5])
  redis.call('SET', KEYS[5], ARGV[5])
end
serial = serial + 1
redis.call('SET', KEYS[1], serial)
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], serial)
return {1, serial}
";

/// How many times a publish or pointer change is tried when the serial moves under it.
const CAS_ATTEMPTS: u32 = 16;

/// The version store in Redis.
pub struct RedisVersionStore {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Option<redis::Connection>>,
    script: redis::Script,
    /// The address for messages, its password masked.
    address: String,
}

impl std::fmt::Debug for RedisVersionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisVersionStore")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn redis_error(e: redis::RedisError) -> VersionError {
    VersionError::Redis(e.to_string())
}

impl RedisVersionStore {
    /// The default key prefix.
    pub const PREFIX: &str = "kefu:rules:";

    /// Connects to `url` with the default prefix and a 5-second timeout, and checks that
    /// Redis answers.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, Self::PREFIX, Duration::from_secs(5))
    }

    /// Connects with a key prefix and a timeout for connecting, reading and writing.
    pub fn connect_with(url: &str, prefix: &str, timeout: Duration) -> Result<Self> {
        let address = crate::safety::logsafe::redacted_url(url);
        let client =
            redis::Client::open(url).map_err(|e| VersionError::Redis(format!("invalid redis url `{address}`: {e}")))?;
        let store = RedisVersionStore {
            client,
            prefix: prefix.to_string(),
            timeout,
            conn: Mutex::new(None),
            script: redis::Script::new(SET_POINTERS),
            address,
        };
        store.with(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(store)
    }

    /// The pub/sub channel that announces pointer changes (`kefu:rules:changed`).
    pub fn channel(&self) -> String {
        format!("{}changed", self.prefix)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn connect_one(&self) -> redis::RedisResult<redis::Connection> {
        let conn = self.client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    /// Runs `f` on the connection, connecting first when there is none; a failed
    /// connection is dropped and `f` tried once more on a new one when the failure was the
    /// connection's (a Redis restart), not the command's.
    fn with<T>(&self, f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        for _ in 0..2 {
            if slot.is_none() {
                match self.connect_one() {
                    Ok(c) => *slot = Some(c),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            let conn = slot.as_mut().expect("connected above");
            match f(conn) {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() =>
                {
                    *slot = None;
                    last = Some(e);
                }
                Err(e) => return Err(redis_error(e)),
            }
        }
        Err(VersionError::Redis(format!(
            "{}: {}",
            self.address,
            last.map_or_else(String::new, |e| e.to_string())
        )))
    }

    fn read_pointers(&self) -> Result<Pointers> {
        let key = self.key("pointers");
        let text: Option<Vec<u8>> = self.with(|c| redis::cmd("GET").arg(&key).query(c))?;
        match text {
            None => Ok(Pointers::default()),
            Some(text) => serde_json::from_slice(&text).map_err(|e| VersionError::Corrupt {
                id: 0,
                path: key.clone(),
                why: format!("not the live/canary pointers: {e}"),
            }),
        }
    }

    /// Runs the compare-and-set script; `Ok(true)` when it landed, `Ok(false)` when the
    /// serial moved.
    fn cas(&self, expect: u64, pointers: &Pointers, record: Option<&Version>) -> Result<bool> {
        let pointers_json = serde_json::to_string(pointers).expect("pointers serialize");
        let (record_json, id) = match record {
            Some(v) => (serde_json::to_string(v).expect("records serialize"), v.id),
            None => (String::new(), 0),
        };
        let rules_key = self.key(&format!("rules:{}", record.map_or("", |v| v.rules.as_str())));
        let keys = [
            self.key("serial"),
            self.key("pointers"),
            self.key(&format!("version:{id}")),
            self.key("ids"),
            rules_key,
        ];
        let channel = self.channel();
        let (outcome, serial): (i64, u64) = self.with(|c| {
            let mut invocation = self.script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            invocation
                .arg(expect)
                .arg(&pointers_json)
                .arg(&channel)
                .arg(&record_json)
                .arg(id)
                .invoke(c)
        })?;
        match outcome {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(VersionError::Redis(format!(
                "version {id} exists already at serial {serial}: the `next` key was reset under existing versions"
            ))),
        }
    }

    fn read_record(&self, id: VersionId) -> Result<Version> {
        let key = self.key(&format!("version:{id}"));
        let notes_key = self.key(&format!("notes:{id}"));
        let (text, notes): (Option<Vec<u8>>, Vec<Vec<u8>>) = self.with(|c| {
            redis::pipe()
                .cmd("GET")
                .arg(&key)
                .cmd("LRANGE")
                .arg(&notes_key)
                .arg(0)
                .arg(-1)
                .query(c)
        })?;
        let text = text.ok_or(VersionError::NotFound(id))?;
        let corrupt = |why: String| VersionError::Corrupt {
            id,
            path: key.clone(),
            why,
        };
        let mut version: Version =
            serde_json::from_slice(&text).map_err(|e| corrupt(format!("not a version record: {e}")))?;
        if version.id != id {
            return Err(corrupt(format!("the record says it is version {}", version.id)));
        }
        version.notes = notes.iter().filter_map(|n| serde_json::from_slice(n).ok()).collect();
        Ok(version)
    }

    /// Calls `on_change` whenever the pointers change (a message on
    /// [`channel`](Self::channel)), from a thread of its own with its own connection. A
    /// lost connection is made again (every second until Redis answers) and `on_change`
    /// called once it is back, since messages may have been missed meanwhile. Dropping the
    /// returned [`Subscription`] stops the thread within a second.
    pub fn subscribe(&self, on_change: impl Fn() + Send + 'static) -> Subscription {
        let stop = Arc::new(AtomicBool::new(false));
        let client = self.client.clone();
        let channel = self.channel();
        let address = self.address.clone();
        let timeout = self.timeout;
        let stopped = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("kefu-rules-sub".into())
            .spawn(move || {
                let mut first = true;
                while !stopped.load(Ordering::Relaxed) {
                    let result = (|| -> redis::RedisResult<()> {
                        let mut conn = client.get_connection_with_timeout(timeout)?;
                        let mut pubsub = conn.as_pubsub();
                        pubsub.subscribe(&channel)?;
                        // Short reads, so that a stop is noticed.
                        pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
                        if !first {
                            on_change();
                        }
                        first = false;
                        while !stopped.load(Ordering::Relaxed) {
                            match pubsub.get_message() {
                                Ok(_) => on_change(),
                                Err(e) if e.is_timeout() => {}
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(())
                    })();
                    if let Err(error) = result {
                        tracing::warn!(redis = %address, %error, "the rules-change subscription failed; connecting again");
                        first = false;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            });
        if let Err(error) = &spawned {
            tracing::error!(%error, "cannot start the rules-change subscription thread");
        }
        Subscription { stop }
    }
}

/// A running [`RedisVersionStore::subscribe`]: dropping it stops the thread.
#[derive(Debug)]
pub struct Subscription {
    stop: Arc<AtomicBool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl VersionStore for RedisVersionStore {
    fn publish(&self, new: NewVersion) -> Result<Version> {
        let refs = file_refs(&new.files)?;
        check_publish(&new, &self.read_pointers()?)?;
        for (path, file) in &refs {
            let key = self.key(&format!("blob:{}", file.sha256));
            let bytes = &new.files[path];
            self.with(|c| redis::cmd("SET").arg(&key).arg(bytes.as_slice()).query::<()>(c))?;
        }
        let next = self.key("next");
        let id: VersionId = self.with(|c| redis::cmd("INCR").arg(&next).query(c))?;
        for _ in 0..CAS_ATTEMPTS {
            let pointers = self.read_pointers()?;
            check_publish(&new, &pointers)?;
            let (version, moved) = new_record(id, &new, refs.clone(), &pointers);
            if self.cas(pointers.serial, &moved, Some(&version))? {
                return Ok(version);
            }
        }
        Err(VersionError::Redis(format!(
            "the pointers kept changing under {CAS_ATTEMPTS} attempts to publish"
        )))
    }

    fn version(&self, id: VersionId) -> Result<Version> {
        self.read_record(id)
    }

    fn list(&self) -> Result<Vec<Version>> {
        let key = self.key("ids");
        let ids: Vec<VersionId> = self.with(|c| redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query(c))?;
        ids.into_iter().map(|id| self.read_record(id)).collect()
    }

    fn files(&self, id: VersionId) -> Result<BTreeMap<String, Vec<u8>>> {
        let version = self.read_record(id)?;
        let keys: Vec<String> = version
            .files
            .values()
            .map(|f| self.key(&format!("blob:{}", f.sha256)))
            .collect();
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let blobs: Vec<Option<Vec<u8>>> = self.with(|c| redis::cmd("MGET").arg(&keys).query(c))?;
        let mut files = BTreeMap::new();
        for ((path, file), (blob, key)) in version.files.iter().zip(blobs.into_iter().zip(&keys)) {
            let where_ = format!("{path} (key {key})");
            let bytes = blob.ok_or_else(|| VersionError::Corrupt {
                id,
                path: where_.clone(),
                why: "the blob is missing".into(),
            })?;
            verify(id, &where_, file, &bytes)?;
            files.insert(path.clone(), bytes);
        }
        Ok(files)
    }

    fn by_rules(&self, rules: &str) -> Result<Option<VersionId>> {
        let key = self.key(&format!("rules:{rules}"));
        self.with(|c| redis::cmd("GET").arg(&key).query(c))
    }

    fn pointers(&self) -> Result<Pointers> {
        self.read_pointers()
    }

    fn set_pointers(&self, expect_serial: u64, mut new: Pointers) -> Result<Pointers> {
        for id in new.live.iter().chain(new.canary.as_ref().map(|c| &c.version)) {
            let key = self.key(&format!("version:{id}"));
            let exists: bool = self.with(|c| redis::cmd("EXISTS").arg(&key).query(c))?;
            if !exists {
                return Err(VersionError::NotFound(*id));
            }
        }
        new.serial = expect_serial + 1;
        if self.cas(expect_serial, &new, None)? {
            return Ok(new);
        }
        let found = self.read_pointers()?.serial;
        Err(VersionError::Moved {
            expected: expect_serial,
            found,
        })
    }

    fn annotate(&self, id: VersionId, note: Note) -> Result<()> {
        let key = self.key(&format!("version:{id}"));
        let exists: bool = self.with(|c| redis::cmd("EXISTS").arg(&key).query(c))?;
        if !exists {
            return Err(VersionError::NotFound(id));
        }
        let notes = self.key(&format!("notes:{id}"));
        let line = serde_json::to_string(&note).expect("notes serialize");
        self.with(|c| redis::cmd("RPUSH").arg(&notes).arg(&line).query::<()>(c))
    }

    fn artifact_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(&format!("artifact:{}", sha256_hex(key.as_bytes())));
        let stored: Option<Vec<u8>> = self.with(|c| redis::cmd("GET").arg(&key).query(c))?;
        // The hex sha256 of the bytes (64 characters), then the bytes.
        Ok(stored.and_then(|stored| {
            (stored.len() >= 64 && stored[..64] == *sha256_hex(&stored[64..]).as_bytes()).then(|| stored[64..].to_vec())
        }))
    }

    fn artifact_put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(&format!("artifact:{}", sha256_hex(key.as_bytes())));
        let mut stored = sha256_hex(bytes).into_bytes();
        stored.extend_from_slice(bytes);
        self.with(|c| redis::cmd("SET").arg(&key).arg(stored.as_slice()).query::<()>(c))
    }
}

//! The console's unanswered questions over real loopback sockets: customers ask the demo
//! shop what it cannot answer, in several conversations; `GET /admin/mine` mines this
//! node's conversation log into clusters (with the period's figures and where the nearest
//! neighbours were looked up); `POST /admin/mine/accept` writes a suggestion into the
//! draft (201 with the diff, the file on disk changed) and refuses what is not one (400),
//! a body too large (413), a viewer (403 with the role needed) and a browser request
//! without the CSRF token; a node without a log answers 404 `no_log`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kefu::server::ServeConfig;
use kefu::server::users::{Role, User, UsersFile, hash_password};
use serde_json::{Value, json};
use support::http::{Reply, TestServer, eventually};

const TOKEN: &str = "mine-console-token";
const PASSWORD: &str = "很长的密码 correct horse";

/// A question the demo shop has no rule, intent or FAQ entry for (its fallback answers),
/// in three wordings, each asked in its own conversation.
const UNANSWERED: [&str; 3] = ["怎么加盟做代理", "请问怎么加盟做你们的代理", "怎么加盟做代理啊"];

/// A served copy of `rules/` (the draft) with a conversation log and a users file.
struct Shop {
    dir: tempfile::TempDir,
    server: TestServer,
}

impl Shop {
    fn new(with_log: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("kefu-mine-console-").tempdir().unwrap();
        support::copy_dir(&support::root().join("rules"), &dir.path().join("rules"));
        let users = dir.path().join("users.yaml");
        add_user(&users, "li", Role::Viewer);
        add_user(&users, "wang", Role::Editor);
        let mut config = ServeConfig::new(dir.path().join("rules"));
        config.watch = false;
        config.admin_token = Some(TOKEN.into());
        config.console.users = Some(users);
        config.tickets.state_dir = Some(dir.path().join("state"));
        if with_log {
            config.conversation_log = Some(kefu::data::LogConfig::new(dir.path().join("log")));
        }
        let server = TestServer::start(config);
        Shop { dir, server }
    }

    fn draft(&self) -> PathBuf {
        self.dir.path().join("rules")
    }

    /// A request with the admin token.
    fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        let bearer = format!("Bearer {TOKEN}");
        self.server.send(
            method,
            path,
            &[("authorization", &bearer), ("content-type", "application/json")],
            body,
        )
    }

    /// Signs `name` in: the cookie and the CSRF token.
    fn login(&self, name: &str) -> (String, String) {
        let reply = self
            .server
            .post("/console/api/login", &json!({ "name": name, "password": PASSWORD }));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let cookie = reply
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        (cookie, reply.json()["csrf"].as_str().unwrap().to_string())
    }

    /// A console request as a signed-in user, with the CSRF token when given.
    fn as_user(&self, method: &str, path: &str, (cookie, csrf): (&str, Option<&str>), body: &str) -> Reply {
        let mut headers = vec![("content-type", "application/json"), ("cookie", cookie)];
        if let Some(csrf) = csrf {
            headers.push(("x-csrf-token", csrf));
        }
        self.server.send(method, path, &headers, body)
    }

    /// Asks the unanswered questions, each in its own conversation, and waits until the
    /// log has them; the mined report.
    fn log_misses(&self) -> Value {
        for (n, message) in UNANSWERED.iter().enumerate() {
            let turn = self.server.chat(&format!("mine-{n}"), message);
            assert_eq!(
                turn["source"], "fallback",
                "the demo shop cannot answer `{message}`: {turn}"
            );
        }
        let mut report = Value::Null;
        assert!(
            eventually(Duration::from_secs(20), || {
                report = self.admin("GET", "/admin/mine", "").json();
                report["turns"].as_u64() >= Some(UNANSWERED.len() as u64)
            }),
            "the log's turns are mined: {report}"
        );
        report
    }
}

fn add_user(path: &Path, name: &str, role: Role) {
    let mut file = UsersFile::load(path).unwrap().unwrap_or_default();
    file.users.push(User {
        name: name.into(),
        role,
        password_hash: hash_password(PASSWORD).unwrap(),
        created: "2026-12-06T00:00:00Z".into(),
    });
    file.save(path).unwrap();
}

/// The cluster holding `message`.
fn cluster_of<'a>(report: &'a Value, message: &str) -> Option<&'a Value> {
    report["clusters"]
        .as_array()?
        .iter()
        .find(|c| c["messages"].as_array().is_some_and(|m| m.iter().any(|m| m == message)))
}

#[test]
fn the_log_is_mined_into_clusters_over_the_period() {
    let shop = Shop::new(true);
    let report = shop.log_misses();
    assert!(report["misses"].as_u64() >= Some(3), "{report}");
    assert!(report["conversations"].as_u64() >= Some(3), "{report}");
    // The period: the last 28 days up to the end of today, in the shop's zone.
    let since = chrono::DateTime::parse_from_rfc3339(report["since"].as_str().unwrap()).unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(report["until"].as_str().unwrap()).unwrap();
    assert_eq!((until - since).num_days(), 28, "{report}");
    assert!(since < chrono::Utc::now() && chrono::Utc::now() < until);
    // The draft builds, so the nearest neighbours are the draft's.
    assert_eq!(report["nearest_from"], "draft");
    let cluster = cluster_of(&report, UNANSWERED[0]).unwrap_or_else(|| panic!("a cluster of the question: {report}"));
    assert_eq!(cluster["rank"], 1, "{report}");
    assert_eq!(cluster["conversations"], 3, "{cluster}");
    assert_eq!(cluster["this_week"], 3, "{cluster}");
    assert!(cluster["action"]["kind"].is_string(), "{cluster}");
    for message in UNANSWERED {
        assert!(
            cluster["messages"].as_array().unwrap().iter().any(|m| m == message),
            "{cluster}"
        );
    }

    // A period without turns; bad periods.
    let old = shop.admin(
        "GET",
        "/admin/mine?since=2020-01-01T00:00:00%2B08:00&until=2020-01-08T00:00:00%2B08:00",
        "",
    );
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(old.json()["turns"], 0);
    assert_eq!(old.json()["clusters"], json!([]));
    for bad in [
        "/admin/mine?since=yesterday",
        "/admin/mine?since=2026-12-06T00:00:00Z&until=2026-12-01T00:00:00Z",
        "/admin/mine?since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
    ] {
        let reply = shop.admin("GET", bad, "");
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert_eq!(reply.error_type(), "invalid_request", "{bad}");
    }
    // Reading only: a POST is not a mining.
    assert_eq!(shop.admin("POST", "/admin/mine", "{}").status, 405);
}

#[test]
fn a_viewer_reads_the_questions_and_only_an_editor_accepts_them() {
    let shop = Shop::new(true);
    let report = shop.log_misses();
    let cluster = cluster_of(&report, UNANSWERED[0]).unwrap_or_else(|| panic!("a cluster: {report}"));
    let suggestion = json!({ "action": cluster["action"], "messages": cluster["messages"] }).to_string();

    // A viewer may read, not accept.
    let (cookie, csrf) = shop.login("li");
    let read = shop.as_user("GET", "/admin/mine", (&cookie, None), "");
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["clusters"], report["clusters"]);
    let refused = shop.as_user("POST", "/admin/mine/accept", (&cookie, Some(&csrf)), &suggestion);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.error_type(), "forbidden");
    assert_eq!(refused.json()["error"]["needs"], "editor");

    // An editor's browser request needs the CSRF token.
    let (cookie, csrf) = shop.login("wang");
    let no_token = shop.as_user("POST", "/admin/mine/accept", (&cookie, None), &suggestion);
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert_eq!(no_token.error_type(), "csrf");

    // Not a suggestion: 400, nothing written.
    let before = kefu::versions::draft::read_dir(&shop.draft()).unwrap();
    for bad in [
        "",
        "{",
        r#"{"action": {"kind": "new_faq", "id": "x"}}"#,
        r#"{"action": {"kind": "delete_everything"}, "messages": ["x"]}"#,
        r#"{"action": {"kind": "new_faq", "id": "x"}, "messages": ["x"], "force": true}"#,
        r#"{"action": {"kind": "add_examples", "intent": "没有这个.意图"}, "messages": ["加盟"]}"#,
        r#"{"action": {"kind": "new_faq", "id": "加盟"}, "messages": []}"#,
    ] {
        let reply = shop.as_user("POST", "/admin/mine/accept", (&cookie, Some(&csrf)), bad);
        assert_eq!(reply.status, 400, "`{bad}`: {}", reply.body);
        assert!(
            ["invalid", "invalid_json", "invalid_request"].contains(&reply.error_type().as_str()),
            "`{bad}`: {}",
            reply.body
        );
    }
    let unknown = shop.as_user(
        "POST",
        "/admin/mine/accept",
        (&cookie, Some(&csrf)),
        r#"{"action": {"kind": "add_examples", "intent": "没有这个.意图"}, "messages": ["加盟"]}"#,
    );
    assert_eq!(unknown.error_type(), "invalid", "{}", unknown.body);
    let huge = json!({ "action": { "kind": "new_faq", "id": "x" }, "messages": ["长".repeat(40_000)] }).to_string();
    let too_large = shop.as_user("POST", "/admin/mine/accept", (&cookie, Some(&csrf)), &huge);
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    assert_eq!(
        kefu::versions::draft::read_dir(&shop.draft()).unwrap(),
        before,
        "nothing was written"
    );

    // The cluster's suggestion as it is: written into the draft, its diff answered.
    let accepted = shop.as_user("POST", "/admin/mine/accept", (&cookie, Some(&csrf)), &suggestion);
    assert_eq!(accepted.status, 201, "{}", accepted.body);
    let files = accepted.json()["files"].as_array().cloned().unwrap_or_default();
    assert!(!files.is_empty(), "{}", accepted.body);
    for file in &files {
        let path = file["path"].as_str().unwrap();
        let text = std::fs::read_to_string(shop.draft().join(path)).unwrap();
        for message in UNANSWERED {
            assert!(text.contains(message), "{path} holds `{message}`:\n{text}");
            assert!(file["diff"].as_str().unwrap().contains(message), "{file}");
        }
    }
    assert_ne!(kefu::versions::draft::read_dir(&shop.draft()).unwrap(), before);
}

#[test]
fn a_node_without_a_log_has_nothing_to_mine() {
    let shop = Shop::new(false);
    let reply = shop.admin("GET", "/admin/mine", "");
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(reply.error_type(), "no_log");
}

//! The console's sign-in and the permission of every route, over real loopback sockets:
//! signing in and out, the session cookie on the admin routes, the same 401 for an
//! unknown name and a wrong password, the limit on failures (429), roles (403 with the
//! role needed), CSRF and Origin checks, a removed user's cookie, the admin token and
//! loopback without a users file as before, the author of a publish, `kefu users add`
//! then signing in, and `/console/` (the app or, without a build, the 503 page).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kefu::server::ServeConfig;
use kefu::server::users::{Role, User, UsersFile, hash_password};
use kefu::versions::{LocalStore, VersionStore};
use serde_json::{Value, json};
use support::http::{Reply, TestServer};

const PASSWORD: &str = "很长的密码 correct horse";

/// A users file and a version store in a temporary directory, and a server on them.
struct Shop {
    dir: tempfile::TempDir,
    server: TestServer,
}

impl Shop {
    fn users(&self) -> PathBuf {
        self.dir.path().join("users.yaml")
    }

    /// Adds (or replaces) a user with the password [`PASSWORD`] unless told otherwise.
    fn add(&self, name: &str, role: Role) {
        add_user(&self.users(), name, role, PASSWORD);
    }

    /// Signs in; the cookie (`kefu_session=...`) and the CSRF token.
    fn login(&self, name: &str) -> (String, String) {
        let reply = self.login_with(name, PASSWORD);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let set = reply.header("set-cookie").expect("a cookie").to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        (cookie, reply.json()["csrf"].as_str().unwrap().to_string())
    }

    fn login_with(&self, name: &str, password: &str) -> Reply {
        self.server
            .post("/console/api/login", &json!({ "name": name, "password": password }))
    }

    /// A POST with the cookie, and the CSRF token when given, and other headers.
    fn post_as(&self, path: &str, cookie: &str, csrf: Option<&str>, extra: &[(&str, &str)], body: &Value) -> Reply {
        let mut headers = vec![("content-type", "application/json"), ("cookie", cookie)];
        if let Some(csrf) = csrf {
            headers.push(("x-csrf-token", csrf));
        }
        headers.extend_from_slice(extra);
        self.server.send("POST", path, &headers, &body.to_string())
    }

    fn get_as(&self, path: &str, cookie: &str) -> Reply {
        self.server.send("GET", path, &[("cookie", cookie)], "")
    }
}

fn add_user(path: &Path, name: &str, role: Role, password: &str) {
    let mut file = UsersFile::load(path).unwrap().unwrap_or_default();
    file.users.retain(|u| u.name != name);
    file.users.push(User {
        name: name.into(),
        role,
        password_hash: hash_password(password).unwrap(),
        created: "2026-12-06T00:00:00Z".into(),
    });
    file.save(path).unwrap();
}

/// A server with a version store (the test shop published as version 1) and the users
/// file `users.yaml` in its directory, which has `admin_token` when given and a user
/// when `with_users`.
fn shop(admin_token: Option<&str>, with_users: bool) -> Shop {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn VersionStore> = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
    let options = kefu::versions::draft::PublishOptions {
        message: "first".into(),
        author: "test".into(),
        ..Default::default()
    };
    // A copy: a publish records its version in the directory (`.kefu-base`).
    let draft = dir.path().join("draft");
    support::copy_dir(&support::root().join("tests/data/versions/shop"), &draft);
    kefu::versions::draft::publish(store.as_ref(), &draft, &options).unwrap_or_else(|e| panic!("{e}"));
    if with_users {
        add_user(&dir.path().join("users.yaml"), "admin0", Role::Admin, PASSWORD);
    }
    let mut config = ServeConfig::new(support::root().join("rules"));
    config.watch = false;
    config.versions = Some(store);
    config.admin_token = admin_token.map(str::to_owned);
    config.console.users = Some(dir.path().join("users.yaml"));
    let server = TestServer::start(config);
    Shop { dir, server }
}

/// The test shop's files as `POST /admin/publish` takes them.
fn shop_files() -> Value {
    let files = kefu::versions::draft::read_dir(&support::root().join("tests/data/versions/shop")).unwrap();
    Value::Object(
        files
            .into_iter()
            .map(|(path, bytes)| (path, Value::String(String::from_utf8(bytes).unwrap())))
            .collect(),
    )
}

#[test]
fn a_signed_in_user_reads_the_admin_routes_with_the_cookie() {
    let shop = shop(None, true);
    shop.add("li", Role::Viewer);
    let reply = shop.login_with("li", PASSWORD);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["user"], "li");
    assert_eq!(body["role"], "viewer");
    let set = reply.header("set-cookie").unwrap();
    assert!(set.starts_with("kefu_session="), "{set}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.split("; ").any(|a| a == attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "plain http from loopback: {set}");
    let (cookie, csrf) = shop.login("li");

    // Without the cookie the users file makes loopback not enough.
    let refused = shop.server.get("/admin/versions");
    assert_eq!((refused.status, refused.error_type().as_str()), (401, "unauthorized"));
    let versions = shop.get_as("/admin/versions", &cookie);
    assert_eq!(versions.status, 200, "{}", versions.body);

    let me = shop.get_as("/console/api/me", &cookie).json();
    assert_eq!(me["user"], "li");
    assert_eq!(me["csrf"], csrf.as_str());
    assert_eq!(me["can"], json!(["read"]));
    let nobody = shop.server.get("/console/api/me");
    assert_eq!((nobody.status, nobody.error_type().as_str()), (401, "unauthenticated"));

    // Signing out clears the cookie.
    let out = shop.post_as("/console/api/logout", &cookie, None, &[], &json!({}));
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));

    // Behind a proxy on this host that says https, the cookie is Secure.
    let reply = shop.server.send(
        "POST",
        "/console/api/login",
        &[("content-type", "application/json"), ("x-forwarded-proto", "https")],
        &json!({ "name": "li", "password": PASSWORD }).to_string(),
    );
    assert!(reply.header("set-cookie").unwrap().ends_with("; Secure"));
}

#[test]
fn an_unknown_name_and_a_wrong_password_get_the_same_401_and_failures_are_limited() {
    let shop = shop(None, true);
    shop.add("li", Role::Editor);
    let wrong = shop.login_with("li", "not the password");
    let unknown = shop.login_with("nobody", PASSWORD);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error_type(), "wrong_credentials");
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.header("set-cookie").is_none());

    // Five failures for a name: the sixth try is refused, the right password too.
    for _ in 0..4 {
        assert_eq!(shop.login_with("li", "still not it").status, 401);
    }
    let limited = shop.login_with("li", PASSWORD);
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.error_type(), "too_many_attempts");
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&wait), "{wait}");
    // Another name is not limited by this one's failures.
    shop.add("wang", Role::Viewer);
    assert_eq!(shop.login_with("wang", PASSWORD).status, 200);
}

#[test]
fn each_route_needs_its_role_and_writes_need_the_csrf_token_and_this_origin() {
    let shop = shop(None, true);
    shop.add("viewer", Role::Viewer);
    shop.add("pub", Role::Publisher);
    let (viewer, viewer_csrf) = shop.login("viewer");
    let (publisher, csrf) = shop.login("pub");
    let publish = json!({ "files": shop_files(), "message": "again", "author": "冒充的人" });

    let refused = shop.post_as("/admin/publish", &viewer, Some(&viewer_csrf), &[], &publish);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.error_type(), "forbidden");
    assert_eq!(refused.json()["error"]["needs"], "publisher");
    let reload = shop.post_as("/admin/reload", &publisher, Some(&csrf), &[], &json!({}));
    assert_eq!(reload.json()["error"]["needs"], "admin", "{}", reload.body);
    let takeover = shop.post_as("/v1/sessions/s1/takeover", &publisher, Some(&csrf), &[], &json!({}));
    assert_eq!(takeover.json()["error"]["needs"], "agent", "{}", takeover.body);

    let no_token = shop.post_as("/admin/publish", &publisher, None, &[], &publish);
    assert_eq!((no_token.status, no_token.error_type().as_str()), (403, "csrf"));
    let wrong_token = shop.post_as("/admin/publish", &publisher, Some(&viewer_csrf), &[], &publish);
    assert_eq!((wrong_token.status, wrong_token.error_type().as_str()), (403, "csrf"));
    let elsewhere = shop.post_as(
        "/admin/publish",
        &publisher,
        Some(&csrf),
        &[("origin", "https://evil.example")],
        &publish,
    );
    assert_eq!((elsewhere.status, elsewhere.error_type().as_str()), (403, "csrf"));

    // The signed-in user is the author, whatever the body says.
    let origin = format!("http://{}", shop.server.addr);
    let published = shop.post_as(
        "/admin/publish",
        &publisher,
        Some(&csrf),
        &[("origin", &origin)],
        &publish,
    );
    assert_eq!(published.status, 201, "{}", published.body);
    assert_eq!(published.json()["version"]["author"], "pub");
}

#[test]
fn a_removed_users_cookie_and_an_old_passwords_cookie_no_longer_work() {
    let shop = shop(None, true);
    shop.add("li", Role::Editor);
    shop.add("wang", Role::Editor);
    let (li, _) = shop.login("li");
    let (wang, _) = shop.login("wang");
    assert_eq!(shop.get_as("/admin/versions", &li).status, 200);

    let mut file = UsersFile::load(&shop.users()).unwrap().unwrap();
    file.users.retain(|u| u.name != "li");
    file.save(&shop.users()).unwrap();
    let ended = shop.get_as("/admin/versions", &li);
    assert_eq!((ended.status, ended.error_type().as_str()), (401, "unauthorized"));

    add_user(&shop.users(), "wang", Role::Editor, "a new password");
    assert_eq!(shop.get_as("/admin/versions", &wang).status, 401);
    // A forged cookie is no better.
    assert_eq!(shop.get_as("/admin/versions", "kefu_session=e30.AAAA").status, 401);
}

#[test]
fn the_admin_token_still_works_for_every_route_without_csrf() {
    let shop = shop(Some("s3cret"), true);
    let bearer = [("authorization", "Bearer s3cret")];
    assert_eq!(shop.server.send("GET", "/admin/versions", &bearer, "").status, 200);
    let reload = shop.server.send("POST", "/admin/reload", &bearer, "");
    assert_eq!(reload.status, 200, "{}", reload.body);
    let me = shop.server.send("GET", "/console/api/me", &bearer, "").json();
    assert_eq!(
        (me["role"].as_str(), me["via"].as_str()),
        (Some("admin"), Some("token"))
    );
    let wrong = shop
        .server
        .send("GET", "/admin/versions", &[("authorization", "Bearer nope")], "");
    assert_eq!(wrong.status, 401);
}

#[test]
fn loopback_without_a_users_file_keeps_working_and_stops_once_there_is_one() {
    let shop = shop(None, false);
    assert_eq!(shop.server.get("/admin/versions").status, 200);
    let me = shop.server.get("/console/api/me").json();
    assert_eq!(me["via"], "loopback");
    // A page of another site cannot use loopback's rights through the browser.
    let cross = shop
        .server
        .send("POST", "/admin/reload", &[("origin", "http://evil.example")], "");
    assert_eq!((cross.status, cross.error_type().as_str()), (403, "csrf"));
    assert_eq!(shop.server.send("POST", "/admin/reload", &[], "").status, 200);

    shop.add("li", Role::Admin);
    let refused = shop.server.get("/admin/versions");
    assert_eq!(refused.status, 401, "{}", refused.body);
    // Customers' routes never needed anyone.
    assert_eq!(shop.server.get("/healthz").status, 200);
}

#[test]
fn kefu_users_add_makes_a_user_who_can_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.yaml");
    let kefu = |args: &[&str], password: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kefu"));
        command
            .arg("users")
            .args(args)
            .arg("--users")
            .arg(&users)
            .stdin(std::process::Stdio::null())
            .env_remove("KEFU_PASSWORD");
        if let Some(password) = password {
            command.env("KEFU_PASSWORD", password);
        }
        command.output().unwrap()
    };
    let added = kefu(&["add", "小王", "--role", "publisher"], Some(PASSWORD));
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&users).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = kefu(&["add", "小王", "--role", "viewer"], Some(PASSWORD));
    assert!(!again.status.success(), "a name is added once");
    let short = kefu(&["add", "li", "--role", "viewer"], Some("short"));
    assert!(!short.status.success(), "too short a password");
    let none = kefu(&["add", "li", "--role", "viewer"], None);
    assert!(String::from_utf8_lossy(&none.stderr).contains("KEFU_PASSWORD"));
    let role = kefu(&["role", "小王", "editor"], None);
    assert!(role.status.success(), "{}", String::from_utf8_lossy(&role.stderr));
    let list = kefu(&["list"], None);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("小王") && listed.contains("editor"), "{listed}");

    let mut config = ServeConfig::new(support::root().join("rules"));
    config.watch = false;
    config.console.users = Some(users.clone());
    let server = TestServer::start(config);
    let reply = server.post("/console/api/login", &json!({ "name": "小王", "password": PASSWORD }));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["role"], "editor");

    let removed = kefu(&["remove", "小王"], None);
    assert!(removed.status.success());
    let reply = server.post("/console/api/login", &json!({ "name": "小王", "password": PASSWORD }));
    assert_eq!(reply.status, 401);
}

#[test]
fn the_console_is_served_under_console_or_says_how_to_build_it() {
    let server = TestServer::start({
        let mut config = ServeConfig::new(support::root().join("rules"));
        config.watch = false;
        config
    });
    let redirect = server.get("/console");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/console/"));
    let page = server.get("/console/some/client/route");
    assert_eq!(page.header("content-security-policy"), Some(kefu::server::assets::CSP));
    if kefu::server::assets::CONSOLE.built {
        assert_eq!(page.status, 200);
        assert_eq!(page.header("cache-control"), Some("no-cache"));
        assert!(
            page.body.contains("<html") || page.body.contains("<!doctype"),
            "{}",
            page.body
        );
    } else {
        assert_eq!(page.status, 503);
        assert!(page.body.contains("make"));
    }
    // The API under /console is not the app.
    assert_eq!(server.get("/console/api/nothing").status, 404);
}

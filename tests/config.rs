//! Where `kefu serve`'s settings come from (cli/config.rs, docs/operations.md
//! "Starting"): flags, `KEFU_*` variables, a `--config` TOML file and defaults, in that
//! order; secrets from files or the environment, never echoed; `--print-config`'s output
//! read back as a config file. Through the built binary, with variables set on the child
//! only.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::http::ServeProcess;

const ENGINE: &str = "tests/data/engine";

/// `kefu ARGS` with `env` and no other `KEFU_*` variable from the test's environment.
fn kefu(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kefu"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEFU_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("kefu runs")
}

/// `kefu serve --print-config ARGS`: its output, which must succeed.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["serve", "--print-config"];
    all.extend_from_slice(args);
    let output = kefu(&all, env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// The settings of a `--print-config` output: key → (value, source comment).
fn settings(printed: &str) -> BTreeMap<String, (String, String)> {
    printed
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, rest) = l.split_once(" = ").unwrap_or_else(|| panic!("not a setting: {l}"));
            let (value, source) = rest.rsplit_once("  # ").unwrap_or((rest, ""));
            (key.to_string(), (value.to_string(), source.to_string()))
        })
        .collect()
}

/// The keys `--print-config` shows as not set (`# key: not set`).
fn unset(printed: &str) -> Vec<String> {
    printed
        .lines()
        .filter_map(|l| l.strip_prefix("# ")?.strip_suffix(": not set"))
        .map(str::to_string)
        .collect()
}

/// A file in a fresh temporary directory (kept as long as the returned guard).
fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let (_dir, config) = file(
        "kefu.toml",
        "# both spellings of a key\nmax_in_flight = 11\nworkers = 12\ntimeout = 13\nno-watch = true\n",
    );
    let printed = print_config(
        &["--config", s(&config), "--timeout", "33"],
        &[("KEFU_WORKERS", "22"), ("KEFU_TIMEOUT", "23")],
    );
    let got = settings(&printed);
    let at = |key: &str| got[key].clone();
    assert_eq!(at("max-in-flight"), ("11".into(), "file".into()));
    assert_eq!(at("no-watch"), ("true".into(), "file".into()));
    assert_eq!(at("workers"), ("22".into(), "environment: KEFU_WORKERS".into()));
    assert_eq!(at("timeout"), ("33".into(), "command line".into()));
    assert_eq!(at("rate-limit"), ("20".into(), "default".into()));

    // The variable alone, without a file; a flag without a value takes 1/0, yes/no too.
    let got = settings(&print_config(
        &[],
        &[("KEFU_MAX_IN_FLIGHT", "7"), ("KEFU_NO_WATCH", "yes")],
    ));
    assert_eq!(got["max-in-flight"].0, "7");
    assert_eq!(got["no-watch"], ("true".into(), "environment: KEFU_NO_WATCH".into()));
    // KEFU_CONFIG names the file.
    let got = settings(&print_config(&[], &[("KEFU_CONFIG", s(&config))]));
    assert_eq!(got["workers"], ("12".into(), "file".into()));
}

#[test]
fn variables_are_checked_like_flags_and_shown_in_help() {
    let output = kefu(&["serve", "--print-config"], &[("KEFU_MAX_IN_FLIGHT", "lots")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value 'lots'"), "{stderr}");

    let help = kefu(&["serve", "--help"], &[("KEFU_REDIS", "redis://:hunter2@h/0")]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[env: KEFU_MAX_IN_FLIGHT]"), "{help}");
    assert!(help.contains("[env: KEFU_REDIS_PASSWORD_FILE]"), "{help}");
    assert!(!help.contains("hunter2"), "a variable's value is not shown: {help}");
}

#[test]
fn an_unknown_key_is_an_error_at_its_line_and_column() {
    let (_dir, config) = file("kefu.toml", "rules = \"rules\"\n\n  max-inflight = 4\n");
    let output = kefu(&["serve", "--config", s(&config)], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let at = format!("{}:3:3: error: unknown key `max-inflight`", config.display());
    assert!(stderr.contains(&at), "{stderr}");
    assert!(stderr.contains("did you mean `max-in-flight`?"), "{stderr}");
}

#[test]
fn wrong_types_and_bad_values_are_errors_at_their_line_and_column() {
    let (_dir, config) = file(
        "kefu.toml",
        concat!(
            "max-in-flight = \"many\"\n",
            "addr = \"nowhere\"\n",
            "no-watch = 1\n",
            "rate-limit = -1\n",
            "log-format = \"xml\"\n",
            "rules = [\"a\", \"b\"]\n",
            "[limits]\n",
            "timeout = 5\n",
        ),
    );
    let output = kefu(&["serve", "--config", s(&config)], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let path = config.display();
    for expected in [
        format!("{path}:1:17: error: `max-in-flight` takes an integer"),
        format!("{path}:2:8: error: invalid value 'nowhere' for '--addr <ADDR>'"),
        format!("{path}:3:12: error: `no-watch` takes true or false"),
        format!("{path}:4:14: error: invalid value '-1' for '--rate-limit <RATE_LIMIT>'"),
        format!("{path}:5:14: error: invalid value 'xml' for '--log-format <LOG_FORMAT>'"),
        format!("{path}:6:9: error: `rules` takes a string (or a number)"),
        format!("{path}:7:2: error: unknown key `limits`"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("the config file has no sections"), "{stderr}");

    // Not TOML at all.
    let (_dir, broken) = file("kefu.toml", "workers = 2\nrules = \n");
    let stderr = String::from_utf8_lossy(&kefu(&["serve", "--config", s(&broken)], &[]).stderr).into_owned();
    assert!(stderr.contains(&format!("{}:2:", broken.display())), "{stderr}");
    // No such file.
    let stderr = String::from_utf8_lossy(&kefu(&["serve", "--config", "no/such.toml"], &[]).stderr).into_owned();
    assert!(stderr.contains("cannot read the config file no/such.toml"), "{stderr}");
}

#[test]
fn secrets_are_read_from_files_and_never_printed() {
    let (_dir, password) = file("redis-password", "file-secret-1\n");
    let (_dir2, config) = file(
        "kefu.toml",
        &format!(
            "redis-password-file = {:?}\nadmin-token-file = \"/run/kefu/token\"\n",
            s(&password)
        ),
    );
    let printed = print_config(
        &[
            "--config",
            s(&config),
            "--redis",
            "redis://:inline-secret-2@127.0.0.1:6379/0",
        ],
        &[
            ("KEFU_ADMIN_TOKEN", "env-secret-3"),
            ("KEFU_TICKETS_SECRET", "env-secret-4"),
        ],
    );
    for secret in ["file-secret-1", "inline-secret-2", "env-secret-3", "env-secret-4"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    let got = settings(&printed);
    assert_eq!(got["redis"].0, "\"redis://***@127.0.0.1:6379/0\"");
    assert_eq!(got["redis-password-file"].0, format!("{:?}", s(&password)));
    assert!(printed.contains("#   KEFU_ADMIN_TOKEN = \"***\"\n"), "{printed}");
    assert!(printed.contains("#   KEFU_REDIS_PASSWORD (not set)\n"), "{printed}");

    // A secret is never a flag's value (a command line is visible in `ps`).
    let output = kefu(&["serve", "--redis-password", "x", "--print-config"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let output = kefu(&["serve", "--admin-token", "x", "--print-config"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn the_admin_token_can_come_from_a_file() {
    let (_dir, token) = file("token", "  file-token-5\n");
    let server = ServeProcess::start(&["--rules", ENGINE, "--no-watch", "--admin-token-file", s(&token)], &[]);
    assert_eq!(server.send("GET", "/admin/rules", &[], "").status, 401);
    let right = server.send("GET", "/admin/rules", &[("authorization", "Bearer file-token-5")], "");
    assert_eq!(right.status, 200, "{}", right.body);
    let (_status, log) = {
        server.signal("TERM");
        server.wait(std::time::Duration::from_secs(30))
    };
    assert!(!log.contains("file-token-5"), "{log}");

    // An empty token file is a mistake, not "no token".
    let (_dir, empty) = file("token", "\n");
    let output = kefu(&["serve", "--model", "none", "--admin-token-file", s(&empty)], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the file is empty"), "{stderr}");
}

#[test]
fn printed_configuration_reads_back_as_the_same_configuration() {
    let (_dir, config) = file(
        "kefu.toml",
        "lora = [\"a.gguf:0.5\", \"b.gguf\"]\nanswer-cache = 0\nlog-format = \"json\"\nllm-model = 7\n",
    );
    let printed = print_config(
        &[
            "--config",
            s(&config),
            "--addr",
            "0.0.0.0:9000",
            "--tickets-url",
            "http://backoffice/tickets?a=\"quoted\"",
        ],
        &[("KEFU_RULES", "/srv/kefu/规则"), ("KEFU_FIXED_THREADS", "on")],
    );
    let (_dir2, again) = file("printed.toml", &printed);
    let reread = print_config(&["--config", s(&again)], &[]);
    let values =
        |text: &str| -> BTreeMap<String, String> { settings(text).into_iter().map(|(k, (v, _))| (k, v)).collect() };
    assert_eq!(values(&printed), values(&reread), "{printed}\n---\n{reread}");
    assert_eq!(unset(&printed), unset(&reread));
    // Every value read back came from the file.
    assert!(
        settings(&reread)
            .values()
            .all(|(_, source)| source == "file" || source == "default")
    );
    assert_eq!(values(&reread)["rules"], "\"/srv/kefu/规则\"");
    assert_eq!(values(&reread)["lora"], "[\"a.gguf:0.5\", \"b.gguf\"]");
    // A flag parsed from text takes a number in the file, and prints it as text.
    assert_eq!(values(&reread)["llm-model"], "\"7\"");
}

#[test]
fn the_example_config_file_is_valid_and_names_every_setting() {
    let example = "examples/kefu.toml";
    let from_example = print_config(&["--config", example], &[]);
    let fresh = print_config(&[], &[]);
    // A setting is named by `key = value`, by `# key = value` (a default left commented
    // out) or by `# key: not set`.
    let keys = |text: &str| -> Vec<String> {
        let mut keys: Vec<String> = text
            .lines()
            .filter_map(|l| {
                let (key, _) = l.trim_start_matches("# ").split_once(" = ")?;
                key.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    .then(|| key.to_string())
            })
            .chain(unset(text))
            .collect();
        keys.sort();
        keys
    };
    let written = std::fs::read_to_string(example).unwrap();
    let (have, want) = (keys(&written), keys(&fresh));
    let missing: Vec<&String> = want.iter().filter(|k| !have.contains(k)).collect();
    let extra: Vec<&String> = have.iter().filter(|k| !want.contains(k)).collect();
    // What to paste for a missing setting: its block of `--print-config`, the default
    // commented out.
    let blocks: Vec<String> = fresh
        .split("\n\n")
        .filter(|block| {
            missing.iter().any(|k| {
                block
                    .lines()
                    .any(|l| l.starts_with(&format!("{k} = ")) || l == format!("# {k}: not set"))
            })
        })
        .map(|block| {
            block
                .lines()
                .map(|l| match l.split_once("  # default") {
                    Some((setting, _)) if !l.starts_with('#') => format!("# {setting}"),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{example} lacks {missing:?} and has unknown {extra:?}; add in the flags' order:\n\n{}",
        blocks.join("\n\n")
    );
    assert_eq!(
        settings(&from_example)["log-format"],
        ("\"json\"".into(), "file".into())
    );
}

#[test]
#[ignore = "needs redis-server"]
fn the_redis_password_comes_from_a_file_or_the_environment_redis() {
    // Characters a URL would have to escape, and a `%41` that must not turn into `A`.
    let secret = "p%41ss @:/?#+x";
    let redis = support::redis::OwnRedis::start_with(&["--requirepass", secret]);
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let (_dir, password) = file("redis-password", &format!("{secret}\n"));

    let server = ServeProcess::start(
        &[
            "--rules",
            ENGINE,
            "--no-watch",
            "--redis",
            &url,
            "--redis-password-file",
            s(&password),
        ],
        &[],
    );
    assert_eq!(server.chat("r1", "你好")["session_id"], "r1");
    server.signal("TERM");
    let (_, log) = server.wait(std::time::Duration::from_secs(30));
    assert!(!log.contains(secret), "{log}");

    let server = ServeProcess::start(
        &["--rules", ENGINE, "--no-watch", "--redis", &url],
        &[("KEFU_REDIS_PASSWORD", secret)],
    );
    assert_eq!(server.chat("r2", "你好")["session_id"], "r2");
    drop(server);

    // A wrong password fails at start, and the error shows the address without it.
    let (_dir, wrong) = file("redis-password", "wrong-secret-6");
    let output = kefu(
        &[
            "serve",
            "--model",
            "none",
            "--rules",
            ENGINE,
            "--redis",
            &url,
            "--redis-password-file",
            s(&wrong),
        ],
        &[],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("redis://***@127.0.0.1:{}/0", redis.port)),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-secret-6"), "{stderr}");

    // A password inside the URL still works, with a warning pointing at the file.
    let inline = format!("redis://:{}@127.0.0.1:{}/0", percent_encode(secret), redis.port);
    let server = ServeProcess::start(&["--rules", ENGINE, "--no-watch", "--redis", &inline], &[]);
    assert_eq!(server.chat("r3", "你好")["session_id"], "r3");
    server.signal("TERM");
    let (_, log) = server.wait(std::time::Duration::from_secs(30));
    assert!(log.contains("--redis-password-file"), "{log}");
}

/// Every byte but ASCII letters and digits as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

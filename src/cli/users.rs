//! `kefu users add|list|remove|passwd|role`: the console's users file
//! (`kefu::server::users`), `STATE_DIR/users.yaml` or `--users FILE`.
//!
//! A password comes from `--password-file FILE` (its first line), else is asked twice on
//! a terminal (without echo), else is read from KEFU_PASSWORD; never from a flag (a
//! command line is visible in `ps`). A running `kefu serve` sees every change at its next
//! request (it looks at the file's modification time).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use kefu::server::users::{Role, User, UsersFile, check_name, check_password, hash_password};

/// Which users file a command works on.
#[derive(clap::Args)]
pub struct UsersFileArgs {
    /// The users file. Default: STATE_DIR/users.yaml.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// The state directory whose users.yaml to use. Default: what `kefu serve` uses:
    /// $STATE_DIRECTORY, else $XDG_STATE_HOME/kefu, else ~/.local/state/kefu.
    #[arg(long, value_name = "DIR", conflicts_with = "users")]
    state_dir: Option<PathBuf>,
}

impl UsersFileArgs {
    fn path(&self) -> PathBuf {
        self.users.clone().unwrap_or_else(|| {
            self.state_dir
                .clone()
                .unwrap_or_else(super::serve::default_state_dir)
                .join("users.yaml")
        })
    }
}

/// `kefu users`: the console's users and their roles.
#[derive(clap::Subcommand)]
pub enum UsersCommand {
    /// Add a user who can sign in to the console (/console/).
    Add {
        /// Their name (letters, digits, `.`, `_`, `-`, `@`).
        name: String,
        /// What they may do: viewer (read), editor (edit the draft), publisher (publish),
        /// agent (answer customers), admin (everything).
        #[arg(long)]
        role: Role,
        /// A file whose first line is the password; else asked twice on a terminal, else
        /// KEFU_PASSWORD.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        file: UsersFileArgs,
    },
    /// List the users: name, role, when added.
    List {
        #[command(flatten)]
        file: UsersFileArgs,
    },
    /// Remove a user; their console sessions end at once.
    Remove {
        /// The user.
        name: String,
        #[command(flatten)]
        file: UsersFileArgs,
    },
    /// Set a user's password; their other console sessions end at once.
    Passwd {
        /// The user.
        name: String,
        /// A file whose first line is the password; else asked twice on a terminal, else
        /// KEFU_PASSWORD.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        file: UsersFileArgs,
    },
    /// Change a user's role (counts at their next request).
    Role {
        /// The user.
        name: String,
        /// The new role.
        role: Role,
        #[command(flatten)]
        file: UsersFileArgs,
    },
}

/// Runs a `kefu users` command.
pub fn run(command: UsersCommand) -> Result<ExitCode> {
    match command {
        UsersCommand::Add {
            name,
            role,
            password_file,
            file,
        } => {
            check_name(&name).map_err(anyhow::Error::msg)?;
            let path = file.path();
            let mut users = load(&path)?;
            if users.find(&name).is_some() {
                bail!(
                    "{}: `{name}` is already a user (kefu users passwd/role change them)",
                    path.display()
                );
            }
            let password = password(password_file.as_ref())?;
            users.users.push(User {
                name: name.clone(),
                role,
                password_hash: hash_password(&password).map_err(anyhow::Error::msg)?,
                created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            users.save(&path)?;
            eprintln!("added `{name}` ({}) to {}", role.name(), path.display());
        }
        UsersCommand::List { file } => {
            let path = file.path();
            let users = load(&path)?;
            if users.users.is_empty() {
                eprintln!("{}: no users (kefu users add NAME --role ROLE)", path.display());
            }
            let width = users.users.iter().map(|u| u.name.chars().count()).max().unwrap_or(0);
            for user in &users.users {
                println!(
                    "{}{}  {:<9}  {}",
                    user.name,
                    " ".repeat(width - user.name.chars().count()),
                    user.role.name(),
                    user.created
                );
            }
        }
        UsersCommand::Remove { name, file } => {
            let path = file.path();
            let mut users = load(&path)?;
            let before = users.users.len();
            users.users.retain(|u| u.name != name);
            if users.users.len() == before {
                bail!("{}: no user `{name}`", path.display());
            }
            users.save(&path)?;
            eprintln!("removed `{name}` from {}", path.display());
        }
        UsersCommand::Passwd {
            name,
            password_file,
            file,
        } => {
            let path = file.path();
            let mut users = load(&path)?;
            if users.find(&name).is_none() {
                bail!("{}: no user `{name}`", path.display());
            }
            let hash = hash_password(&password(password_file.as_ref())?).map_err(anyhow::Error::msg)?;
            if let Some(user) = users.users.iter_mut().find(|u| u.name == name) {
                user.password_hash = hash;
            }
            users.save(&path)?;
            eprintln!("new password for `{name}` in {}", path.display());
        }
        UsersCommand::Role { name, role, file } => {
            let path = file.path();
            let mut users = load(&path)?;
            let Some(user) = users.users.iter_mut().find(|u| u.name == name) else {
                bail!("{}: no user `{name}`", path.display());
            };
            user.role = role;
            users.save(&path)?;
            eprintln!("`{name}` is now {} in {}", role.name(), path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The users file at `path`, empty when there is none yet.
fn load(path: &std::path::Path) -> Result<UsersFile> {
    Ok(UsersFile::load(path)?.unwrap_or_default())
}

/// The new password: the first line of `file`, else asked twice on a terminal, else
/// KEFU_PASSWORD.
fn password(file: Option<&PathBuf>) -> Result<String> {
    let password = if let Some(file) = file {
        let text = std::fs::read_to_string(file).with_context(|| format!("--password-file {}", file.display()))?;
        text.lines().next().unwrap_or("").to_owned()
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ").context("reading the password")?;
        let again = rpassword::prompt_password("again: ").context("reading the password")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    } else {
        match std::env::var("KEFU_PASSWORD") {
            Ok(password) => password,
            Err(_) => bail!("no password: give --password-file FILE, run on a terminal, or set KEFU_PASSWORD"),
        }
    };
    check_password(&password).map_err(anyhow::Error::msg)?;
    Ok(password)
}

//! The `kefu` command line: parses arguments and calls the command's module in `cli/`,
//! which calls the library.

use std::process::ExitCode;

mod cli;

use cli::{Cli, Command};

/// mimalloc instead of glibc malloc: a turn allocates many small strings on every worker
/// thread, and glibc's arena locks cost a fifth of the CPU under load (benches/load.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Flags, then KEFU_* variables, then `--config FILE`, then defaults (cli/config.rs).
    let cli = cli::config::parse::<Cli>();
    let result = match cli.command {
        Command::Check { dir, color } => Ok(cli::check::run(&dir, color)),
        Command::Chat {
            rules,
            user,
            context,
            trace,
            model,
            conversation_log,
        } => cli::chat::run(&rules, user, context, trace, &model, conversation_log).map(|()| ExitCode::SUCCESS),
        Command::Test { dir, verbose } => cli::test::run(&dir, verbose),
        Command::Eval {
            data,
            rules,
            json,
            closed_set,
            mistakes,
        } => cli::eval::run(&data, &rules, json, closed_set, mistakes),
        Command::Safety { rules, reply, text } => Ok(cli::safety::run(&rules, reply, text)),
        Command::Serve(args) => cli::serve::run(*args).map(|()| ExitCode::SUCCESS),
        Command::Generate(args) => cli::generate::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Data(command) => cli::data::run(command),
        Command::Report(args) => cli::report::run(args),
        Command::Publish(args) => cli::versions::publish(args),
        Command::Versions(args) => cli::versions::list(args),
        Command::Show(args) => cli::versions::show(args),
        Command::Diff(args) => cli::versions::diff(args),
        Command::Rollback(args) => cli::versions::rollback(args),
        Command::Promote(args) => cli::versions::promote(args),
        Command::Replay(args) => cli::replay::run(args),
        Command::Users(command) => cli::users::run(command),
        Command::Mine(args) => cli::mine::run(args),
        Command::Kb(command) => cli::kb::run(command),
    };
    result.unwrap_or_else(|e| {
        eprintln!("kefu: {e:#}");
        ExitCode::FAILURE
    })
}

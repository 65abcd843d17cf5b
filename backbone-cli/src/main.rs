//! `backbone`: see and operate what flows through backbone's Redis streams — streams, groups,
//! pending entries, single events, dead letters, trimming — with the connection settings every
//! backbone program uses (`REDIS_URL`, `REDIS_CLUSTER`, `REDIS_TLS_*`, or the flags), and
//! without the contracts' Rust types. `backbone --help` lists the commands; exit codes are in
//! [`error::Failure`].

mod args;
mod commands;
mod error;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let out = output::Output::new(cli.global.json);
    match commands::run(&cli, &out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("backbone: {failure}");
            ExitCode::from(failure.code())
        }
    }
}

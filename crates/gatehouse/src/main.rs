//! The `gatehouse` binary: parses the command line and hands off to
//! `gatehouse-server`. This is the only place `anyhow` is used.

mod access;
mod backfill;
mod cli;
mod demo;
mod events;
mod prune;
mod send;
mod tail;

use anyhow::Result;
use clap::Parser;

/// mimalloc instead of glibc's malloc: every ingested event is allocated on
/// a tokio worker and freed on the SQLite writer thread, and hyper allocates
/// an 8 KiB read buffer per request; glibc serves both through its locked
/// arena path (`malloc_consolidate`, `_int_free`: 15 % of the workers' and
/// 8 % of the writer's time, profiled), mimalloc through per-thread pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: cli::Cli) -> Result<()> {
    init_tracing(&args.log);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(cli::dispatch(args))
}

fn init_tracing(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

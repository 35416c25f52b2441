//! Integration tests: one binary, real `gatehouse serve` processes, real
//! sockets, a real SQLite file and a real PostgreSQL.
//!
//! PostgreSQL tests read `GATEHOUSE_TEST_POSTGRES_URL`; without it they print
//! a loud SKIPPED line and pass, and `.ci/run` always sets it.

#[macro_use]
mod harness;

mod api;
mod cli;
mod console;
mod crash;
mod deliver;
mod enrich;
mod fixtures;
mod ingest;
mod recovery_backfill;
mod recovery_poll;
mod recovery_retention;
mod tls;

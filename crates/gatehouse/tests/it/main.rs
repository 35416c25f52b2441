//! Integration tests: one binary, real `gatehouse serve` processes, real
//! sockets, a real SQLite file and a real PostgreSQL.
//!
//! PostgreSQL tests read `GATEHOUSE_TEST_POSTGRES_URL`; without it they print
//! a loud SKIPPED line and pass, and `.ci/run` always sets it.

#[macro_use]
mod harness;

mod cli;
mod crash;
mod deliver;
mod fixtures;
mod ingest;

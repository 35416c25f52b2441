//! The `exec` destination: runs a program with arguments (never through a
//! shell, so nothing in the payload can reach argv), the body on stdin and
//! the event's metadata in `GATEHOUSE_*` environment variables. Exit 0 is
//! success; the first [`EXCERPT_LIMIT`] bytes of stdout and stderr (as they
//! arrive) are kept, the rest drained and dropped.
//!
//! On timeout the command is killed (and it is killed too if the attempt
//! is dropped, e.g. at shutdown). Processes it started in the background
//! are not: they are the command's business.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};
use tokio::time::Instant;

use super::{Outbound, Report, EXCERPT_LIMIT};
use crate::config::{ConfigIssue, DestinationConfig};
use crate::outcome::AttemptResult;

/// After the command exits, how long output still in the pipes is read
/// (a background child may hold them open for ever).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// One exec destination.
#[derive(Debug)]
pub struct ExecDestination {
    program: String,
    args: Vec<String>,
}

impl ExecDestination {
    /// Builds the destination from checked config.
    pub fn build(config: &DestinationConfig) -> Result<Self, ConfigIssue> {
        let (program, args) = config
            .command
            .split_first()
            .ok_or_else(|| ConfigIssue::new("command", "an exec destination needs a command"))?;
        Ok(Self {
            program: program.clone(),
            args: args.to_vec(),
        })
    }

    fn command(&self, outbound: &Outbound<'_>) -> Command {
        let event = &outbound.event.summary;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("GATEHOUSE_EVENT_ID", event.id.to_string())
            .env("GATEHOUSE_DELIVERY_ID", outbound.delivery_id.to_string())
            .env("GATEHOUSE_SOURCE", &event.source)
            .env("GATEHOUSE_ROUTE", outbound.route)
            .env("GATEHOUSE_ATTEMPT", outbound.attempt.to_string());
        // Unset rather than empty when the event has none, and never
        // inherited from gatehouse's own environment.
        for (name, value) in [
            ("GATEHOUSE_EVENT_TYPE", &event.event_type),
            ("GATEHOUSE_PROVIDER_EVENT_ID", &event.provider_event_id),
        ] {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        // Its own process group, so a timeout ends whatever it started too
        // (a shell script's `sleep`, a pipeline), not only the command.
        #[cfg(unix)]
        command.process_group(0);
        command
    }

    /// Runs the command once within `timeout`.
    pub async fn send(&self, outbound: &Outbound<'_>, timeout: Duration) -> Report {
        let mut child = match self.command(outbound).spawn() {
            Ok(child) => child,
            Err(error) => {
                return Report::bare(AttemptResult::SpawnFailed(format!("{}: {error}", self.program)));
            }
        };
        let mut deadline = Instant::now() + timeout;
        let mut output = Vec::with_capacity(1024);
        let (timed_out, status) = {
            let stdin = write_stdin(child.stdin.take(), outbound.body.clone());
            let reader = read_output(child.stdout.take(), child.stderr.take(), &mut output);
            tokio::pin!(stdin, reader);
            let (mut stdin_done, mut output_done, mut status) = (false, false, None);
            let timed_out = loop {
                if status.is_some() && output_done {
                    break false;
                }
                tokio::select! {
                    () = &mut stdin, if !stdin_done => stdin_done = true,
                    () = &mut reader, if !output_done => output_done = true,
                    exited = child.wait(), if status.is_none() => {
                        status = Some(exited);
                        deadline = deadline.min(Instant::now() + OUTPUT_GRACE);
                    }
                    () = tokio::time::sleep_until(deadline) => break status.is_none(),
                }
            };
            (timed_out, status)
        };
        if timed_out {
            kill_group(&child);
            // start_kill fails only if the child was already reaped.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        output.truncate(EXCERPT_LIMIT);
        let excerpt = Bytes::from(output);
        let (result, status_code) = match status {
            _ if timed_out => (AttemptResult::ExecTimedOut(timeout), None),
            Some(Ok(status)) => match status.code() {
                Some(code) => (AttemptResult::Exited(code), Some(code)),
                None => (AttemptResult::Signalled(signal_of(&status)), None),
            },
            Some(Err(error)) => (
                AttemptResult::SpawnFailed(format!("cannot wait for the command: {error}")),
                None,
            ),
            // The loop ends with a status unless it timed out.
            None => (AttemptResult::ExecTimedOut(timeout), None),
        };
        Report {
            result,
            status_code,
            headers: Vec::new(),
            excerpt,
        }
    }
}

/// Kills the command's process group (the command and everything it
/// started that did not leave the group).
#[cfg(unix)]
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; the
        // group is the child's own (process_group(0)), so nothing else.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_child: &tokio::process::Child) {}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

#[cfg(not(unix))]
fn signal_of(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}

/// Writes the body and closes stdin. A command that exits without reading
/// it is fine (the broken pipe is ignored).
async fn write_stdin(stdin: Option<ChildStdin>, body: Bytes) {
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    }
}

/// Reads stdout and stderr to their end, keeping the first
/// [`EXCERPT_LIMIT`] bytes of both (interleaved as they arrive) in `kept`.
async fn read_output(
    mut stdout: Option<impl AsyncRead + Unpin>,
    mut stderr: Option<impl AsyncRead + Unpin>,
    kept: &mut Vec<u8>,
) {
    let mut out_buffer = [0u8; 4096];
    let mut err_buffer = [0u8; 4096];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buffer) => keep(read, &mut stdout, &out_buffer, kept),
            read = read_some(&mut stderr, &mut err_buffer) => keep(read, &mut stderr, &err_buffer, kept),
        }
    }
}

/// Reads from `pipe`, or waits for ever once it is closed.
async fn read_some(pipe: &mut Option<impl AsyncRead + Unpin>, buffer: &mut [u8]) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buffer).await,
        None => std::future::pending().await,
    }
}

fn keep<P>(read: std::io::Result<usize>, pipe: &mut Option<P>, buffer: &[u8], kept: &mut Vec<u8>) {
    match read {
        Ok(0) | Err(_) => *pipe = None,
        Ok(n) => {
            let room = EXCERPT_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&buffer[..n.min(room)]);
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use gatehouse_core::{DeliveryId, Disposition, EventId, EventSummary, StoredEvent, UnixMillis};

    use super::*;

    /// A temporary directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("gatehouse-exec-{}", EventId::new()));
            std::fs::create_dir_all(&dir).expect("dir");
            Self(dir)
        }

        /// An executable `/bin/sh` script named `name`.
        fn script(&self, name: &str, body: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn event(event_type: Option<&str>) -> StoredEvent {
        StoredEvent {
            summary: EventSummary {
                id: EventId::new(),
                source: "github".into(),
                received_at: UnixMillis::now(),
                dedup_key: "d-1".into(),
                provider_event_id: Some("d-1".into()),
                event_type: event_type.map(str::to_string),
                disposition: Disposition::Accepted,
                duplicates: 0,
                last_duplicate_at: None,
                origin: gatehouse_core::EventOrigin::Live,
                pruned_at: None,
            },
            headers: Vec::new(),
            body: Bytes::from_static(b"{\"action\":\"opened\",\"x\":\"$(rm -rf /)\"}"),
            verification: "github".into(),
            remote_addr: None,
        }
    }

    fn destination(program: &Path, args: &[&str]) -> ExecDestination {
        let mut command = vec![program.display().to_string()];
        command.extend(args.iter().map(|a| a.to_string()));
        ExecDestination {
            program: command[0].clone(),
            args: command[1..].to_vec(),
        }
    }

    async fn run(destination: &ExecDestination, event: &StoredEvent, timeout: Duration) -> Report {
        let outbound = Outbound {
            event,
            delivery_id: DeliveryId::new(),
            route: "to-script",
            attempt: 3,
            body: event.body.clone(),
            transformed: false,
        };
        destination.send(&outbound, timeout).await
    }

    #[tokio::test]
    async fn the_command_gets_the_body_on_stdin_and_metadata_in_its_environment() {
        let scratch = Scratch::new();
        let out = scratch.0.join("out");
        let script = scratch.script(
            "record",
            "cat > \"$1\"\nenv | grep '^GATEHOUSE_' | sort > \"$1.env\"\necho \"got $2\"\necho warning >&2",
        );
        let destination = destination(&script, &[out.to_str().expect("path"), "arg with spaces; $(nothing)"]);
        let event = event(Some("pull_request"));
        std::env::set_var("GATEHOUSE_PROVIDER_EVENT_ID", "inherited-must-not-leak");
        let report = run(&destination, &event, Duration::from_secs(10)).await;
        assert_eq!(report.result, AttemptResult::Exited(0));
        assert_eq!(report.status_code, Some(0));
        let excerpt = String::from_utf8_lossy(&report.excerpt).into_owned();
        assert!(excerpt.contains("got arg with spaces; $(nothing)"), "{excerpt}");
        assert!(excerpt.contains("warning"), "stderr is kept too: {excerpt}");
        assert_eq!(std::fs::read(&out).expect("stdin copy"), event.body);
        let env = std::fs::read_to_string(scratch.0.join("out.env")).expect("env");
        assert!(
            env.contains(&format!("GATEHOUSE_EVENT_ID={}\n", event.summary.id)),
            "{env}"
        );
        assert!(env.contains("GATEHOUSE_DELIVERY_ID=dlv_"), "{env}");
        assert!(env.contains("GATEHOUSE_SOURCE=github\n"), "{env}");
        assert!(env.contains("GATEHOUSE_ROUTE=to-script\n"), "{env}");
        assert!(env.contains("GATEHOUSE_EVENT_TYPE=pull_request\n"), "{env}");
        assert!(env.contains("GATEHOUSE_PROVIDER_EVENT_ID=d-1\n"), "{env}");
        assert!(env.contains("GATEHOUSE_ATTEMPT=3\n"), "{env}");

        let untyped = event_without_ids();
        run(&destination, &untyped, Duration::from_secs(10)).await;
        let env = std::fs::read_to_string(scratch.0.join("out.env")).expect("env");
        assert!(!env.contains("GATEHOUSE_EVENT_TYPE"), "{env}");
        assert!(
            !env.contains("GATEHOUSE_PROVIDER_EVENT_ID"),
            "unset, not inherited: {env}"
        );
    }

    fn event_without_ids() -> StoredEvent {
        let mut event = event(None);
        event.summary.provider_event_id = None;
        event
    }

    #[tokio::test]
    async fn exit_codes_and_missing_programs() {
        let scratch = Scratch::new();
        let failing = scratch.script("fail", "cat > /dev/null\necho 'no database' >&2\nexit 3");
        let report = run(&destination(&failing, &[]), &event(None), Duration::from_secs(10)).await;
        assert_eq!(report.result, AttemptResult::Exited(3));
        assert_eq!(report.status_code, Some(3));
        assert_eq!(report.excerpt, Bytes::from_static(b"no database\n"));

        let ignores_stdin = scratch.script("ignore", "exit 0");
        let report = run(&destination(&ignores_stdin, &[]), &event(None), Duration::from_secs(10)).await;
        assert_eq!(report.result, AttemptResult::Exited(0), "not reading stdin is fine");

        let missing = scratch.0.join("does-not-exist");
        let report = run(&destination(&missing, &[]), &event(None), Duration::from_secs(10)).await;
        assert!(
            matches!(&report.result, AttemptResult::SpawnFailed(m) if m.contains("does-not-exist")),
            "{:?}",
            report.result
        );
    }

    #[tokio::test]
    async fn a_slow_command_is_killed_at_the_timeout() {
        let scratch = Scratch::new();
        let slow = scratch.script("slow", "echo started\nexec sleep 30");
        let started = std::time::Instant::now();
        let report = run(&destination(&slow, &[]), &event(None), Duration::from_millis(300)).await;
        assert_eq!(report.result, AttemptResult::ExecTimedOut(Duration::from_millis(300)));
        assert_eq!(report.excerpt, Bytes::from_static(b"started\n"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_timeout_kills_what_the_command_started_too() {
        let scratch = Scratch::new();
        let pid_file = scratch.0.join("grandchild.pid");
        let script = scratch.script("spawns", "sleep 30 &\necho $! > \"$1\"\nwait");
        let report = run(
            &destination(&script, &[pid_file.to_str().expect("path")]),
            &event(None),
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(report.result, AttemptResult::ExecTimedOut(Duration::from_millis(500)));
        let pid = std::fs::read_to_string(&pid_file).expect("pid").trim().to_string();
        // Dead, or a zombie waiting for init to reap it: no longer running.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|status| !status.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(), "the background sleep {pid} outlived the timed-out command");
    }

    #[tokio::test]
    async fn long_output_is_cut_and_drained() {
        let scratch = Scratch::new();
        let chatty = scratch.script("chatty", "head -c 1000000 /dev/zero | tr '\\0' 'y'\nexit 0");
        let report = run(&destination(&chatty, &[]), &event(None), Duration::from_secs(10)).await;
        assert_eq!(
            report.result,
            AttemptResult::Exited(0),
            "the command was not blocked on a full pipe"
        );
        assert_eq!(report.excerpt.len(), EXCERPT_LIMIT);
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipes_does_not_stall_the_attempt() {
        let scratch = Scratch::new();
        let forks = scratch.script("forks", "sleep 30 &\necho done");
        let started = std::time::Instant::now();
        let report = run(&destination(&forks, &[]), &event(None), Duration::from_secs(10)).await;
        assert_eq!(report.result, AttemptResult::Exited(0));
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }
}

//! The binary's edges: `check-config` errors name the file, line and key;
//! `serve` with no config starts a working demo; SIGTERM shuts down cleanly.

use std::process::{Command, Stdio};

use crate::harness::*;

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, text).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check-config"])
        .arg(&path)
        .env_remove("GATEHOUSE_STORAGE_URL")
        .output()
        .expect("run check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.success(),
        text.replace(&path.display().to_string(), "FILE"),
    )
}

#[test]
fn check_config_accepts_a_valid_file() {
    let (ok, output) = check_config(&format!("[storage]\nurl = \"sqlite://x.db\"\n{}", standard_sources()));
    assert!(ok, "{output}");
    assert!(output.contains("ok (2 sources"), "{output}");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let (ok, output) = check_config("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"typo\"\n");
    assert!(!ok);
    assert!(output.contains("FILE:3:"), "{output}");
    assert!(output.contains("lisen"), "{output}");
}

#[test]
fn missing_secret_variable_names_file_line_and_key() {
    let text = "[[sources]]\nname = \"stripe\"\nprovider = \"stripe\"\nsecrets = [\n  \"whsec_a\",\n  \"env:GATEHOUSE_IT_UNSET_VARIABLE\",\n]\n";
    let (ok, output) = check_config(text);
    assert!(!ok);
    assert!(output.contains("FILE:6: sources[0].secrets[1]"), "{output}");
    assert!(output.contains("GATEHOUSE_IT_UNSET_VARIABLE is not set"), "{output}");
}

#[test]
fn provider_errors_point_at_the_key() {
    let text = "[[sources]]\nname = \"a\"\nprovider = \"stripe\"\nsecrets = [\"x\"]\n\n[[sources]]\nname = \"b\"\nprovider = \"strype\"\n";
    let (ok, output) = check_config(text);
    assert!(!ok);
    assert!(output.contains("FILE:8: sources[1].provider"), "{output}");
    assert!(output.contains("expected one of"), "{output}");

    let text = "[[sources]]\nname = \"shop\"\nprovider = \"hmac\"\nsecrets = [\"x\"]\nverify = { header = \"X-Sig\", algorithm = \"md5\" }\n";
    let (ok, output) = check_config(text);
    assert!(!ok);
    assert!(output.contains("FILE:5: sources[0].verify.algorithm"), "{output}");
}

#[test]
fn bad_values_are_refused_with_what_was_expected() {
    for (text, expected) in [
        ("[server]\nlisten = \"nowhere\"\n", "FILE:2: server.listen"),
        ("[storage]\nurl = \"mysql://x\"\n", "FILE:2: storage.url"),
        (
            "[[destinations]]\nname = \"d\"\ntype = \"http\"\nurl = \"https://example.com/hook\"\nca_cert = \"/nonexistent/ca.pem\"\n",
            "FILE:5: destinations[0].ca_cert: cannot read certificates from /nonexistent/ca.pem",
        ),
        (
            "[server]\ntls = { cert = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }\n",
            "FILE:2: server.tls.cert: cannot read certificates from /nonexistent/cert.pem",
        ),
        (
            "[[sources]]\nname = \"a\"\nprovider = \"stripe\"\nsecrets = [\"x\"]\nrate_limit = 0\n",
            "FILE:5: sources[0].rate_limit: must be at least 1",
        ),
        (
            "[storage]\nurl = \"postgres://gh@db/gh?sslmode=verify-ful\"\n",
            "FILE:2: storage.url: invalid sslmode `verify-ful`",
        ),
        (
            "[storage]\nurl = \"postgres://gh@db/gh?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem\"\n",
            "cannot read sslrootcert /nonexistent/ca.pem",
        ),
        ("[server]\nbody_limit = \"lots\"\n", "FILE:2:"),
        (
            "[[sources]]\nname = \"a b\"\nprovider = \"none\"\nverify = { insecure = true }\n",
            "FILE:2: sources[0].name",
        ),
        ("[[sources]]\nname = \"a\"\nprovider = \"none\"\n", "sources[0].verify.insecure"),
        (
            "[[sources]]\nname = \"a\"\nprovider = \"stripe\"\nsecrets = [\"x\"]\n[[sources]]\nname = \"a\"\nprovider = \"stripe\"\nsecrets = [\"x\"]\n",
            "defined twice",
        ),
    ] {
        let (ok, output) = check_config(text);
        assert!(!ok, "{text}");
        assert!(output.contains(expected), "expected {expected:?} in: {output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_config_starts_the_demo() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("serve")
        .current_dir(dir.path())
        .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_LOG", "warn")
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_STORAGE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stdout).lines();
        let banner = reader
            .by_ref()
            .map_while(Result::ok)
            .take_while(|line| !line.contains("curl -i"))
            .collect();
        // Keep draining: the banner goes on after the curl line, and a
        // closed pipe would make the server's next println! panic.
        std::thread::spawn(move || for _ in reader {});
        banner
    })
    .await
    .expect("read banner");
    let address = lines
        .iter()
        .find_map(|l| l.strip_prefix("gatehouse listening on http://"))
        .expect("listening line")
        .to_string();
    let secret = lines
        .iter()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("stripe")).then(|| words.nth(1).map(str::to_string))?
        })
        .expect("stripe secret printed");
    assert!(dir.path().join("gatehouse-data/demo.toml").exists());

    let body = stripe_body("evt_demo", "payment_intent.succeeded");
    let answer = send(
        "POST",
        &format!("http://{address}/in/stripe"),
        &[("stripe-signature", stripe_signature(&secret, &body))],
        body,
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(dir.path().join("gatehouse-data/gatehouse.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_committing_and_exits_zero() {
    let db = Database::fresh(Backend::Sqlite, "sigterm").await.expect("sqlite");
    let mut server = Server::start(&db, &standard_sources());
    assert_eq!(
        send_stripe(&server, "evt_before_term", "payment_intent.succeeded")
            .await
            .status,
        200
    );
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    let exit = server.child.wait().expect("wait");
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
    let store = db.open_store().await;
    assert!(store
        .event_by_dedup_key("stripe", "evt_before_term")
        .await
        .expect("read")
        .is_some());
}

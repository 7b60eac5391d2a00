//! The README's commands, run as a newcomer runs them: the run command exactly
//! as written (through `scripts/run`, which installs what is missing and
//! builds), then each line of the second terminal with the `ie` alias.
//!
//! Two things differ from a newcomer's machine, both through the environment
//! (which wins over `--env-file`): the listeners are on free ports and the data
//! in a temporary directory, and Twilio's REST API is a local fake, so the
//! `send` line sends no traffic off this machine.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::fake_twilio::FakeTwilio;

/// A first build of the host (wasmtime included) on two cores.
const FIRST_BUILD: Duration = Duration::from_secs(20 * 60);
/// One README line once the binary is built.
const ONE_LINE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The fenced code blocks of the README's section `heading`.
fn code_blocks(readme: &str, heading: &str) -> Vec<Vec<String>> {
    let section = readme.split("\n## ").find(|s| s.starts_with(heading)).unwrap_or_else(|| panic!("no {heading}"));
    section.split("```").skip(1).step_by(2).map(|block| block.lines().map(str::to_owned).collect()).collect()
}

/// The lines of a block that are commands.
fn commands(block: &[String]) -> Vec<String> {
    block.iter().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()
}

/// A bash script in the repository root, its own process group, with `vars`.
fn spawn_bash(script: &str, vars: &[(&str, String)], log: &Path) -> Child {
    let mut command = Command::new("bash");
    command.arg("-c").arg(script).current_dir(repo()).env_clear().process_group(0);
    for name in ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "CARGO_TARGET_DIR", "RUSTUP_TOOLCHAIN"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    let stderr = std::fs::File::create(log).unwrap();
    command.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap()
}

/// Signals the child's whole process group (`--`: procps reads `-PID` after
/// it as a group, not as an option).
fn kill_group(child: &mut Child, signal: &str) {
    let _ = Command::new("kill").args(["-s", signal, "--"]).arg(format!("-{}", child.id())).status();
}

/// Runs one README line; returns its stdout once it exits, or once `done`
/// holds for what it printed (a `tail` that follows is then stopped).
async fn run_line(script: &str, vars: &[(&str, String)], log: &Path, done: impl Fn(&str) -> bool) -> String {
    let mut child = spawn_bash(script, vars, log);
    let mut stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut printed = Vec::new();
    loop {
        while let Ok(chunk) = receiver.try_recv() {
            printed.extend(chunk);
        }
        let text = String::from_utf8_lossy(&printed).into_owned();
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(50));
            while let Ok(chunk) = receiver.try_recv() {
                printed.extend(chunk);
            }
            let text = String::from_utf8_lossy(&printed).into_owned();
            let errors = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success() || done(&text), "`{script}` failed ({status}):\n{text}\n{errors}");
            return text;
        }
        if done(&text) {
            kill_group(&mut child, "TERM");
            let _ = child.wait();
            return text;
        }
        if started.elapsed() > ONE_LINE {
            kill_group(&mut child, "KILL");
            let errors = std::fs::read_to_string(log).unwrap_or_default();
            panic!("`{script}` did not finish in {ONE_LINE:?}:\n{text}\n{errors}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Free loopback ports for both listeners and the data in `dir`: the
/// environment that keeps a README command off shared ports and files.
fn local_run(dir: &Path) -> (SocketAddr, SocketAddr, Vec<(&'static str, String)>) {
    let (public, admin) = (harness::free_addr(), harness::free_addr());
    let vars = vec![
        ("LISTEN_ADDR", public.to_string()),
        ("ADMIN_ADDR", admin.to_string()),
        ("DATA_DIR", dir.join("data").display().to_string()),
    ];
    (public, admin, vars)
}

/// The second terminal's line starting with `prefix`, as a script that first
/// defines the README's `ie` alias (its first line).
fn alias_line(second_terminal: &[String], prefix: &str) -> String {
    let alias = &second_terminal[0];
    assert!(alias.starts_with("alias ie="), "{alias}");
    let found = second_terminal.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}`"));
    format!("shopt -s expand_aliases\n{alias}\n{found}\n")
}

/// SIGTERM to the run command's process group; waits (bounded) for it to end.
async fn stop_serving(server: &mut Child) {
    kill_group(server, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the README's run command; returns once both listeners answer (the
/// first build may take a while).
async fn start_serving(
    command: &str,
    vars: &[(&str, String)],
    log: &Path,
    public: SocketAddr,
    admin: SocketAddr,
) -> Child {
    let mut server = spawn_bash(command, vars, log);
    let started = Instant::now();
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("`{command}` exited ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(started.elapsed() < FIRST_BUILD, "`{command}` did not listen within {FIRST_BUILD:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    harness::wait_for_listener(public).await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_commands_work_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = code_blocks(&readme, "Run it");
    let run = commands(&blocks[0]);
    assert_eq!(run.len(), 1, "one run command: {run:?}");
    let second_terminal = commands(&blocks[1]);

    let fake = FakeTwilio::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (public, admin, mut vars) = local_run(dir.path());
    vars.extend([("TWILIO_API_BASE_URL", fake.base_url()), ("TWILIO_CONVERSATIONS_BASE_URL", fake.base_url())]);

    let mut server = start_serving(&run[0], &vars, &dir.path().join("serve.log"), public, admin).await;

    let line = |prefix: &str| alias_line(&second_terminal, prefix);
    let log = dir.path().join("line.log");

    let simulated = run_line(&line("ie simulate sms"), &vars, &log, |_| false).await;
    assert!(simulated.starts_with("200"), "{simulated}");
    let envelope =
        run_line(&line("ie tail --topic ingress.twilio.messaging"), &vars, &log, |out| out.contains('\n')).await;
    let envelope: serde_json::Value = serde_json::from_str(envelope.lines().next().unwrap()).unwrap();
    assert_eq!((envelope["body"].as_str(), envelope["from"].as_str()), (Some("hello"), Some("+14155550100")));

    let id = run_line(&line("ie send"), &vars, &log, |_| false).await.trim().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let status = run_line(&line("ie tail --topic events.twilio.status"), &vars, &log, |out| out.contains(&id)).await;
    assert!(status.contains("\"queued\""), "{status}");
    assert_eq!(fake.received().len(), 1, "the send reached the fake Twilio once");

    let token = run_line(&line("ie token"), &vars, &log, |_| false).await;
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let reloaded = run_line(&line("ie reload"), &vars, &log, |_| false).await;
    assert!(reloaded.contains("unchanged"), "{reloaded}");
    let curl = line("curl -s").replace("127.0.0.1:9090", &admin.to_string());
    let metrics = run_line(&curl, &vars, &log, |_| false).await;
    assert!(metrics.contains("ingress_http_requests_total"), "{metrics}");

    stop_serving(&mut server).await;
}

/// The README's NATS command, as written but for the server's address (a
/// real `nats-server -js` on a free port stands for 127.0.0.1:4222); then a
/// simulated webhook through the `ie` alias, and `tail` reading it from NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_nats_command_works_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let run = commands(&code_blocks(&readme, "Run it on NATS")[0]);
    assert_eq!(run.len(), 1, "one run command: {run:?}");
    let nats = harness::nats::NatsServer::start();
    let command = run[0].replace("nats://127.0.0.1:4222", &nats.url());
    assert_ne!(command, run[0], "the README's command names the default NATS address");
    let second_terminal = commands(&code_blocks(&readme, "Run it")[1]);

    let dir = tempfile::tempdir().unwrap();
    let (public, admin, vars) = local_run(dir.path());
    let mut server = start_serving(&command, &vars, &dir.path().join("serve.log"), public, admin).await;

    let line = |prefix: &str| alias_line(&second_terminal, prefix);
    let log = dir.path().join("line.log");
    let simulated = run_line(&line("ie simulate sms"), &vars, &log, |_| false).await;
    assert!(simulated.starts_with("200"), "{simulated}");
    let mut on_nats = vars.clone();
    on_nats.push(("BUS_URL", nats.url()));
    let envelope =
        run_line(&line("ie tail --topic ingress.twilio.messaging"), &on_nats, &log, |out| out.contains('\n')).await;
    let envelope: serde_json::Value = serde_json::from_str(envelope.lines().next().unwrap()).unwrap();
    assert_eq!(envelope["body"].as_str(), Some("hello"), "the envelope is on NATS");

    stop_serving(&mut server).await;
}

/// The README's `twilio wire` line, as written, with Twilio's REST API a local
/// fake that has one number and the example's Conversations service: a dry
/// run reads them, prints the table and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_wire_command_works_as_written() {
    use harness::fake_console::{self, Console};

    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let wire = commands(&code_blocks(&readme, "Wire Twilio")[0]);
    assert_eq!(wire.len(), 1, "one command: {wire:?}");
    let env_file = std::fs::read_to_string(repo().join("examples/local.env")).unwrap();
    let chat_service = env_file
        .lines()
        .find_map(|line| line.strip_prefix("TWILIO_CHAT_SERVICE_SID="))
        .expect("the example's Conversations service")
        .to_owned();
    let fake = FakeTwilio::start().await;
    fake.edit_console(|console| {
        *console = Console {
            numbers: vec![fake_console::number("PN0123456789abcdef0123456789abcdef", "+15005550006", "")],
            conversations: vec![(chat_service.clone(), fake_console::conversations_webhooks(&chat_service))],
            ..Console::default()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (_, _, mut vars) = local_run(dir.path());
    vars.extend(
        ["TWILIO_API_BASE_URL", "TWILIO_CONVERSATIONS_BASE_URL", "TWILIO_MESSAGING_BASE_URL"]
            .map(|name| (name, fake.base_url())),
    );

    let table = run_line(&wire[0], &vars, &dir.path().join("wire.log"), |_| false).await;
    assert!(table.starts_with("RESOURCE"), "{table}");
    assert!(table.contains("number +15005550006") && table.contains("would change"), "{table}");
    assert!(table.contains("https://hooks.example.com/twilio/conversations"), "{table}");
    assert!(fake.posts().is_empty(), "a dry run changes nothing");
}

/// The README's second-account lines, as written but for the accounts
/// directory (a temporary one, as `TWILIO_ACCOUNTS_DIR` in the environment
/// says): the folder is made while the service runs, and the `send` line
/// goes out as that account, from its number, with its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_second_account_works_as_written() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let run = commands(&code_blocks(&readme, "Run it")[0]);
    let second_terminal = commands(&code_blocks(&readme, "Run it")[1]);
    let lines = commands(&code_blocks(&readme, "More Twilio accounts")[0]);

    let fake = FakeTwilio::start().await;
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("twilio-accounts");
    let (public, admin, mut vars) = local_run(dir.path());
    vars.extend([
        ("TWILIO_API_BASE_URL", fake.base_url()),
        ("TWILIO_CONVERSATIONS_BASE_URL", fake.base_url()),
        ("TWILIO_ACCOUNTS_DIR", accounts.display().to_string()),
    ]);
    let mut server = start_serving(&run[0], &vars, &dir.path().join("serve.log"), public, admin).await;

    let script = format!(
        "shopt -s expand_aliases\n{}\n{}\n",
        second_terminal[0],
        lines.join("\n").replace("data/twilio-accounts", &accounts.display().to_string())
    );
    assert!(lines.concat().contains("data/twilio-accounts") && !script.contains("data/twilio-accounts"));
    let id = run_line(&script, &vars, &dir.path().join("line.log"), |_| false).await.trim().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.posts().is_empty() {
        assert!(Instant::now() < deadline, "the send never reached the fake Twilio");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = &fake.posts()[0];
    assert_eq!(sent.path, "/2010-04-01/Accounts/AC11111111111111111111111111111111/Messages.json");
    assert!(sent.form.contains(&("From".to_owned(), "+15005550007".to_owned())), "{:?}", sent.form);
    stop_serving(&mut server).await;
}

//! A real `nats-server -js` on a free loopback port, its store in a temporary
//! directory: the NATS JetStream bus of the tests. Stopped (and its store
//! removed) when dropped; it can be killed and started again on the same port
//! and store to play an outage.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or, after [`NatsServer::kill`], stopped) NATS server.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    store: tempfile::TempDir,
    /// Extra arguments (authentication, say).
    args: Vec<String>,
}

/// The server `scripts/setup --test` installs, or `NATS_SERVER`.
pub fn binary() -> PathBuf {
    crate::fixtures::installed_server("NATS_SERVER", "nats/.venv/bin/nats-server")
}

impl NatsServer {
    /// Starts a server with JetStream on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with more arguments (`--auth TOKEN`, say).
    pub fn start_with(args: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port: crate::free_addr().port(),
            store: tempfile::tempdir().expect("tempdir"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:PORT`, for `BUS_URL`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL): an outage.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new(binary());
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path())
            .args(&self.args);
        self.child = Some(spawn_listening(command, self.port));
    }
}

/// Starts `command` (a nats-server) quietly; returns once it listens on `port`.
pub fn spawn_listening(mut command: Command, port: u16) -> Child {
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting nats-server");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < START_TIMEOUT, "nats-server did not listen on {port} within {START_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

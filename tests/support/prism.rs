//! Prism serving one of Twilio's OpenAPI files: the Twilio stand-in of the
//! contract tests. With `--errors`, a request that breaks the contract gets a
//! 422 naming what is wrong.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Prism may take to load a spec (the 2010 API is 1.8 MB).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running Prism; stopped when dropped.
#[derive(Debug)]
pub struct Prism {
    child: Child,
    pub port: u16,
}

/// Twilio's OpenAPI file `name`, vendored with its licence under `tests/contract/twilio-oai/`.
pub fn spec(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/contract/twilio-oai")).join(name)
}

/// Twilio's OpenAPI file `name` from the Twilio CLI's npm package, which
/// `scripts/setup --test` unpacks under `tests/contract/npm-oai/` (for the
/// APIs not vendored here: Messaging Services).
pub fn npm_spec(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/contract/npm-oai/package/src/services/twilio-api")).join(name)
}

impl Prism {
    pub fn start(spec: PathBuf) -> Self {
        let prism = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/contract/node_modules/.bin/prism"));
        assert!(prism.exists(), "Prism is not installed: run scripts/setup (npm ci in tests/contract)");
        assert!(spec.exists(), "missing {} (scripts/setup --test)", spec.display());
        let port = crate::free_addr().port();
        let mut child = Command::new(prism)
            .args(["mock", "--errors", "--dynamic=false", "-h", "127.0.0.1", "-p", &port.to_string()])
            .arg(&spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prism");
        let stdout = child.stdout.take().expect("prism stdout");
        let (ready, waiting) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Prism is listening") {
                    let _ = ready.send(());
                }
            }
        });
        let started = Instant::now();
        if waiting.recv_timeout(START_TIMEOUT).is_err() {
            let _ = child.kill();
            panic!("Prism did not start within {START_TIMEOUT:?} ({:?})", started.elapsed());
        }
        Self { child, port }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

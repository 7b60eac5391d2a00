//! A 3-server NATS JetStream cluster on loopback, run from the very server
//! configuration `deploy/kubernetes/nats-cluster.yaml` ships (its hosts,
//! ports and store rewritten for 127.0.0.1): what the tests prove of the
//! cluster holds for the configuration operators deploy. Servers can be
//! started late (the service starts before the cluster forms), killed
//! (SIGKILL: a stream leader lost) and started again on their own stores.

use std::path::PathBuf;
use std::process::{Child, Command};

/// The manifest whose configuration the cluster runs.
const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/nats-cluster.yaml");

/// The server the harness runs (`scripts/setup --test`, or `NATS_SERVER`).
pub fn binary() -> PathBuf {
    crate::nats::binary()
}

/// The `nats.conf` of the manifest's ConfigMap.
pub fn server_config(manifest: &str) -> String {
    let documents = manifest.split("\n---\n").map(|d| serde_yaml::from_str::<serde_yaml::Value>(d).expect("YAML"));
    let config_map = documents.into_iter().find(|d| d["kind"] == "ConfigMap").expect("the nats-config ConfigMap");
    config_map["data"]["nats.conf"].as_str().expect("nats.conf").to_owned()
}

/// One server of the cluster.
#[derive(Debug)]
struct Node {
    client_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// Three servers named n0, n1, n2; none runs until started.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Writes the three servers' configurations (free loopback ports, a
    /// store each in a temporary directory); starts none.
    pub fn new() -> Self {
        let template = server_config(&std::fs::read_to_string(MANIFEST).expect("the NATS cluster manifest"));
        let dir = tempfile::tempdir().expect("tempdir");
        let client: Vec<u16> = (0..3).map(|_| crate::free_addr().port()).collect();
        let cluster: Vec<u16> = (0..3).map(|_| crate::free_addr().port()).collect();
        let nodes = (0..3)
            .map(|i| {
                let store = dir.path().join(format!("n{i}"));
                let mut text = template
                    .replace("$POD_NAME", &format!("n{i}"))
                    .replace("listen: 0.0.0.0:4222", &format!("listen: 127.0.0.1:{}", client[i]))
                    .replace("listen: 0.0.0.0:6222", &format!("listen: 127.0.0.1:{}", cluster[i]))
                    .replace("store_dir: /data/jetstream", &format!("store_dir: \"{}\"", store.display()));
                for (j, port) in cluster.iter().enumerate() {
                    let route = format!("nats-{j}.nats.nats.svc.cluster.local:6222");
                    text = text.replace(&route, &format!("127.0.0.1:{port}"));
                }
                // No monitoring port or pid file on a shared test machine.
                let text: String = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("http:") && !l.trim_start().starts_with("pid_file:"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let config = dir.path().join(format!("n{i}.conf"));
                std::fs::write(&config, text).expect("writing a server configuration");
                Node { client_port: client[i], config, child: None }
            })
            .collect();
        Self { nodes, _dir: dir }
    }

    /// The seed list for `BUS_URL`.
    pub fn seeds(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect::<Vec<_>>().join(",")
    }

    /// Starts server `i` (again, on its own store); returns once it listens.
    pub fn start(&mut self, i: usize) {
        self.kill(i);
        let node = &mut self.nodes[i];
        let mut command = Command::new(binary());
        command.arg("-c").arg(&node.config);
        node.child = Some(crate::nats::spawn_listening(command, node.client_port));
    }

    /// Starts every server.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// Kills server `i` at once (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every server.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    /// The index of the server named `name` (`n0`…).
    pub fn index_of(name: &str) -> usize {
        name.strip_prefix('n').and_then(|i| i.parse().ok()).expect("a server of this cluster")
    }
}

impl Default for NatsCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

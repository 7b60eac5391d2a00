//! A native baseline server for `bench/run`: `native-baseline ADDR SINK DIR`,
//! SINK one of `bus` (the service's SQLite bus, fsync'd group commit),
//! `bus-normal` (the same bus with `synchronous=NORMAL`: no fsync at commit),
//! `file` (appended, no fsync), `file-sync` (appended, `fdatasync` per
//! batch: what any durable store pays at least) or `memory`. `TWILIO_AUTH_TOKEN` verifies signatures.
//! Runs until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bench::native::{Baseline, FileWriter, Sink};
use ingress_egress::bus::sqlite::{SqliteBus, Synchronous};
use ingress_egress::config::BusConfig;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, sink, dir] = args.as_slice() else {
        eprintln!("usage: native-baseline ADDR bus|bus-normal|file|file-sync|memory DIR");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is HOST:PORT");
    let dir = PathBuf::from(dir);
    let auth_token = std::env::var("TWILIO_AUTH_TOKEN").expect("TWILIO_AUTH_TOKEN");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let sink = match sink.as_str() {
            "bus" => Sink::Bus(Arc::new(SqliteBus::open(&dir.join("bus.sqlite3")).expect("bus"))),
            "bus-normal" => {
                let config = BusConfig::embedded(&dir);
                let bus = SqliteBus::with_synchronous(&dir.join("bus.sqlite3"), &config, Synchronous::Normal);
                Sink::Bus(Arc::new(bus.expect("bus")))
            }
            "file" => Sink::File(FileWriter::start(&dir.join("envelopes.jsonl"), false).expect("file")),
            "file-sync" => Sink::File(FileWriter::start(&dir.join("envelopes.jsonl"), true).expect("file")),
            "memory" => Sink::Memory(Arc::default()),
            other => panic!("unknown sink {other}"),
        };
        bench::native::start(Baseline::new(&auth_token, sink), addr).await;
        std::future::pending::<()>().await;
    });
}

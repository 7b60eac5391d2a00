//! Hostile traffic against the public listener, with valid webhooks mixed
//! in: malformed, forged and oversized requests, odd methods and paths, a
//! 1 MiB header, slow headers, short bodies, a huge `NumMedia`, thousands of
//! parameters. Each gets a 4xx (or its connection closed); every valid
//! webhook gets 200 and is on the bus exactly once; nothing else is.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::net::SocketAddr;
use std::time::Duration;

use harness::fixtures::{borrowed, minimal_sms};
use harness::{Harness, form, messages, sign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A small deterministic generator (xorshift), so a failure replays exactly.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Writes `request` raw; the status the server answered, or 0 when it closed
/// the connection without one. Bounded: a server that never answers fails.
async fn raw(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    });
    read.await.expect("the server neither answered nor closed within 15 s");
    let status = answer.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse().ok());
    status.unwrap_or(0)
}

fn webhook(path: &str, signature: &str, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         x-twilio-signature: {signature}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

/// One hostile request of kind `kind` (0..12); what it is, and the request.
fn hostile(addr: SocketAddr, kind: usize, random: &mut Random) -> (&'static str, Vec<u8>) {
    if kind < 5 { hostile_webhook(addr, kind, random) } else { hostile_http(kind, random) }
}

/// Webhook-shaped abuse: forged, signed elsewhere, oversized in its parameters.
fn hostile_webhook(addr: SocketAddr, kind: usize, random: &mut Random) -> (&'static str, Vec<u8>) {
    let url = format!("http://{addr}/twilio/messaging");
    match kind {
        0 => {
            let len = random.below(4096);
            ("random body, random signature", webhook("/twilio/messaging", "Zm9yZ2Vk", &random.bytes(len)))
        }
        1 => {
            let params = minimal_sms(&format!("SMforged{}", random.next()), "x");
            let body = form(&borrowed(&params));
            let signed_elsewhere = sign("http://evil.example.com/twilio/messaging", &borrowed(&params));
            ("signed for another URL", webhook("/twilio/messaging", &signed_elsewhere, &body))
        }
        3 => {
            let params: Vec<(String, String)> = (0..4000).map(|i| (format!("P{i}"), "v".to_owned())).collect();
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let body = form(&params);
            ("4,000 parameters, signed", webhook("/twilio/messaging", &sign(&url, &params), &body))
        }
        4 => {
            let mut params = minimal_sms(&format!("SMmedia{}", random.next()), "x");
            params.push(("NumMedia", "1000000000".to_owned()));
            let body = form(&borrowed(&params));
            ("NumMedia=1000000000, signed", webhook("/twilio/messaging", &sign(&url, &borrowed(&params)), &body))
        }
        _ => {
            let header = "a".repeat(1 << 20);
            ("a 1 MiB header", format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {header}\r\n\r\n").into_bytes())
        }
    }
}

/// HTTP-level abuse: odd methods and paths, broken framing, garbage.
fn hostile_http(kind: usize, random: &mut Random) -> (&'static str, Vec<u8>) {
    match kind {
        5 => {
            let method = ["DELETE", "PUT", "OPTIONS", "TRACE", "PATCH", "CONNECT", "BREW"][random.below(7)];
            (
                "an odd method",
                format!("{method} /twilio/messaging HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes(),
            )
        }
        6 => {
            let path = ["/twilio/messaging/../status", "//twilio//messaging", "/twilio/%00", "/%2e%2e/etc/passwd", "*"]
                [random.below(5)];
            (
                "an odd path",
                format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .into_bytes(),
            )
        }
        7 => {
            let long = "a".repeat(64 * 1024);
            ("a 64 KiB path", format!("GET /{long} HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes())
        }
        8 => {
            let head =
                "POST /twilio/messaging HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n";
            ("a body shorter than declared", [head.as_bytes(), b"MessageSid=SM1"].concat())
        }
        9 => {
            let len = 1 + random.below(2048);
            ("garbage instead of HTTP", random.bytes(len))
        }
        10 => {
            let chunk = "x".repeat(8192);
            let chunks: String = (0..20).map(|_| format!("2000\r\n{chunk}\r\n")).collect();
            let head =
                "POST /twilio/messaging HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            ("160 KiB chunked", format!("{head}{chunks}0\r\n\r\n").into_bytes())
        }
        _ => {
            let params = minimal_sms(&format!("SMbad{}", random.next()), "x");
            let mut body = form(&borrowed(&params));
            body.extend_from_slice(b"&Body=%FF%FE%00");
            ("non-UTF-8 values, badly signed", webhook("/twilio/messaging", "AAAA", &body))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_valid_webhooks_carry_on() {
    let mut harness = Harness::new();
    harness.set_setting("header_read_timeout_ms", "1000").set_setting("body_read_timeout_ms", "200");
    let service = harness.start().await;
    let addr = service.public_addr;
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let (mut valid, mut tried) = (Vec::new(), 0);
    let slow = tokio::spawn(slow_headers(addr));
    // Ten at a time: the ones that wait out a timeout (short bodies) overlap.
    for round in 0..60 {
        let batch: Vec<_> = (0..10)
            .map(|_| {
                let kind = random.below(12);
                let (what, request) = hostile(addr, kind, &mut random);
                tokio::spawn(async move { (kind, what, raw(addr, &request).await) })
            })
            .collect();
        for task in batch {
            let (kind, what, status) = task.await.unwrap();
            // 4,000 signed parameters and a huge NumMedia are signed: kept, or refused as malformed.
            let acceptable = status == 0 || (400..500).contains(&status) || (matches!(kind, 3 | 4) && status == 200);
            assert!(acceptable, "{what}: answered {status}");
            tried += 1;
        }
        for valid_in_round in 0..2 {
            let sid = format!("SM{:032x}", round * 2 + valid_in_round);
            assert_eq!(harness::signed_sms(addr, &sid).await, 200, "a valid webhook in round {round}");
            valid.push(sid);
        }
    }
    assert_eq!(slow.await.unwrap(), 0, "slow headers were not cut off");
    let on_bus: Vec<String> = messages(&service, "ingress.twilio.messaging")
        .await
        .iter()
        .map(|m| m["provider_message_id"].as_str().unwrap().to_owned())
        .filter(|sid| !sid.starts_with("SMforged") && !sid.starts_with("SMbad"))
        .collect();
    let mut expected = valid.clone();
    expected.sort();
    let mut found: Vec<String> = on_bus.into_iter().filter(|sid| valid.contains(sid)).collect();
    found.sort();
    assert_eq!(found, expected, "every valid webhook once");
    let forged = messages(&service, "ingress.twilio.messaging")
        .await
        .iter()
        .filter(|m| {
            m["provider_message_id"].as_str().is_some_and(|s| s.starts_with("SMforged") || s.starts_with("SMbad"))
        })
        .count();
    assert_eq!(forged, 0, "a forged webhook was published");
    println!(
        "hostile: {tried} hostile requests refused, {} valid webhooks among them all on the bus once",
        valid.len()
    );
    service.stop().await.unwrap();
}

/// Headers a byte at a time, slower than the header timeout: cut off
/// (closed, or 408). Returns the status, 0 when closed without one.
async fn slow_headers(addr: SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for byte in b"POST /twilio/messaging HTTP/1.1\r\nhost: x\r\n" {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let status = answer.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse().ok());
    status.filter(|s| *s != 408).unwrap_or(0)
}

//! The admin listener's credentials: every admin route wants a bearer token,
//! `ADMIN_TOKEN` or, without it, the one `serve` generates in
//! `DATA_DIR/admin-token` (loopback included); `/metrics` can have a listener
//! of its own that wants none; a non-loopback admin address without
//! `ADMIN_TOKEN` does not start.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::{Harness, get, post};

const TOKEN: &str = "admin-token-0123456789abcdef";

/// Every admin route, as (method, path).
const ROUTES: [(&str, &str); 7] = [
    ("GET", "/metrics"),
    ("GET", "/admin/connectors"),
    ("POST", "/admin/reload"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/tokens"),
    ("POST", "/v1/deadletters/redrive"),
    ("GET", "/v1/topics/ingress.twilio.messaging/events"),
];

async fn call(addr: std::net::SocketAddr, (method, path): (&str, &str), token: Option<&str>) -> u16 {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    let body = match path {
        "/v1/messages" => br#"{"to": "+14155550100", "from": "+15005550006", "body": "hi"}"#.to_vec(),
        "/v1/deadletters/redrive" => br#"{"topic": "deadletter.twilio", "dry_run": true}"#.to_vec(),
        _ => b"{}".to_vec(),
    };
    match method {
        "GET" if path.ends_with("/events") => {
            // A stream that answers 200 never ends: ask for the status only.
            let url = format!("http://{addr}{path}");
            let status = tokio::time::timeout(std::time::Duration::from_secs(5), head_status(&url, bearer.as_deref()));
            status.await.unwrap()
        }
        "GET" if bearer.is_none() => get(addr, path).await.0,
        "GET" => get_with(addr, path, bearer.as_deref().unwrap()).await,
        _ => post(addr, path, &headers, body).await.0,
    }
}

async fn get_with(addr: std::net::SocketAddr, path: &str, bearer: &str) -> u16 {
    head_status(&format!("http://{addr}{path}"), Some(bearer)).await
}

/// The status of a GET, without reading the body.
async fn head_status(url: &str, bearer: Option<&str>) -> u16 {
    let url = url::Url::parse(url).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut request = hyper::Request::get(url.path()).header("host", addr);
    if let Some(bearer) = bearer {
        request = request.header("authorization", bearer);
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let status = sender.send_request(request).await.unwrap().status().as_u16();
    connection.abort();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_admin_route_wants_it() {
    let mut harness = Harness::new();
    harness.env.set("ADMIN_TOKEN", TOKEN).set("METRICS_ADDR", "127.0.0.1:0");
    let service = harness.start().await;
    let admin = service.admin_addr;
    for route in ROUTES {
        assert_eq!(call(admin, route, None).await, 401, "{route:?} without a token");
        assert_eq!(call(admin, route, Some("admin-token-0123456789abcdeX")).await, 401, "{route:?}, wrong token");
    }
    for route in ROUTES {
        let status = call(admin, route, Some(TOKEN)).await;
        assert!((200..300).contains(&status), "{route:?} with the token: {status}");
    }
    let metrics_addr = service.metrics_addr.expect("a metrics listener");
    let (status, text) = get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    // At least this test's 12 refusals (others in this process may add theirs).
    let failures: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("admin_auth_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the failure counter");
    assert!(failures >= 12, "{failures}");
    assert!(!text.contains(TOKEN));
    assert_eq!(get(metrics_addr, "/admin/connectors").await.0, 404, "metrics only");
    assert_eq!(post(metrics_addr, "/admin/reload", &[], Vec::new()).await.0, 404);
    service.stop().await.unwrap();
}

/// No ADMIN_TOKEN: `serve` writes a token of its own (0600, never logged),
/// refuses every admin route without it on loopback, keeps it across a
/// restart, and the CLI finds it in DATA_DIR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_serve_generates_one_and_loopback_is_not_open() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut harness = Harness::new();
    let data_dir = std::path::PathBuf::from(harness.env.get("DATA_DIR").unwrap());
    let log = harness.dir.path().join("serve.log");
    let (admin, mut serve) = spawn_serve_logging(&mut harness, &log).await;
    let file = data_dir.join("admin-token");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64);
    for route in ROUTES {
        assert_eq!(call(admin, route, None).await, 401, "{route:?} on loopback without the token");
    }
    for route in ROUTES {
        let status = call(admin, route, Some(&token)).await;
        assert!((200..300).contains(&status), "{route:?} with the generated token: {status}");
    }
    // The CLI reads it from DATA_DIR: the README's second-terminal commands work unchanged.
    let reload = harness.command(&["reload"], Some(&["DATA_DIR", "ADMIN_ADDR"])).output().unwrap();
    assert!(reload.status.success(), "{}", String::from_utf8_lossy(&reload.stderr));

    serve.kill().unwrap();
    serve.wait().unwrap();
    let (admin, mut serve) = spawn_serve_logging(&mut harness, &log).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token, "a restart keeps the token");
    assert_eq!(call(admin, ROUTES[1], Some(&token)).await, 200);
    serve.kill().unwrap();
    serve.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("admin token generated") && !logged.contains(&token), "{logged}");
}

/// `serve` as a child process whose log goes to `log` (appended); returns
/// its admin address once it listens.
async fn spawn_serve_logging(
    harness: &mut Harness,
    log: &std::path::Path,
) -> (std::net::SocketAddr, std::process::Child) {
    let (public, admin) = (harness::free_addr(), harness::free_addr());
    harness.env.set("LISTEN_ADDR", public.to_string()).set("ADMIN_ADDR", admin.to_string());
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = harness.command(&["serve"], None).stdout(std::process::Stdio::null()).stderr(file).spawn().unwrap();
    harness::wait_for_listener(admin).await;
    (admin, child)
}

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    let mut harness = Harness::new();
    harness.env.set("ADMIN_ADDR", "0.0.0.0:0");
    let error = ingress_egress::config::load(&harness.architecture_path(), &harness.env).unwrap_err().to_string();
    assert!(error.contains("ADMIN_TOKEN: required: ADMIN_ADDR 0.0.0.0:0 is not a loopback address"), "{error}");
    harness.env.set("ADMIN_TOKEN", TOKEN);
    ingress_egress::config::load(&harness.architecture_path(), &harness.env).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_sends_the_token() {
    let mut harness = Harness::new();
    harness.env.set("ADMIN_TOKEN", TOKEN);
    let service = harness.start().await;
    let admin_url = format!("http://{}", service.admin_addr);
    let reload = |vars: Option<&'static [&'static str]>| {
        harness.command(&["reload", "--admin-url", &admin_url], vars).output().unwrap()
    };
    let with_token = reload(None);
    assert!(with_token.status.success(), "{}", String::from_utf8_lossy(&with_token.stderr));
    let without: &'static [&'static str] = &["DATA_DIR"];
    let refused = reload(Some(without));
    assert!(!refused.status.success());
    let output = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert!(output.contains("401") || output.contains("refused"), "{output}");
    assert!(!output.contains(TOKEN));
    service.stop().await.unwrap();
}

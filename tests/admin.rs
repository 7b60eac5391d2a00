//! The admin listener's credentials: with `ADMIN_TOKEN` set, every admin route
//! wants it as a bearer token; `/metrics` can have a listener of its own that
//! wants none; a non-loopback admin address without a token does not start.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use harness::{Harness, get, post};

const TOKEN: &str = "admin-token-0123456789abcdef";

/// Every admin route, as (method, path).
const ROUTES: [(&str, &str); 6] = [
    ("GET", "/metrics"),
    ("GET", "/admin/connectors"),
    ("POST", "/admin/reload"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/tokens"),
    ("GET", "/v1/topics/ingress.twilio.messaging/events"),
];

async fn call(addr: std::net::SocketAddr, (method, path): (&str, &str), token: Option<&str>) -> u16 {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    let body = if path == "/v1/messages" {
        br#"{"to": "+14155550100", "from": "+15005550006", "body": "hi"}"#.to_vec()
    } else {
        b"{}".to_vec()
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

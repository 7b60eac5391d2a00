//! A minimal HTTP/1 client for the command line (`simulate`, `reload`,
//! `health`): plain HTTP to the service's own listeners, every wait bounded.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

const TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs `body` to `base_url` + `path`; returns the status and body.
pub async fn post(
    base_url: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    bounded(TIMEOUT, exchange(hyper::Method::POST, base_url, path, headers, body)).await
}

/// GETs `base_url` + `path`, waiting at most `timeout`; returns the status and body.
pub async fn get(base_url: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, Bytes)> {
    bounded(timeout, exchange(hyper::Method::GET, base_url, path, &[], Vec::new())).await
}

async fn bounded<T>(timeout: Duration, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, work).await.with_context(|| format!("no answer within {timeout:?}"))?
}

async fn exchange(
    method: hyper::Method,
    base_url: &str,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> anyhow::Result<(u16, Bytes)> {
    let url = url::Url::parse(base_url).context("invalid URL")?;
    anyhow::ensure!(url.scheme() == "http", "only http:// is supported here");
    let host = url.host_str().context("URL without a host")?.to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path).header("host", format!("{host}:{port}"));
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = sender.send_request(request.body(Full::new(Bytes::from(body)))?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

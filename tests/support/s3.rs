//! A real S3-compatible server (moto's `moto_server`) on a free loopback
//! port: the bucket of the blob store tests. Stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How long the server (a Python process) may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running S3 server.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    /// Where it listens on 127.0.0.1.
    pub addr: SocketAddr,
}

/// An object as the server hands it back.
#[derive(Debug)]
pub struct Object {
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// The server `scripts/setup --test` installs, or `MOTO_SERVER`.
fn binary() -> PathBuf {
    crate::fixtures::installed_server("MOTO_SERVER", "s3/.venv/bin/moto_server")
}

impl S3Server {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let addr = crate::free_addr();
        let child = Command::new(binary())
            .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let server = Self { child, addr };
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < START_TIMEOUT, "moto_server did not listen within {START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `http://127.0.0.1:PORT`, for `blobs.s3.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates `bucket` (the server takes unsigned requests).
    pub async fn create_bucket(&self, bucket: &str) {
        let (status, answer) = crate::bodiless(self.addr, hyper::Method::PUT, &format!("/{bucket}"), &[]).await;
        assert_eq!(status, 200, "creating bucket {bucket}: {answer}");
    }

    /// The object at `bucket/key`, read with boto3 (AWS's own client, signed:
    /// the server refuses anonymous reads).
    pub fn object(&self, bucket: &str, key: &str) -> Object {
        const GET_OBJECT: &str = "import base64, json, sys, boto3\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                aws_access_key_id='reader', aws_secret_access_key='reader')\n\
            got = s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])\n\
            print(json.dumps({'content_type': got['ContentType'],\n\
                'bytes': base64.b64encode(got['Body'].read()).decode()}))\n";
        let python = binary().with_file_name("python");
        let output = Command::new(python)
            .args(["-c", GET_OBJECT, &self.endpoint(), bucket, key])
            .output()
            .expect("running boto3");
        assert!(output.status.success(), "get_object {bucket}/{key}: {}", String::from_utf8_lossy(&output.stderr));
        let got: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON from the script");
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(got["bytes"].as_str().expect("bytes")).expect("base64");
        Object { content_type: got["content_type"].as_str().map(str::to_owned), bytes }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The container image. Where a container engine runs (podman, buildah or
//! docker with a daemon), the Containerfile is built and the image started.
//! Where none does, the test says so and checks what the image would run:
//! the static binary from `scripts/build-static`, started in an empty root
//! (no libc, no shell, no /etc but what the Containerfile puts there) as the
//! image's non-root user, with the image's environment, its health check
//! command, and a signed webhook that must end up on the bus.

#![allow(clippy::unwrap_used, reason = "helpers of a test binary")]

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Signature, borrowed, minimal_sms};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The image's user, as the Containerfile names it.
const IMAGE_USER: &str = "65532:65532";

/// A command's output, or None when it cannot run.
fn output(program: &str, args: &[&str]) -> Option<std::process::Output> {
    Command::new(program).args(args).stdin(Stdio::null()).output().ok()
}

/// The first container engine that can build here, by name.
fn usable_engine() -> Option<&'static str> {
    let works = |program: &str, args: &[&str]| output(program, args).is_some_and(|o| o.status.success());
    if works("podman", &["info"]) {
        Some("podman")
    } else if works("buildah", &["info"]) {
        Some("buildah")
    } else if works("docker", &["info"]) {
        Some("docker")
    } else {
        None
    }
}

/// One instruction of the Containerfile, as BuildKit's parser reads it.
#[derive(Debug, serde::Deserialize)]
struct Instruction {
    cmd: String,
    value: Vec<String>,
    flags: Vec<String>,
}

/// The Containerfile's instructions, read by BuildKit's own parser (the
/// `dockerfile` package from PyPI): a file it refuses would not build.
fn containerfile() -> Vec<Instruction> {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/.venv/bin/python");
    assert!(Path::new(python).exists(), "the Containerfile parser is not installed: run scripts/setup --test");
    let parsed = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/containerfile.py"))
        .arg(format!("{REPO}/Containerfile"))
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "BuildKit's parser refuses the Containerfile: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    serde_json::from_slice(&parsed.stdout).unwrap()
}

/// The instructions of the final stage (after the last FROM).
fn final_stage(instructions: &[Instruction]) -> &[Instruction] {
    let last_from = instructions.iter().rposition(|i| i.cmd == "FROM").expect("a FROM");
    &instructions[last_from..]
}

/// The value of the final stage's one `cmd` instruction.
fn instruction<'a>(stage: &'a [Instruction], cmd: &str) -> &'a Instruction {
    stage.iter().find(|i| i.cmd == cmd).unwrap_or_else(|| panic!("no {cmd} in the final stage"))
}

/// The final stage's `ENV`, as name and value.
fn image_env(stage: &[Instruction]) -> Vec<(String, String)> {
    instruction(stage, "ENV").value.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect()
}

/// Whether an ELF executable asks for a dynamic loader (`PT_INTERP`).
fn has_interpreter(binary: &Path) -> bool {
    let mut file = std::fs::File::open(binary).unwrap();
    let mut header = [0u8; 64];
    file.read_exact(&mut header).unwrap();
    assert_eq!(&header[..4], b"\x7fELF", "an ELF file");
    assert_eq!(header[4], 2, "64-bit");
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().unwrap());
    let phentsize = u64::from(u16::from_le_bytes(header[0x36..0x38].try_into().unwrap()));
    let phnum = u64::from(u16::from_le_bytes(header[0x38..0x3a].try_into().unwrap()));
    (0..phnum).any(|i| {
        let mut kind = [0u8; 4];
        file.seek(SeekFrom::Start(phoff + i * phentsize)).unwrap();
        file.read_exact(&mut kind).unwrap();
        u32::from_le_bytes(kind) == 3
    })
}

/// Builds the static binary the image runs (a debug build: the check is
/// about linking and the empty root, not speed).
fn static_binary() -> PathBuf {
    let started = Instant::now();
    let out = Command::new(format!("{REPO}/scripts/build-static"))
        .args(["--profile", "dev"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/build-static failed");
    let path = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_owned();
    println!("static binary built in {:.0?}: {path}", started.elapsed());
    PathBuf::from(path)
}

/// An empty root holding what the final stage copies in, with the secrets
/// mounted as files, owned by the image's user.
fn image_root(binary: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = |path: &str| {
        let path = root.path().join(path);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    std::fs::copy(binary, dir("usr/local/bin").join("ingress-egress")).unwrap();
    std::fs::copy(format!("{REPO}/architecture.yaml"), dir("etc/ingress-egress").join("architecture.yaml")).unwrap();
    write_secrets(&dir("run/secrets"));
    let data = dir("data");
    if is_root() {
        // The devices every OCI runtime gives a container, even FROM scratch
        // (the random number generator reads /dev/urandom at its first use).
        let dev = dir("dev");
        for (name, minor) in [("null", "3"), ("zero", "5"), ("full", "7"), ("random", "8"), ("urandom", "9")] {
            let made = Command::new("mknod").args(["-m", "666"]).arg(dev.join(name)).args(["c", "1", minor]).status();
            assert!(made.unwrap().success(), "mknod /dev/{name}");
        }
        let status = Command::new("chown").args(["-R", IMAGE_USER]).arg(&data).status().unwrap();
        assert!(status.success());
    }
    root
}

/// The connector's secrets as files, one per name, as a secret mount has them.
fn write_secrets(dir: &Path) {
    for (name, value) in harness::TWILIO_SECRETS {
        std::fs::write(dir.join(name), value).unwrap();
    }
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A command in the image's root, as its user, with its environment (and
/// these ports instead of the defaults). Without root, in place: said so.
fn in_image(root: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut command = if is_root() {
        // The environment is cleared below, so chroot is found here, on this process's PATH.
        let path = std::env::var_os("PATH").unwrap();
        let chroot = std::env::split_paths(&path).map(|dir| dir.join("chroot")).find(|p| p.exists()).unwrap();
        let mut chroot = Command::new(chroot);
        chroot.arg(format!("--userspec={IMAGE_USER}")).arg(root).arg("/usr/local/bin/ingress-egress");
        chroot
    } else {
        Command::new(root.join("usr/local/bin/ingress-egress"))
    };
    command.env_clear().args(args);
    for (name, value) in env {
        let rooted = is_root() || !value.starts_with('/');
        command.env(name, if rooted { value.clone() } else { format!("{}{value}", root.display()) });
    }
    command
}

/// Builds the image with `engine`; podman and docker also run it, with the
/// secrets mounted as files, and post a signed webhook to it.
async fn image_check(engine: &str) {
    let tag = "localhost/ingress-egress:test";
    let build: &[&str] = if engine == "buildah" { &["bud"] } else { &["build", "--format", "docker"] };
    let build: Vec<&str> = if engine == "docker" { vec!["build"] } else { build.to_vec() };
    let status =
        Command::new(engine).args(&build).args(["-f", "Containerfile", "-t", tag, "."]).current_dir(REPO).status();
    assert!(status.unwrap().success(), "{engine} could not build the Containerfile");
    if engine == "buildah" {
        return;
    }
    let secrets = tempfile::tempdir().unwrap();
    write_secrets(secrets.path());
    let public = harness::free_addr();
    let run = Command::new(engine)
        .args(["run", "-d", "--rm", "-p", &format!("{public}:8080"), "-v"])
        .arg(format!("{}:/run/secrets:ro", secrets.path().display()))
        .arg(tag)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let id = String::from_utf8_lossy(&run.stdout).trim().to_owned();
    harness::wait_until_ready(public).await;
    let params = minimal_sms("SM0000000000000000000000000000beef", "from the image");
    let (status, body) = harness::post_webhook(public, "/twilio/messaging", &borrowed(&params), Signature::Valid).await;
    let healthy = Command::new(engine).args(["exec", &id, "/usr/local/bin/ingress-egress", "health"]).status();
    let _ = Command::new(engine).args(["stop", "-t", "20", &id]).status();
    assert_eq!(status, 200, "{body}");
    assert!(healthy.unwrap().success(), "the health check fails inside the image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_a_signed_webhook_from_an_empty_root_as_a_non_root_user() {
    let instructions = containerfile();
    let stage = final_stage(&instructions);
    assert_eq!(stage[0].value, ["scratch"], "the image runs FROM scratch");
    assert_eq!(instruction(stage, "USER").value, [IMAGE_USER], "as a non-root user");
    let toolchain = std::fs::read_to_string(format!("{REPO}/rust-toolchain.toml")).unwrap();
    let rust_version = &instructions.iter().find(|i| i.cmd == "ARG").unwrap().value[0];
    let pinned = rust_version.strip_prefix("RUST_VERSION=").expect("ARG RUST_VERSION");
    assert!(toolchain.contains(&format!("channel = \"{pinned}\"")), "the build image has the pinned toolchain");
    if let Some(engine) = usable_engine() {
        image_check(engine).await;
        if engine != "buildah" {
            return;
        }
        println!("buildah builds but does not run services: the binary is checked as below");
    } else {
        println!(
            "container engine: none usable here (podman and buildah are absent, docker is a client without a \
         daemon, and no base image can be pulled); checking the static binary the image runs instead"
        );
    }

    let binary = static_binary();
    assert!(!has_interpreter(&binary), "{} asks for a dynamic loader: not static", binary.display());
    let root = image_root(&binary);
    if !is_root() {
        println!("not root: no chroot, so the binary runs in place as this user");
    }
    let (public, admin, metrics) = (harness::free_addr(), harness::free_addr(), harness::free_addr());
    let mut env = image_env(stage);
    for (name, value) in &mut env {
        match name.as_str() {
            "LISTEN_ADDR" => *value = public.to_string(),
            "ADMIN_ADDR" => *value = admin.to_string(),
            "METRICS_ADDR" => *value = metrics.to_string(),
            _ => {}
        }
    }
    let mut serve = in_image(root.path(), &env, &["serve"]).stdout(Stdio::null()).spawn().unwrap();
    harness::wait_until_ready(public).await;

    // The image's health check, as the engine would run it.
    let check = instruction(stage, "HEALTHCHECK");
    assert_eq!(check.value[..2], ["CMD", "/usr/local/bin/ingress-egress"], "{check:?}");
    assert!(check.flags.iter().any(|f| f.starts_with("--timeout=")), "{check:?}");
    let args: Vec<&str> = check.value[2..].iter().map(String::as_str).collect();
    let healthy = in_image(root.path(), &env, &args).output().unwrap();
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));

    // A signed webhook is answered, and its envelope is on the bus.
    let params = minimal_sms("SM0000000000000000000000000000c0de", "from the image");
    let (status, body) = harness::post_webhook(public, "/twilio/messaging", &borrowed(&params), Signature::Valid).await;
    assert_eq!(status, 200, "{body}");
    let tail = ["tail", "--topic", "ingress.twilio.messaging", "--from-start", "--limit", "1", "--idle-timeout", "10"];
    let tailed = in_image(root.path(), &env, &tail).output().unwrap();
    let envelope = String::from_utf8_lossy(&tailed.stdout);
    assert!(envelope.contains("SM0000000000000000000000000000c0de"), "{envelope}");

    // It stops on SIGTERM, and wrote its data as the image's user.
    let pid = serve.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = serve.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "serve did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    // With nothing listening the health check fails, and says so at once.
    let started = Instant::now();
    let unhealthy = in_image(root.path(), &env, &args).output().unwrap();
    assert!(!unhealthy.status.success() && started.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&unhealthy.stderr).contains("error:"), "{unhealthy:?}");
    if is_root() {
        let owner = output("stat", &["-c", "%u:%g", root.path().join("data/bus.sqlite3").to_str().unwrap()]).unwrap();
        assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), IMAGE_USER);
    }
}

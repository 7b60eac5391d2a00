//! The configuration of a made-up connector, `acme`: the host's config code
//! knows no real provider.

use super::*;

const ACCOUNT: &str = "AB0123456789abcdef";
const TOKEN: &str = "0123456789abcdef";

const ARCHITECTURE: &str = r#"
services:
  ingress-egress:
    listen_addr: 0.0.0.0:8080
    admin_addr: 127.0.0.1:9090
    data_dir: ./data
    connectors:
      acme:
        component: bundled:acme
        enabled_by: ACME_ENABLED
        secrets:
          ACME_ACCOUNT: { pattern: "^AB[0-9a-f]{16}$", required: true, description: "the account (AB…)" }
          ACME_TOKEN: { pattern: "^[0-9a-f]{16}$", required: true }
          ACME_API_SECRET: { format: text }
        variables:
          ACME_ENABLED: { format: bool, default: "true" }
          ACME_IDENTITY: { format: text, default: platform }
          ACME_SENDER: { pattern: "^\\+[1-9][0-9]{1,14}$" }
          ACME_API_BASE_URL: { format: url }
        routes: [/acme/]
        topics:
          messages: ingress.acme.messages
          egress: egress.acme
        outbound:
          hosts: [api.acme.example]
          hosts_from_variables: [ACME_API_BASE_URL]
"#;

fn full_env() -> Env {
    [("ACME_ACCOUNT", ACCOUNT), ("ACME_TOKEN", TOKEN), ("ACME_API_SECRET", "a-secret-value")].into_iter().collect()
}

fn load(text: &str, env: &Env) -> ServiceConfig {
    match parse(text, Path::new("/srv"), env, Secrets::Required) {
        Ok(config) => config,
        Err(ParseFailure::Invalid(problems)) => panic!("invalid: {problems:?}"),
        Err(ParseFailure::Syntax(message)) => panic!("syntax error: {message}"),
    }
}

fn problems(text: &str, env: &Env) -> Vec<Problem> {
    match parse(text, Path::new("/srv"), env, Secrets::Required) {
        Err(ParseFailure::Invalid(problems)) => problems,
        Err(ParseFailure::Syntax(message)) => panic!("syntax error: {message}"),
        Ok(_) => Vec::new(),
    }
}

fn names(problems: Vec<Problem>) -> Vec<String> {
    problems.into_iter().map(|p| p.name).collect()
}

#[test]
fn an_architecture_loads_with_all_secrets() {
    let config = load(ARCHITECTURE, &full_env());
    let acme = &config.connectors[0];
    assert_eq!(acme.name, "acme");
    assert!(acme.enabled);
    assert_eq!(acme.component, ComponentSource::Bundled("acme".into()));
    assert_eq!(acme.topics["messages"], "ingress.acme.messages");
    assert_eq!(acme.variables["ACME_IDENTITY"], "platform");
    assert_eq!(acme.routes, ["/acme/"]);
    assert_eq!(config.bus.url, BusUrl::Sqlite(PathBuf::from("/srv/./data/bus.sqlite3")));
    assert_eq!(config.server.admin_addr, "127.0.0.1:9090".parse().unwrap());
}

#[test]
fn absent_sections_take_their_defaults_and_present_keys_override_them() {
    let config = load(ARCHITECTURE, &full_env());
    assert_eq!(config.bus.retention, BusConfig::DEFAULT_RETENTION);
    assert_eq!(config.watch, WatchConfig::default());
    assert_eq!(config.metrics, MetricsConfig::default());
    let text = ARCHITECTURE.replace(
        "    data_dir: ./data\n",
        "    data_dir: ./data\n    bus_retention_hours: 2\n    watch_components: false\n    watch_polling: true\n",
    );
    let config = load(&text, &full_env());
    assert_eq!(config.bus.retention, Duration::from_secs(2 * 3600));
    assert!(!config.watch.enabled && config.watch.polling);
}

#[test]
fn two_missing_and_one_malformed_are_all_named_without_values() {
    let mut env = full_env();
    env.remove("ACME_TOKEN").set("ACME_ACCOUNT", "ABnot-an-account-secretish");
    let found = problems(ARCHITECTURE, &env);
    let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ACME_ACCOUNT", "ACME_TOKEN"], "{found:?}");
    let text = ConfigError::Invalid(found).to_string();
    assert!(text.contains("ACME_TOKEN: missing"));
    assert!(text.contains("ACME_ACCOUNT: malformed: expected a value matching ^AB[0-9a-f]{16}$"), "{text}");
    assert!(!text.contains("secretish"));
}

#[test]
fn commands_without_secrets_neither_read_nor_check_them() {
    let Ok(config) = parse(ARCHITECTURE, Path::new("/srv"), &Env::default(), Secrets::NotNeeded) else {
        panic!("secrets were required")
    };
    assert!(config.connectors[0].enabled);
    assert!(config.connectors[0].secrets.values().all(Option::is_none));
}

#[test]
fn disabled_connector_needs_no_secrets() {
    let mut env = Env::default();
    env.set("ACME_ENABLED", "false");
    let config = load(ARCHITECTURE, &env);
    assert!(!config.connectors[0].enabled);
    assert_eq!(config.enabled_connectors().count(), 0);
}

#[test]
fn a_typo_in_a_key_or_a_bad_pattern_is_named() {
    for (from, to) in [("listen_addr:", "listen_adr:"), ("enabled_by:", "enable_by:")] {
        let text = ARCHITECTURE.replace(from, to);
        match parse(&text, Path::new("/srv"), &full_env(), Secrets::Required) {
            Err(ParseFailure::Syntax(message)) => assert!(message.contains(to.trim_end_matches(':')), "{message}"),
            _ => panic!("typo {to} accepted"),
        }
    }
    let text = ARCHITECTURE.replace("^[0-9a-f]{16}$", "^[0-9a-f{16}$");
    assert_eq!(names(problems(&text, &full_env())), ["ACME_TOKEN.pattern"]);
    let text = ARCHITECTURE.replace("format: url", "format: link");
    assert_eq!(names(problems(&text, &full_env())), ["ACME_API_BASE_URL.format"]);
}

#[test]
fn environment_overrides_and_bad_values() {
    let mut env = full_env();
    env.set("LISTEN_ADDR", "127.0.0.1:18080")
        .set("BUS_URL", "nats://127.0.0.1:4222")
        .set("CONNECTOR_ACME_COMPONENT", "/opt/acme.wasm")
        .set("ACME_SENDER", "+14155550100");
    let config = load(ARCHITECTURE, &env);
    assert_eq!(config.server.listen_addr, "127.0.0.1:18080".parse().unwrap());
    assert_eq!(config.bus.url, BusUrl::Nats(vec!["nats://127.0.0.1:4222".into()]));
    assert_eq!(config.connectors[0].component, ComponentSource::File("/opt/acme.wasm".into()));

    env.set("LISTEN_ADDR", "nowhere")
        .set("BUS_URL", "redis://x")
        .set("ACME_SENDER", "555")
        .set("ACME_ENABLED", "perhaps");
    let names = names(problems(ARCHITECTURE, &env));
    assert!(names.contains(&"LISTEN_ADDR".to_owned()));
    assert!(names.contains(&"BUS_URL".to_owned()));
    assert!(names.contains(&"ACME_ENABLED".to_owned()));
}

#[test]
fn nats_seed_lists() {
    let seeds = BusUrl::nats_seeds("nats://a:4222, b:4223,tls://c.example.com,[::1]:4222").unwrap();
    assert_eq!(seeds, ["nats://a:4222", "nats://b:4223", "tls://c.example.com:4222", "nats://[::1]:4222"]);
    assert_eq!(BusUrl::Nats(seeds[..2].to_vec()).to_string(), "nats://a:4222,nats://b:4223");
    let error = BusUrl::nats_seeds("nats://a:4222,http://b:80").unwrap_err();
    assert!(error.starts_with("seed 2 of the list (\"http://b:80\") has the scheme"), "{error}");
    assert!(BusUrl::nats_seeds("nats://a:4222,,c:1").unwrap_err().starts_with("seed 2 of the list is empty"));
    assert!(BusUrl::nats_seeds("a:notaport").unwrap_err().starts_with("seed 1"));
    assert!(BusUrl::nats_seeds("a:4222/path").unwrap_err().contains("more than a host and port"));
    let error = BusUrl::nats_seeds("nats://me:hunter2@a:4222").unwrap_err();
    assert!(error.contains("holds credentials") && !error.contains("hunter2"), "{error}");

    let mut env = full_env();
    env.set("BUS_URL", "nats://a:4222,b:4222,c:4222");
    assert_eq!(load(ARCHITECTURE, &env).bus.url.to_string(), "nats://a:4222,nats://b:4222,nats://c:4222");
    env.set("BUS_URL", "nats://a:4222,b:x");
    assert_eq!(names(problems(ARCHITECTURE, &env)), ["BUS_URL"]);
}

#[test]
fn secrets_from_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ACME_TOKEN"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("api-secret"), "from-file\n").unwrap();
    let mut env = full_env();
    env.remove("ACME_TOKEN").remove("ACME_API_SECRET");
    env.set("SECRETS_DIR", dir.path().to_str().unwrap());
    env.set("ACME_API_SECRET_FILE", dir.path().join("api-secret").to_str().unwrap());
    let config = load(ARCHITECTURE, &env);
    let secrets = &config.connectors[0].secrets;
    assert_eq!(secrets["ACME_TOKEN"].as_ref().map(Secret::reveal), Some(TOKEN));
    assert_eq!(secrets["ACME_API_SECRET"].as_ref().map(Secret::reveal), Some("from-file"));
    env.set("ACME_API_SECRET_FILE", "/nonexistent/file");
    assert_eq!(names(problems(ARCHITECTURE, &env)), ["ACME_API_SECRET"]);
}

#[test]
fn outbound_hosts_include_overridden_base_urls() {
    let mut env = full_env();
    env.set("ACME_API_BASE_URL", "http://127.0.0.1:4010");
    let config = load(ARCHITECTURE, &env);
    assert_eq!(config.connectors[0].outbound_hosts, ["api.acme.example", "127.0.0.1"]);
}

#[test]
fn dotenv_files_parse_and_yield_to_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.env");
    std::fs::write(&path, "# comment\n\nA=1\nexport B=\"two words\"\nC='3'\n").unwrap();
    let file = Env::from_dotenv_file(&path).unwrap();
    assert_eq!((file.get("A"), file.get("B"), file.get("C")), (Some("1"), Some("two words"), Some("3")));
    let mut real = Env::default();
    real.set("A", "real");
    let merged = file.merged_under(real);
    assert_eq!((merged.get("A"), merged.get("B")), (Some("real"), Some("two words")));

    std::fs::write(&path, "A=1\nbroken line\n").unwrap();
    let error = Env::from_dotenv_file(&path).unwrap_err().to_string();
    assert!(error.contains("local.env is malformed") && error.contains("after A"), "{error}");
    // A malformed secret line is located, never quoted.
    std::fs::write(&path, "A=1\nTWILIO_AUTH_TOKEN=\"0123456789abcdef-unclosed\n").unwrap();
    let error = Env::from_dotenv_file(&path).unwrap_err().to_string();
    assert!(error.contains("after A") && !error.contains("0123456789abcdef"), "{error}");
    let error = Env::from_dotenv_file(&dir.path().join("missing.env")).unwrap_err().to_string();
    assert!(error.contains("missing.env"), "{error}");
}

#[test]
fn the_nats_section_takes_its_defaults_and_names_its_problems() {
    let config = load(ARCHITECTURE, &full_env());
    assert_eq!(config.bus.nats, NatsConfig::default());
    assert_eq!(config.bus.streams, BusConfig::default_streams());
    assert_eq!(config.bus.stream_of("egress.acme").map(|s| s.retention), Some(StreamRetention::WorkQueue));
    assert_eq!(config.bus.stream_of("ingress.acme.messages").map(|s| s.name.as_str()), Some("INGRESS"));
    assert!(config.bus.stream_of("ingress").is_none(), "`>` needs one more token");
    let text = ARCHITECTURE.replace(
        "    data_dir: ./data\n",
        "    data_dir: ./data\n    streams:\n      ALL: { subjects: [\"x.>\"], retention: forever }\n    nats:\n      secrets:\n        NATS_TOKEN: { pattern: \"^t-[0-9]+$\" }\n",
    );
    // Not in use (the bus is SQLite): the token is neither read nor checked.
    let mut env = full_env();
    env.set("NATS_TOKEN", "not-a-match");
    let topics = ["acme.topics.egress", "acme.topics.messages"];
    assert_eq!(names(problems(&text, &env)), [&["streams.ALL.retention"][..], &topics].concat());
    env.set("BUS_URL", "nats://127.0.0.1:4222");
    let found = problems(&text, &env);
    assert_eq!(names(found.clone()), [&["streams.ALL.retention", "NATS_TOKEN"][..], &topics].concat());
    assert!(found.iter().all(|p| !p.message.contains("not-a-match")), "{found:?}");
}

#[test]
fn a_connector_topic_needs_a_stream_and_egress_a_work_queue() {
    let text = ARCHITECTURE.replace(
        "    data_dir: ./data\n",
        "    data_dir: ./data\n    streams:\n      ALL: { subjects: [\"ingress.>\", \"egress.>\"] }\n",
    );
    let found = problems(&text, &full_env());
    assert_eq!(names(found.clone()), ["acme.topics.egress"]);
    assert!(found[0].message.contains("stream ALL, which is not a work queue"), "{found:?}");
}

#[test]
fn retention_and_the_duplicate_window_are_bounded() {
    let text = ARCHITECTURE.replace(
        "    data_dir: ./data\n",
        "    data_dir: ./data\n    bus_retention_hours: 0\n    nats:\n      duplicate_window_minutes: 100000000\n",
    );
    assert_eq!(names(problems(&text, &full_env())), ["bus_retention_hours", "bus_duplicate_window_minutes"]);
}

#[test]
fn the_duplicate_window_has_one_spelling_per_file_and_the_older_one_still_works() {
    let with = |lines: &str| ARCHITECTURE.replace("    data_dir: ./data\n", &format!("    data_dir: ./data\n{lines}"));
    let older = with("    nats:\n      duplicate_window_minutes: 5\n");
    assert_eq!(load(&older, &full_env()).bus.duplicate_window, Duration::from_secs(300));
    let newer = with("    bus_duplicate_window_minutes: 7\n");
    assert_eq!(load(&newer, &full_env()).bus.duplicate_window, Duration::from_secs(420));
    let both = with("    bus_duplicate_window_minutes: 7\n    nats:\n      duplicate_window_minutes: 5\n");
    assert_eq!(names(problems(&both, &full_env())), ["nats.duplicate_window_minutes"]);
    assert_eq!(
        names(problems(&with("    bus_duplicate_window_minutes: 0\n"), &full_env())),
        ["bus_duplicate_window_minutes"]
    );
}

#[test]
fn blobs_go_to_data_dir_media_unless_a_bucket_is_named_with_both_keys_or_neither() {
    let outbound = "          hosts_from_variables: [ACME_API_BASE_URL]\n";
    let on_disk = ARCHITECTURE.replace(outbound, &format!("{outbound}        blobs: {{}}\n"));
    let blobs = load(&on_disk, &full_env()).connectors[0].blobs.clone().unwrap();
    assert_eq!(blobs.place, BlobPlace::Dir(PathBuf::from("/srv/data/media")));
    assert_eq!(blobs.max_bytes, BlobsConfig::DEFAULT_MAX_BYTES);

    let in_bucket = on_disk
        .replace("blobs: {}", "blobs: { s3: { bucket: media, endpoint: \"http://127.0.0.1:9000\", prefix: /acme/ } }");
    let mut env = full_env();
    let BlobPlace::Bucket(bucket) = load(&in_bucket, &env).connectors[0].blobs.clone().unwrap().place else {
        panic!("a bucket")
    };
    assert_eq!(
        (bucket.bucket.as_str(), bucket.region.as_str(), bucket.prefix.as_str()),
        ("media", "us-east-1", "acme")
    );
    assert_eq!(bucket.credentials, None, "no keys: the environment's role");

    env.set("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE");
    let found = problems(&in_bucket, &env);
    assert_eq!(names(found.clone()), ["AWS_SECRET_ACCESS_KEY"]);
    assert!(found.iter().all(|p| !p.message.contains("AKIAEXAMPLE")), "{found:?}");
    env.set("AWS_SECRET_ACCESS_KEY", "bucket-secret-value");
    let BlobPlace::Bucket(bucket) = load(&in_bucket, &env).connectors[0].blobs.clone().unwrap().place else {
        panic!("a bucket")
    };
    let keys = bucket.credentials.unwrap();
    assert_eq!(keys.secret_access_key.reveal(), "bucket-secret-value");
    assert!(!format!("{keys:?}").contains("bucket-secret-value"), "keys print redacted");

    let broken =
        in_bucket.replace("bucket: media, endpoint: \"http://127.0.0.1:9000\"", "bucket: \"\", endpoint: ftp://x");
    assert_eq!(
        names(problems(&broken, &env)),
        ["connectors.acme.blobs.s3.bucket", "connectors.acme.blobs.s3.endpoint"]
    );
}

/// `credential_sets:` and `cache:` for `acme`, appended to its entry.
fn with_tenancy(extra: &str) -> String {
    ARCHITECTURE.replace(
        "        outbound:\n",
        &format!(
            "        credential_sets:\n          dir: acme-tenants\n          dir_variable: ACME_TENANTS_DIR\n{extra}        outbound:\n"
        ),
    ).replace("          ACME_API_BASE_URL: { format: url }\n", "          ACME_API_BASE_URL: { format: url }\n          ACME_TENANTS_DIR: { format: text }\n")
}

#[test]
fn credential_sets_take_their_shapes_from_the_connectors_own_declarations() {
    let text = with_tenancy(
        "          name_pattern: \"^AB[0-9a-f]{16}$\"\n          values: [ACME_TOKEN, ACME_SENDER]\n          required: [ACME_TOKEN]\n        cache: { max_entries: 50, fetches_per_second: 3 }\n",
    );
    let mut env = full_env();
    env.set("SECRETS_DIR", "/run/secrets");
    let config = load(&text, &env);
    let acme = &config.connectors[0];
    let sets = acme.credential_sets.as_ref().expect("granted");
    assert_eq!(sets.dir, Path::new("/run/secrets/acme-tenants"), "under secrets_dir by default");
    assert_eq!(sets.values.keys().collect::<Vec<_>>(), ["ACME_SENDER", "ACME_TOKEN"]);
    assert!(sets.values["ACME_TOKEN"][0].check("0123456789abcdef").is_ok());
    assert!(sets.values["ACME_TOKEN"][0].check("nope").is_err(), "the secret's own pattern");
    let cache = acme.cache.as_ref().expect("granted");
    assert_eq!((cache.max_entries, cache.fetches_per_second), (50, 3));
    assert_eq!(cache.concurrent_fetches, CacheConfig::default().concurrent_fetches);
    env.set("ACME_TENANTS_DIR", "/elsewhere/tenants");
    let moved = load(&text, &env);
    assert_eq!(moved.connectors[0].credential_sets.as_ref().unwrap().dir, Path::new("/elsewhere/tenants"));
}

#[test]
fn credential_sets_may_hold_only_declared_values() {
    let text = with_tenancy(
        "          values: [ACME_TOKEN, ACME_UNDECLARED]\n          required: [ACME_SENDER]\n        cache: { max_entries: 0 }\n",
    );
    let found = names(problems(&text, &full_env()));
    assert!(found.contains(&"acme.credential_sets.values".to_owned()), "{found:?}");
    assert!(found.contains(&"acme.credential_sets.required".to_owned()), "{found:?}");
    assert!(found.contains(&"acme.cache.max_entries".to_owned()), "{found:?}");
}

#[test]
fn wiring_parts_become_flags_that_cannot_shadow_the_commands_own() {
    let with_parts = |parts: &str| {
        ARCHITECTURE.replace("        outbound:\n", &format!("        wiring_parts: {parts}\n        outbound:\n"))
    };
    let config = load(&with_parts("[event-streams, v2]"), &full_env());
    assert_eq!(config.connectors[0].wiring_parts, ["event-streams", "v2"]);
    for bad in ["[dry-run]", "[Event-Streams]", "[\"event streams\"]", "[-x]", "[\"\"]"] {
        let found = names(problems(&with_parts(bad), &full_env()));
        assert_eq!(found, ["acme.wiring_parts"], "{bad}");
    }
}

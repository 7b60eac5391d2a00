use super::*;

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const KEY: &str = "SK0123456789abcdef0123456789abcdef";
const SERVICE: &str = "IS0123456789abcdef0123456789abcdef";

fn repo_architecture() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../architecture.yaml")).unwrap()
}

fn full_env() -> Env {
    [
        ("TWILIO_ACCOUNT_SID", ACCOUNT),
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("TWILIO_API_KEY", KEY),
        ("TWILIO_API_SECRET", "a-secret-value"),
        ("TWILIO_CHAT_SERVICE_SID", SERVICE),
    ]
    .into_iter()
    .collect()
}

fn problems(text: &str, env: &Env) -> Vec<Problem> {
    match parse(text, Path::new("/srv"), env) {
        Err(ParseFailure::Invalid(problems)) => problems,
        Err(ParseFailure::Syntax(message)) => panic!("syntax error: {message}"),
        Ok(_) => Vec::new(),
    }
}

#[test]
fn the_repository_architecture_loads_with_all_secrets() {
    let Ok(config) = parse(&repo_architecture(), Path::new("/srv"), &full_env()) else { panic!("invalid") };
    let twilio = &config.connectors[0];
    assert_eq!(twilio.name, "twilio");
    assert!(twilio.enabled);
    assert_eq!(twilio.component, ComponentSource::Bundled("twilio".into()));
    assert_eq!(twilio.topics["messaging"], "ingress.twilio.messaging");
    assert_eq!(twilio.variables["TWILIO_IDENTITY"], "ingress-egress");
    assert_eq!(config.bus_url, BusUrl::Sqlite(PathBuf::from("/srv/./data/bus.sqlite3")));
    assert_eq!(config.admin_addr, "127.0.0.1:9090".parse().unwrap());
}

#[test]
fn two_missing_and_one_malformed_are_all_named_without_values() {
    let mut env = full_env();
    env.remove("TWILIO_AUTH_TOKEN")
        .remove("TWILIO_CHAT_SERVICE_SID")
        .set("TWILIO_ACCOUNT_SID", "ACnot-a-sid-secretish");
    let found = problems(&repo_architecture(), &env);
    let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_CHAT_SERVICE_SID"], "{found:?}");
    let text = ConfigError::Invalid(found).to_string();
    assert!(text.contains("TWILIO_AUTH_TOKEN: missing"));
    assert!(text.contains("TWILIO_ACCOUNT_SID: malformed: expected AC followed by 32 hex digits"));
    assert!(!text.contains("secretish"));
}

#[test]
fn disabled_connector_needs_no_secrets() {
    let mut env = Env::default();
    env.set("TWILIO_ENABLED", "false");
    let Ok(config) = parse(&repo_architecture(), Path::new("/srv"), &env) else { panic!("invalid") };
    assert!(!config.connectors[0].enabled);
    assert_eq!(config.enabled_connectors().count(), 0);
}

#[test]
fn a_typo_in_a_key_is_named() {
    let text = repo_architecture().replace("listen_addr:", "listen_adr:");
    match parse(&text, Path::new("/srv"), &full_env()) {
        Err(ParseFailure::Syntax(message)) => assert!(message.contains("listen_adr"), "{message}"),
        _ => panic!("typo accepted"),
    }
    let text = repo_architecture().replace("enabled_by:", "enable_by:");
    match parse(&text, Path::new("/srv"), &full_env()) {
        Err(ParseFailure::Syntax(message)) => assert!(message.contains("enable_by"), "{message}"),
        _ => panic!("typo accepted"),
    }
}

#[test]
fn environment_overrides_and_bad_values() {
    let mut env = full_env();
    env.set("LISTEN_ADDR", "127.0.0.1:18080")
        .set("BUS_URL", "nats://127.0.0.1:4222")
        .set("CONNECTOR_TWILIO_COMPONENT", "/opt/twilio.wasm")
        .set("TWILIO_FROM_NUMBER", "+14155550100");
    let Ok(config) = parse(&repo_architecture(), Path::new("/srv"), &env) else { panic!("invalid") };
    assert_eq!(config.listen_addr, "127.0.0.1:18080".parse().unwrap());
    assert_eq!(config.bus_url, BusUrl::Nats("127.0.0.1:4222".into()));
    assert_eq!(config.connectors[0].component, ComponentSource::File("/opt/twilio.wasm".into()));

    env.set("LISTEN_ADDR", "nowhere")
        .set("BUS_URL", "redis://x")
        .set("TWILIO_FROM_NUMBER", "555")
        .set("TWILIO_ENABLED", "perhaps");
    let names: Vec<String> = problems(&repo_architecture(), &env).into_iter().map(|p| p.name).collect();
    assert!(names.contains(&"LISTEN_ADDR".to_owned()));
    assert!(names.contains(&"BUS_URL".to_owned()));
    assert!(names.contains(&"TWILIO_ENABLED".to_owned()));
}

#[test]
fn secrets_from_files_and_directories() {
    let dir = std::env::temp_dir().join(format!("ie-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("TWILIO_AUTH_TOKEN"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(dir.join("api-secret"), "from-file\n").unwrap();
    let mut env = full_env();
    env.remove("TWILIO_AUTH_TOKEN").remove("TWILIO_API_SECRET");
    env.set("SECRETS_DIR", dir.to_str().unwrap());
    env.set("TWILIO_API_SECRET_FILE", dir.join("api-secret").to_str().unwrap());
    let Ok(config) = parse(&repo_architecture(), Path::new("/srv"), &env) else { panic!("invalid") };
    let secrets = &config.connectors[0].secrets;
    assert_eq!(secrets["TWILIO_AUTH_TOKEN"].as_ref().map(Secret::reveal), Some(TOKEN));
    assert_eq!(secrets["TWILIO_API_SECRET"].as_ref().map(Secret::reveal), Some("from-file"));
    env.set("TWILIO_API_SECRET_FILE", "/nonexistent/file");
    let names: Vec<String> = problems(&repo_architecture(), &env).into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["TWILIO_API_SECRET"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn outbound_hosts_include_overridden_base_urls() {
    let mut env = full_env();
    env.set("TWILIO_API_BASE_URL", "http://127.0.0.1:4010");
    let Ok(config) = parse(&repo_architecture(), Path::new("/srv"), &env) else { panic!("invalid") };
    assert!(config.connectors[0].outbound_hosts.contains(&"127.0.0.1".to_owned()));
}

#[test]
fn dotenv_files_parse_and_yield_to_the_environment() {
    let file = Env::parse_dotenv("# comment\n\nA=1\nexport B=\"two words\"\nC='3'\nbroken line\n");
    assert_eq!((file.get("A"), file.get("B"), file.get("C")), (Some("1"), Some("two words"), Some("3")));
    let mut real = Env::default();
    real.set("A", "real");
    let merged = file.merged_under(real);
    assert_eq!((merged.get("A"), merged.get("B")), (Some("real"), Some("two words")));
}

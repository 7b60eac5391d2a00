//! A connector's own commands, `ingress-egress <connector> wire|status`:
//! pointing the provider's webhooks at this service. The connector does the
//! work through its `provisioning` export; the host parses the command line
//! and prints the report as a table.

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use super::{local_connectors, pick, refusal};
use crate::config::ServiceConfig;
use crate::runtime::Connector;
use crate::runtime::bindings::{SettingState, WiringReport};

/// A connector's own commands: point the provider's webhooks at this service, or show where they point.
#[derive(Debug, Parser)]
struct ConnectorCli {
    #[command(subcommand)]
    command: ConnectorCommand,
}

#[derive(Debug, Subcommand)]
enum ConnectorCommand {
    /// Point the provider's webhooks at this service; only what differs changes.
    Wire(WireArgs),
    /// Show what the provider's webhooks point at now, and what will not verify.
    Status(StatusArgs),
}

/// `wire`.
#[derive(Debug, Args)]
struct WireArgs {
    /// The URL the provider reaches this service at (the public listener), e.g. https://hooks.example.com.
    #[arg(long)]
    public_url: String,
    /// Print what would change and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    accounts: AccountArgs,
}

/// `status`.
#[derive(Debug, Args)]
struct StatusArgs {
    /// Compare with this URL (default: the connector's own setting, e.g. TWILIO_WEBHOOK_BASE_URL).
    #[arg(long)]
    public_url: Option<String>,
    #[command(flatten)]
    accounts: AccountArgs,
}

/// Which of the provider's accounts a command acts on.
#[derive(Debug, Clone, Args)]
struct AccountArgs {
    /// One account (a credential set's name, e.g. an Account SID); the default account when absent.
    #[arg(long, conflicts_with = "all_accounts")]
    account: Option<String>,
    /// The default account, then every account of the connector's credential sets.
    #[arg(long)]
    all_accounts: bool,
}

impl ConnectorCommand {
    fn accounts(&self) -> &AccountArgs {
        match self {
            Self::Wire(args) => &args.accounts,
            Self::Status(args) => &args.accounts,
        }
    }
}

/// The command line of `<connector> wire|status`, with a `--PART` flag for
/// each optional part the connector offers (`wiring_parts:` in
/// architecture.yaml): the host names no provider's parts itself.
fn command_with_parts(name: &str, parts: &[String]) -> clap::Command {
    let flag = |part: &String| {
        clap::Arg::new(part.clone())
            .long(part.clone())
            .action(clap::ArgAction::SetTrue)
            .help(format!("also the connector's optional part {part}"))
    };
    let mut command = ConnectorCli::command().bin_name(format!("ingress-egress {name}"));
    for subcommand in ["wire", "status"] {
        command = command.mut_subcommand(subcommand, |sub| parts.iter().fold(sub, |sub, part| sub.arg(flag(part))));
    }
    command
}

/// The parts whose flags `matches` holds.
fn parts_given(matches: &clap::ArgMatches, parts: &[String]) -> Vec<String> {
    let Some((_, sub)) = matches.subcommand() else { return Vec::new() };
    parts.iter().filter(|part| sub.get_flag(part)).cloned().collect()
}

/// A parsed `<connector> wire|status …` command line.
#[derive(Debug)]
pub struct Invocation {
    name: String,
    command: ConnectorCommand,
    parts: Vec<String>,
}

/// Parses `words` (`<connector> wire|status …`) against the connectors
/// architecture.yaml at `architecture` names, reading nothing else: `None`
/// when it asked for help (printed here), an error naming the commands and
/// connectors there are when the first word is neither.
pub fn parse(architecture: &std::path::Path, words: &[String]) -> anyhow::Result<Option<Invocation>> {
    let name = words.first().cloned().unwrap_or_default();
    let connectors = crate::config::connector_commands(architecture)?;
    let Some((_, offered)) = connectors.iter().find(|(connector, _)| *connector == name) else {
        let names: Vec<&str> = connectors.iter().map(|(connector, _)| connector.as_str()).collect();
        anyhow::bail!(
            "no command or connector named {name:?} (connectors: {}; see --help for the commands)",
            names.join(", ")
        )
    };
    let parsed = command_with_parts(&name, offered)
        .try_get_matches_from(words)
        .and_then(|matches| Ok((ConnectorCli::from_arg_matches(&matches)?, parts_given(&matches, offered))));
    match parsed {
        Ok((cli, parts)) => Ok(Some(Invocation { name, command: cli.command, parts })),
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            anyhow::bail!("{}", text.trim_start_matches("error: ").trim_end())
        }
        Err(help) => {
            print!("{}", help.render());
            Ok(None)
        }
    }
}

/// Runs a parsed `<connector> wire|status …` against the named connector.
pub async fn run(config: ServiceConfig, invocation: Invocation) -> anyhow::Result<()> {
    let Invocation { name, command, parts } = invocation;
    let cli = ConnectorCli { command };
    let connectors = local_connectors(&config).await?;
    let slot = pick(&connectors, Some(&name))?;
    let accounts: Vec<Option<String>> = match cli.command.accounts() {
        AccountArgs { all_accounts: true, .. } => std::iter::once(None)
            .chain(slot.grants().credential_sets.iter().flat_map(|sets| sets.names()).map(Some))
            .collect(),
        AccountArgs { account, .. } => vec![account.clone()],
    };
    let mut unsettled = 0;
    for account in &accounts {
        if accounts.len() > 1 {
            println!("== account {}", account.as_deref().unwrap_or("(default)"));
        }
        unsettled += run_for(&slot.current(), &cli.command, account.as_deref(), &parts).await?;
    }
    match (&cli.command, unsettled) {
        (_, 0) | (ConnectorCommand::Wire(WireArgs { dry_run: true, .. }), _) => Ok(()),
        (ConnectorCommand::Wire(_), n) => anyhow::bail!("{n} setting(s) could not be wired (see the notes above)"),
        (ConnectorCommand::Status(_), n) => {
            anyhow::bail!("{n} setting(s) do not point at this service (`wire` changes them)")
        }
    }
}

/// Runs the command for one account and prints its report; returns how many
/// settings are not where the command wants them.
async fn run_for(
    connector: &Connector,
    command: &ConnectorCommand,
    account: Option<&str>,
    parts: &[String],
) -> anyhow::Result<usize> {
    let report = match command {
        ConnectorCommand::Wire(args) => connector.wire(account, &args.public_url, args.dry_run, parts).await,
        ConnectorCommand::Status(args) => connector.inspect_wiring(account, args.public_url.as_deref(), parts).await,
    }
    .map_err(|failure| refusal(failure, |reason| reason))?;
    print!("{}", render(&report));
    let settled: fn(&SettingState) -> bool = match command {
        ConnectorCommand::Wire(_) => |s| matches!(s, SettingState::Wired | SettingState::Changed),
        ConnectorCommand::Status(_) => |s| matches!(s, SettingState::Wired),
    };
    Ok(report.settings.iter().filter(|s| !settled(&s.state)).count())
}

/// The report as an aligned table, then the notes and the warnings.
pub fn render(report: &WiringReport) -> String {
    let header = ["RESOURCE", "SETTING", "STATE", "NOW", "WANTED"].map(str::to_owned);
    let rows: Vec<[String; 5]> = report
        .settings
        .iter()
        .map(|s| {
            let now = if s.current.is_empty() { "(unset)".to_owned() } else { s.current.clone() };
            [s.resource.clone(), s.setting.clone(), state_name(&s.state).to_owned(), now, s.wanted.clone()]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for s in report.settings.iter().filter(|s| s.note.is_some()) {
        out.push_str(&format!("note: {} {}: {}\n", s.resource, s.setting, s.note.as_deref().unwrap_or_default()));
    }
    for warning in &report.warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}

fn state_name(state: &SettingState) -> &'static str {
    match state {
        SettingState::Wired => "wired",
        SettingState::WouldChange => "would change",
        SettingState::Changed => "changed",
        SettingState::Blocked => "blocked",
        SettingState::Failed => "failed",
    }
}

//! The `steward` binary: parses the command line and hands over to `steward::cli`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use steward::auth::Role;
use steward::cli::{self, Output, RemoteArgs};

#[derive(Parser)]
#[command(
    name = "steward",
    version,
    about = "The operations layer of a production system: health checks against real protocols, alerting with durable notifications, incidents with escalation and on-call, a store, an API and a status page.",
    long_about = None,
    after_help = "Start here:
  steward demo                                   run a demo fleet and open its status page
  steward validate -c steward.yaml               report every problem in a configuration
  steward check -c steward.yaml                  run every check once (exit 1 if any is unhealthy)
  steward serve -c steward.yaml --data /var/lib/steward --listen 127.0.0.1:8080
  steward token create --data /var/lib/steward --name ci --role viewer
  steward route test -c steward.yaml alertname=ApiDown severity=critical
  steward alerts --token $TOKEN                  what is firing, and what mutes it
  steward silence create --token $TOKEN -m alertname=ApiDown --duration 2h --comment 'deploy #812'
  steward incident list --token $TOKEN           open incidents; `incident ack ID`, `incident show ID`
  steward oncall --token $TOKEN                  who is on call now, and next
  steward backup list -c steward.yaml -d /var/lib/steward    backups, sizes, last verification

Exit codes, the same for every command:
  0  done: the configuration is valid, every check healthy, the action done
  1  unhealthy or failed: a check is unhealthy, a verification failed, the action failed
  2  invalid input or configuration: nothing was run
  3  busy: another backup of the same source runs; try again later
  4  refused: a restore target holds data (no --force), or it was not confirmed"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text", env = "STEWARD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration and report every error with file:line:column and a hint.
    ///
    /// Secrets need not be here: a `${env:…}` that is not set or a `${file:…}` that
    /// cannot be read is a warning at each place it is written (what depends on its
    /// value, such as a URL given whole by reference, is checked when it is set);
    /// `steward serve` still requires them. `--require-secrets` makes them errors, for
    /// a check on the production machine itself.
    ///
    /// Exits 0 when the configuration is valid and 2 when it is not (as every command
    /// exits 2 on an invalid configuration).
    Validate {
        /// A YAML file, or a directory whose *.yaml / *.yml files form one configuration.
        #[arg(short, long, env = "STEWARD_CONFIG")]
        config: PathBuf,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// Treat an unset secret reference as an error, as `steward serve` does.
        #[arg(long)]
        require_secrets: bool,
    },
    /// Run checks once, concurrently, and print their results.
    ///
    /// Thresholds do not apply: each check's single run decides. Exits 0 when all are
    /// healthy, 1 when any is unhealthy, 2 when the configuration is invalid.
    Check {
        /// A YAML file, or a directory whose *.yaml / *.yml files form one configuration.
        #[arg(short, long, env = "STEWARD_CONFIG")]
        config: PathBuf,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// A server's data directory: `backup` checks read its records (without it they
        /// are skipped).
        #[arg(short, long, env = "STEWARD_DATA")]
        data: Option<PathBuf>,
        /// Only these checks (default: all).
        names: Vec<String>,
    },
    /// Run every check on its schedule, keep results in the data directory, and serve
    /// the API, metrics and status page.
    ///
    /// SIGHUP reloads the configuration (validated first; on error the running one stays).
    /// SIGTERM or Ctrl-C stops gracefully.
    Serve {
        /// A YAML file, or a directory whose *.yaml / *.yml files form one configuration.
        #[arg(short, long, env = "STEWARD_CONFIG")]
        config: PathBuf,
        /// Directory for the embedded store (created if missing) and local files.
        #[arg(short, long, env = "STEWARD_DATA")]
        data: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// Address and port for the API, /metrics and the status page.
        #[arg(short, long, default_value = "127.0.0.1:8080", env = "STEWARD_LISTEN")]
        listen: SocketAddr,
        /// Probes in flight at once across all checks.
        #[arg(long, default_value_t = 1024)]
        max_concurrency: usize,
        /// Keep raw results this long, then fold them into hourly rollups (e.g. 6h, 2d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        raw_retention: std::time::Duration,
        /// Keep finished runbook runs (steps, output, audit events) this long.
        #[arg(long, default_value = "90d", value_parser = parse_duration)]
        run_retention: std::time::Duration,
        /// Do not serve the status page at `/` (it is public, like /health and /metrics).
        #[arg(long)]
        no_status_page: bool,
        /// The URL people use to reach this server (behind a proxy, say); notifications
        /// link to it. Default: http:// and the listen address.
        #[arg(long, env = "STEWARD_EXTERNAL_URL", value_parser = parse_external_url)]
        external_url: Option<String>,
        /// Serve HTTPS with this certificate chain (PEM); with --tls-key. Both files are
        /// read again on SIGHUP, so a renewed certificate needs no restart.
        #[arg(long, env = "STEWARD_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, env = "STEWARD_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// With --store postgres://…: the URL other replicas forward requests to when
        /// this one leads (its own address on the replicas' network, e.g. a pod IP).
        /// Default: --external-url.
        #[arg(long, env = "STEWARD_ADVERTISE_URL", value_parser = parse_external_url)]
        advertise_url: Option<String>,
        /// With --store postgres://…: how long the leadership lasts unless renewed, so
        /// how long work waits when the leader dies (renewed every third of it; 3s to 5m).
        #[arg(long, default_value = "15s", value_parser = parse_lease_ttl, env = "STEWARD_LEASE_TTL")]
        lease_ttl: std::time::Duration,
    },
    /// List the alerts of a running server: state, since when, and what mutes them.
    /// With a fingerprint: that alert's history and every notification sent about it.
    Alerts {
        /// One alert's fingerprint (the FINGERPRINT column of the list).
        fingerprint: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Service level objectives: the figures of a running server (objective, SLI and
    /// error budget left over the window, burn rate, when the budget runs out), or the
    /// configuration's SLOs as Prometheus rules.
    ///
    /// Examples:
    ///   steward slo list
    ///   steward slo show api-availability -o json
    ///   steward slo export --prometheus-rules -c steward.yaml > slo.rules.yml
    #[command(verbatim_doc_comment)]
    Slo {
        #[command(subcommand)]
        action: SloAction,
    },
    /// Incidents on a running server: list, show, declare, ack, note, mitigate, resolve,
    /// close, assign roles, escalate, action items, postmortem, stats.
    ///
    /// Examples:
    ///   steward incident list
    ///   steward incident ack 12 --note "looking at the auth pods"
    ///   steward incident note 12 "Logins fail for some users; investigating" --public
    ///   steward incident postmortem 12 -f review-12.md
    #[command(verbatim_doc_comment)]
    Incident {
        #[command(subcommand)]
        action: cli::incidents::IncidentAction,
    },
    /// Start a runbook on a running server, or show its plan with --dry-run.
    ///
    /// Parameters reach shell steps only as environment variables (`-p node=db-2` is
    /// $NODE), never as script text. Exit code with --follow: 0 if the run succeeded.
    ///
    /// Examples:
    ///   steward run redis-memory-maintenance -p host=127.0.0.1 --dry-run
    ///   steward run rolling-repair -p nodes=db-1,db-2,db-3 --follow
    #[command(verbatim_doc_comment)]
    Run(cli::runs::RunArgs),
    /// Runbook runs on a running server: list, show, follow, approve, deny, cancel,
    /// resume, retry, audit.
    ///
    /// Examples:
    ///   steward runs list --status interrupted
    ///   steward runs approve 42 --comment "replica lag checked: 0.3s"
    ///   steward runs resume 42 --follow
    #[command(verbatim_doc_comment)]
    Runs {
        #[command(subcommand)]
        action: cli::runs::RunsAction,
    },
    /// The runbooks a running server knows, or one runbook's parameters and steps.
    Runbooks {
        /// Show this runbook in full (parameters, steps, schedules) instead of the list.
        name: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Markdown runbooks in and out: import a team's prose runbook as reviewable
    /// Steward runbooks, or export one as Markdown for the team's docs. Offline.
    ///
    /// Import: each section with shell blocks becomes a runbook, each ```bash block one
    /// step; $VARS and <placeholders> become parameters; destructive commands (DROP,
    /// rm -rf, kubectl delete, promote, failover…) get an approval step before them;
    /// other blocks are kept as comments. `--report` says what was not converted.
    ///
    /// Examples:
    ///   steward runbook import docs/failover.md --out runbooks/failover.yaml --report
    ///   steward runbook export restart-messaging -c steward.yaml > docs/restart.md
    #[command(verbatim_doc_comment)]
    Runbook {
        #[command(subcommand)]
        action: RunbookAction,
    },
    /// Action items recorded across incidents.
    ActionItems {
        #[command(flatten)]
        remote: RemoteArgs,
        /// open, done or all.
        #[arg(long, default_value = "open")]
        state: String,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Who is on call now (or at --at), per schedule, and who is next.
    ///
    /// Add an override: steward oncall --schedule primary --override dave --from "2026-12-24 09:00" --until "2026-12-27 09:00"
    /// (times in the schedule's zone, or RFC 3339).
    #[command(verbatim_doc_comment)]
    Oncall {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Only this schedule; with --override, the schedule to change.
        #[arg(long)]
        schedule: Option<String>,
        /// An instant (RFC 3339, or `YYYY-MM-DD HH:MM` in UTC); default now.
        #[arg(long)]
        at: Option<String>,
        /// Put this person on call in --schedule from --from until --until.
        #[arg(long = "override", requires_all = ["schedule", "from", "until"])]
        override_person: Option<String>,
        /// With --override: when it starts (`YYYY-MM-DD HH:MM` in the schedule's zone, or RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// With --override: when it ends (`YYYY-MM-DD HH:MM` in the schedule's zone, or RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Create, list and expire silences on a running server.
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
    },
    /// Explain routing: which receivers an alert with given labels reaches, and why.
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },
    /// Backups: take, list, show, verify (by restoring), restore, prune; keygen.
    ///
    /// Runs in this process with the configuration and the data directory (no server
    /// needed, so a restore works when the server is down).
    ///
    /// Examples:
    ///   steward backup run orders-db -c steward.yaml -d /var/lib/steward
    ///   steward backup list -c steward.yaml -d /var/lib/steward
    ///   steward backup verify --latest --restore-test -c steward.yaml -d /var/lib/steward
    ///   steward backup restore 20261122T020000Z-7f3a --to postgres://127.0.0.1/orders_check --dry-run -c … -d …
    ///   steward backup prune --dry-run -c steward.yaml -d /var/lib/steward
    #[command(verbatim_doc_comment)]
    Backup {
        #[command(subcommand)]
        action: cli::backups::BackupAction,
    },
    /// PostgreSQL's WAL archive: `push` as archive_command, `fetch` as restore_command.
    ///
    /// Files go into the policy's repository compressed, encrypted and checksummed like
    /// backups; success is reported only once a file is stored and read back.
    ///
    /// Examples (postgresql.conf):
    ///   archive_command = 'steward wal push %p --policy orders-db -c /etc/steward/steward.yaml'
    ///   restore_command = 'steward wal fetch %f %p --policy orders-db -c /etc/steward/steward.yaml'
    #[command(verbatim_doc_comment)]
    Wal {
        #[command(subcommand)]
        action: cli::wal::WalAction,
    },
    /// Manage API tokens in a data directory.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage the server's own keys in a data directory.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// The replicas sharing a PostgreSQL store: which leads, under which term, and when
    /// each last said it was alive.
    ///
    ///   steward cluster status --store 'postgres://steward:${env:PGPASSWORD}@db/steward'
    #[command(verbatim_doc_comment)]
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Move the state between stores (SQLite to PostgreSQL, for several replicas).
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Ask a running server whether it is ready (`GET /health/ready`: store writable,
    /// configuration loaded); for container health checks and scripts. No token needed.
    ///
    /// Exits 0 when ready, 1 when not (or unreachable).
    Ready {
        /// The server's base URL (`host:port` means http://host:port).
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "STEWARD_SERVER")]
        server: String,
    },
    /// Print a shell completion script.
    ///
    ///   steward completions bash > /etc/bash_completion.d/steward
    ///   steward completions zsh > "${fpath[1]}/_steward"
    ///   steward completions fish > ~/.config/fish/completions/steward.fish
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write man pages — steward.1 and one per subcommand (steward-serve.1, …) — into a
    /// directory.
    ///
    ///   steward man --out /usr/local/share/man/man1
    #[command(verbatim_doc_comment)]
    Man {
        /// Where to write the pages (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Start a demo fleet on loopback, a configuration for it, and a server.
    Demo {
        /// Keep the demo's data here (default: a new directory under the system temp dir).
        #[arg(short, long)]
        data: Option<PathBuf>,
        /// Address and port for the demo's Steward server (the demo fleet picks a free port of its own).
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum SloAction {
    /// Every SLO: objective, SLI and budget left over the window, the fastest burn now,
    /// and when the budget runs out at that rate.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One SLO: its figures, and per burn-rate alert the burn over both windows and
    /// whether the alert's condition holds (or too little traffic holds it back).
    Show {
        /// The SLO's name, as `steward slo list` shows it.
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Turn OpenSLO v1 documents (SLO, SLI, AlertPolicy, AlertCondition; several per
    /// file) into Steward's `slos:` section on standard output. What Steward cannot
    /// honour (threshold metrics, non-Prometheus sources, several objectives,
    /// RatioTimeslices, …) is an error at file:line:column, exit code 2.
    ///
    /// Example: steward slo import openslo/*.yaml > slos.yaml
    #[command(verbatim_doc_comment)]
    Import {
        /// OpenSLO YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the configuration's SLOs as a Prometheus rule file (Sloth's names and
    /// labels) over the steward_slo_events_total and steward_slo_good_events_total
    /// counters every Steward server exposes at /metrics. Exits 2 when the
    /// configuration is invalid or an SLO cannot be written as rules (timeslices).
    Export {
        /// A YAML file, or a directory whose *.yaml / *.yml files form one configuration.
        #[arg(short, long, env = "STEWARD_CONFIG")]
        config: PathBuf,
        /// Write Prometheus recording and alerting rules (the one format so far).
        #[arg(long, required = true)]
        prometheus_rules: bool,
    },
}

#[derive(Subcommand)]
enum SilenceAction {
    /// Mute notifications of alerts matching every matcher, for a while.
    ///
    /// Example: steward silence create -m 'alertname="ApiDown"' -m 'env=prod' --duration 2h --comment "deploy #812"
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        /// A label matcher: name=value, name!=value, name=~regex or name!~regex (repeatable).
        #[arg(short, long = "matcher", required = true)]
        matchers: Vec<String>,
        /// How long, from now (e.g. 30m, 2h; at most 36500d).
        #[arg(long)]
        duration: String,
        /// Why: the next person on call reads it.
        #[arg(long)]
        comment: String,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List silences (active, pending and expired).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// End a silence now.
    Expire {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The silence's ID, as `steward silence list` shows it.
        id: String,
    },
}

#[derive(Subcommand)]
enum RouteAction {
    /// Print the receivers an alert with these labels would be sent to.
    ///
    /// Example: steward route test -c steward.yaml alertname=ApiDown severity=critical team=chat
    Test {
        /// A YAML file, or a directory whose *.yaml / *.yml files form one configuration.
        #[arg(short, long, env = "STEWARD_CONFIG")]
        config: PathBuf,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        /// LABEL=VALUE pairs.
        labels: Vec<String>,
    },
}

/// Where the state is kept, when not in the data directory.
#[derive(clap::Args)]
struct StoreArg {
    /// Keep the state in PostgreSQL (several replicas share it) instead of SQLite in
    /// --data: postgres://USER@HOST:PORT/DB, the password by reference, e.g.
    /// postgres://steward:${env:PGPASSWORD}@db:5432/steward. Overrides `store:` in the
    /// configuration.
    #[arg(long, env = "STEWARD_STORE")]
    store: Option<String>,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// List the replicas (id, address, version, schema, last heartbeat) and the lease.
    Status {
        /// The shared store: postgres://USER@HOST:PORT/DB (password by reference).
        #[arg(long, env = "STEWARD_STORE")]
        store: String,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum RunbookAction {
    /// Turn a Markdown runbook into a YAML draft `steward validate` accepts (stdout, or --out).
    Import {
        /// The Markdown file.
        file: PathBuf,
        /// Write the YAML here (whole or not at all) instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print on stderr what was not converted, what needs an approval and why, and
        /// the parameters found.
        #[arg(long)]
        report: bool,
    },
    /// Write one runbook of a configuration as Markdown (stdout, or --out).
    Export {
        /// The runbook's name.
        name: String,
        /// The configuration holding it.
        #[arg(short, long, env = "STEWARD_CONFIG")]
        config: PathBuf,
        /// Write the Markdown here (whole or not at all) instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Move an installation from SQLite to PostgreSQL whole: tokens, check history,
    /// alerts, notifications, incidents and timelines, runs and their audit trail,
    /// backup records and the server's keys, ids kept. One transaction on the
    /// destination, committed only when every table's row count matches; the
    /// destination must be empty. Stop the server first.
    ///
    ///   steward store copy --from sqlite:/var/lib/steward \
    ///       --to 'postgres://steward:${env:PGPASSWORD}@db:5432/steward'
    #[command(verbatim_doc_comment)]
    Copy {
        /// The SQLite store: sqlite:DIR, DIR being the server's --data directory.
        #[arg(long)]
        from: String,
        /// The PostgreSQL store: postgres://USER@HOST:PORT/DB (password by reference).
        #[arg(long)]
        to: String,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print its secret (only this once).
    Create {
        /// The server's data directory (its store, keys and tokens).
        #[arg(short, long, env = "STEWARD_DATA")]
        data: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// A name for the token, unique; `token list` shows it and `token revoke --name` takes it.
        #[arg(short, long)]
        name: String,
        /// viewer reads; operator also acts (runs checks); admin also reloads config and manages tokens.
        #[arg(short, long, value_parser = parse_role)]
        role: Role,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List tokens (never their secrets).
    List {
        /// The server's data directory (its store, keys and tokens).
        #[arg(short, long, env = "STEWARD_DATA")]
        data: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Revoke a token by name; requests with it are refused from then on.
    Revoke {
        /// The server's data directory (its store, keys and tokens).
        #[arg(short, long, env = "STEWARD_DATA")]
        data: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// The token's name, as `steward token list` shows it.
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Replace a key with a fresh random one. `acknowledge-links` signs the acknowledge
    /// links in pages: rotate it if a copy of the data directory leaked. Every link sent
    /// before stops working at once (people use `steward incident ack` meanwhile); pages
    /// sent after carry links signed with the new key. `calendar-feeds` signs the secret
    /// iCal URLs of on-call schedules: rotate it when a feed URL leaked; everyone copies
    /// the new URLs from the console's on-call page. Safe while the server runs.
    ///
    ///   steward keys rotate acknowledge-links --data /var/lib/steward
    #[command(verbatim_doc_comment)]
    Rotate {
        /// The key to rotate.
        #[arg(value_parser = ["acknowledge-links", "calendar-feeds"])]
        key: String,
        /// The server's data directory (its store, keys and tokens).
        #[arg(short, long, env = "STEWARD_DATA")]
        data: PathBuf,
        #[command(flatten)]
        store: StoreArg,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn parse_external_url(s: &str) -> Result<String, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(s.trim_end_matches('/').to_string()),
        Ok(u) => Err(format!("scheme `{}` is not http or https", u.scheme())),
        Err(e) => Err(format!("not a URL ({e}); write e.g. https://steward.example.com")),
    }
}

fn parse_lease_ttl(s: &str) -> Result<std::time::Duration, String> {
    let ttl = parse_duration(s)?;
    if !(std::time::Duration::from_secs(3)..=std::time::Duration::from_secs(300)).contains(&ttl) {
        return Err("the lease TTL must be between 3s and 5m: shorter fails over on a hiccup, longer leaves work undone".into());
    }
    Ok(ttl)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    steward::config::duration::parse_duration(s)
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("STEWARD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let json = matches!(format, LogFormat::Json);
    // Colours only for a person at a terminal: journald, files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(steward::telemetry::CappedStderr { json });
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // Everything steward creates — the database, spooled dumps, backup objects in a
    // local repository, scratch instances' files — is readable by its owner only,
    // whatever umask it was started with. (Restored files keep their archived modes.)
    // SAFETY: umask only sets this process's file-creation mask; no threads run yet.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    // A command whose output is piped into `head` ends quietly when the reader goes
    // away, as Unix tools do (Rust ignores SIGPIPE, so println! would panic on the
    // closed pipe). Not the server: a runbook step's closed pipe must not stop it.
    if !matches!(cli.command, Command::Serve { .. } | Command::Demo { .. }) {
        // SAFETY: restores the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // `steward backup` reports for itself; its logs say only what went wrong.
    let default_level = if matches!(cli.command, Command::Backup { .. }) { "warn" } else { "info" };
    init_logging(cli.log_format, default_level);
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "steward", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { out } => {
            let written = std::fs::create_dir_all(out).and_then(|()| clap_mangen::generate_to(Cli::command(), out));
            return match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write man pages into {}: {e}", out.display());
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("starting the async runtime");
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Validate { config, output, require_secrets } => cli::validate::run(&config, output, require_secrets),
            Command::Check { config, output, data, names } => cli::check::run(&config, &names, output, data.as_deref()).await,
            Command::Serve {
                config,
                data,
                store,
                listen,
                max_concurrency,
                raw_retention,
                run_retention,
                no_status_page,
                external_url,
                tls_cert,
                tls_key,
                advertise_url,
                lease_ttl,
            } => {
                let opts = cli::serve::ServeOptions {
                    config,
                    data,
                    store: store.store,
                    listen,
                    max_concurrency,
                    raw_retention,
                    run_retention,
                    status_page: !no_status_page,
                    external_url,
                    tls: tls_cert.zip(tls_key),
                    advertise_url,
                    lease_ttl,
                };
                cli::serve::run(opts, None).await
            }
            Command::Alerts { fingerprint: None, remote, output } => cli::alerts::list_alerts(&remote.remote(), output).await,
            Command::Alerts { fingerprint: Some(fp), remote, output } => cli::alerts::show_alert(&remote.remote(), &fp, output).await,
            Command::Slo { action } => match action {
                SloAction::List { remote, output } => cli::alerts::slos(&remote.remote(), None, output).await,
                SloAction::Show { name, remote, output } => cli::alerts::slos(&remote.remote(), Some(&name), output).await,
                SloAction::Export { config, prometheus_rules: _ } => cli::alerts::export_slos(&config),
                SloAction::Import { files } => cli::alerts::import_slos(&files),
            },
            Command::Incident { action } => cli::incidents::run(action).await,
            Command::Wal { action } => cli::wal::run(action).await,
            Command::Run(args) => cli::runs::run(args).await,
            Command::Runs { action } => cli::runs::runs(action).await,
            Command::Runbooks { name, remote, output } => cli::runs::list_runbooks(&remote.remote(), name.as_deref(), output).await,
            Command::ActionItems { remote, state, output } => cli::incidents::action_items(&remote.remote(), &state, output).await,
            Command::Oncall { remote, schedule, override_person: Some(person), from, until, .. } => {
                let (schedule, from, until) = (schedule.unwrap_or_default(), from.unwrap_or_default(), until.unwrap_or_default());
                cli::incidents::add_override(&remote.remote(), &schedule, &person, &from, &until).await
            }
            Command::Oncall { remote, schedule, at, override_person: None, output, .. } => {
                cli::incidents::oncall(&remote.remote(), schedule.as_deref(), at.as_deref(), output).await
            }
            Command::Silence { action } => match action {
                SilenceAction::Create { remote, matchers, duration, comment, output } => {
                    cli::alerts::create_silence(&remote.remote(), &matchers, &duration, &comment, output).await
                }
                SilenceAction::List { remote, output } => cli::alerts::list_silences(&remote.remote(), output).await,
                SilenceAction::Expire { remote, id } => cli::alerts::expire_silence(&remote.remote(), &id).await,
            },
            Command::Route { action } => match action {
                RouteAction::Test { config, output, labels } => cli::alerts::route_test(&config, &labels, output),
            },
            Command::Keys { action: KeysAction::Rotate { key, data, store } } => {
                cli::token::rotate_key(&data, store.store.as_deref(), &key).await
            }
            Command::Token { action } => match action {
                TokenAction::Create { data, store, name, role, output } => {
                    cli::token::create(&data, store.store.as_deref(), &name, role, output).await
                }
                TokenAction::List { data, store, output } => cli::token::list(&data, store.store.as_deref(), output).await,
                TokenAction::Revoke { data, store, name } => cli::token::revoke(&data, store.store.as_deref(), &name).await,
            },
            Command::Runbook { action: RunbookAction::Import { file, out, report } } => cli::runbook::import(&file, out.as_deref(), report),
            Command::Runbook { action: RunbookAction::Export { name, config, out } } => {
                cli::runbook::export(&config, &name, out.as_deref())
            }
            Command::Store { action: StoreAction::Copy { from, to, output } } => cli::store::copy(&from, &to, output).await,
            Command::Cluster { action: ClusterAction::Status { store, output } } => cli::store::cluster_status(&store, output).await,
            Command::Demo { data, listen } => cli::demo::run(data, listen).await,
            Command::Completions { .. } | Command::Man { .. } => unreachable!("answered before the runtime starts"),
            Command::Ready { server } => cli::check::ready(&server).await,
            Command::Backup { action } => cli::backups::run(action).await,
        }
    });
    // Probe tasks may still be parked on a hung target; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Cli;
    use clap::CommandFactory;

    /// Every command, with its path from the root (`steward backup restore`).
    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            walk(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    fn commands() -> Vec<(String, clap::Command)> {
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk(&cmd, "steward".into(), &mut out);
        out
    }

    /// `--help` teaches: every command says what it does and every argument what it
    /// takes (an argument without help shows as a bare name).
    #[test]
    fn every_command_and_argument_has_help() {
        let mut missing = Vec::new();
        for (path, cmd) in commands() {
            if cmd.get_about().is_none() && path != "steward help" && !path.starts_with("steward help ") {
                missing.push(format!("{path}: no description"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: argument `{id}` has no help"));
                }
            }
        }
        assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
    }

    /// A short flag means one thing everywhere: `-d` is `--data` in every command
    /// that has it.
    #[test]
    fn a_short_flag_means_one_thing_everywhere() {
        let mut meaning: BTreeMap<char, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for (path, cmd) in commands() {
            for arg in cmd.get_arguments() {
                if let Some(short) = arg.get_short() {
                    let long = arg.get_long().unwrap_or(arg.get_id().as_str()).to_string();
                    meaning.entry(short).or_default().entry(long).or_default().push(path.clone());
                }
            }
        }
        let clashes: Vec<String> =
            meaning.iter().filter(|(_, longs)| longs.len() > 1).map(|(short, longs)| format!("-{short}: {longs:?}")).collect();
        assert!(clashes.is_empty(), "short flags with two meanings:\n{}", clashes.join("\n"));
    }
}

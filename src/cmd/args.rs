//! The command line's words: clap definitions, and the plain values they
//! become before anything below the command layer sees them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::job::ServiceAction as EngineServiceAction;
// Parsed as clap reads the flag: a bad value is a usage error naming it.
use crate::model::logs::{Priority, Since};
use crate::model::params::ParamValues;
use crate::model::parse_duration;
use crate::model::schema::Kind;
use crate::render::plan::Format;

use super::logging::LogFormat;

/// `-i INVENTORY`, where a command needs one.
#[derive(Debug, Args)]
pub struct InventoryArg {
    /// The inventory: a YAML file, a directory of them, or an executable printing it as JSON.
    #[arg(short, long)]
    pub inventory: PathBuf,
}

/// `--retry` and its companions, on plan (a preview) and apply.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Run again only what did not end `ok` in this job report: its failed,
    /// unreachable and stopped hosts, from the first step that did not end
    /// `ok` there; a restart that already succeeded is not repeated.
    #[arg(long, value_name = "REPORT")]
    pub retry: Option<PathBuf>,
    /// With --retry: run the retried hosts' steps from the first one.
    #[arg(long, requires = "retry")]
    pub retry_from_start: bool,
    /// With --retry or --resume: go on although the playbook, inventory or
    /// params changed since the report or journal was written.
    #[arg(long)]
    pub retry_changed: bool,
}

/// `--forks` of the commands that change hosts.
#[derive(Debug, Args)]
pub struct WorkForks {
    /// Hosts worked on in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
}

/// `--timeout` of the commands that read hosts.
#[derive(Debug, Args)]
pub struct ReadTimeout {
    /// Give up on a host that has not answered after this long; it is then
    /// that host's error and the others are reported.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `--param` and `--params-file` of the commands that run a playbook.
#[derive(Debug, Args)]
pub struct ParamArgs {
    /// A value for one of the playbook's `params:` (repeatable); wins over
    /// --params-file. Secret values belong in --params-file: a command
    /// line is visible to every user of the machine.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub param: Vec<String>,
    /// Values for the playbook's `params:` from a YAML or JSON file: a
    /// mapping of names to values.
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,
}

impl ParamArgs {
    /// The values given, the file's first and the flags over them.
    pub fn values(&self) -> crate::model::error::Result<ParamValues> {
        let mut values = match &self.params_file {
            Some(f) => ParamValues::from_file(f)?,
            None => ParamValues::none(),
        };
        let mut flags = ParamValues::none();
        for p in &self.param {
            flags.flag(p)?;
        }
        values = values.overlaid(flags);
        Ok(values)
    }
}

/// drover: declarative batch runbooks for systemd services.
///
/// Playbooks (YAML) describe ordered service operations over an inventory
/// of hosts. `plan` shows what would change without changing anything;
/// `apply` does it over SSH or the local D-Bus and writes a job report.
#[derive(Debug, Parser)]
#[command(
    name = "drover",
    version,
    about,
    long_about,
    max_term_width = 100,
    after_long_help = book!("introduction.md", "Introduction")
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Colour: auto (on a TTY and without NO_COLOR), always or never.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    pub color: Color,
    /// Logs: auto (journald with structured fields when stderr is the
    /// journal, as under systemd; else text), text, json (one object a
    /// line on stderr) or journald.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// On a TTY unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Output format of report-producing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Lines for people.
    Text,
    /// The job report JSON on stdout.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a playbook (and with -i, its targets and templates); touches nothing.
    #[command(after_long_help = book!("guide/playbooks.md", "Playbooks"))]
    Check(CheckArgs),
    /// Show what apply would change, per host, as a diff; changes nothing.
    #[command(after_long_help = book!("guide/plan.md", "Plan and review"))]
    Plan(PlanArgs),
    /// Run a playbook against the inventory and write a job report.
    #[command(after_long_help = book!("guide/apply.md", "Apply"))]
    Apply(Box<ApplyArgs>),
    /// List units per host: status, start time, uptime.
    #[command(after_long_help = book!("reference/commands.md", "Commands at a glance"))]
    Status(StatusArgs),
    /// One ad-hoc operation on one unit over the targeted hosts.
    #[command(after_long_help = book!("reference/commands.md", "Commands at a glance"))]
    Service(ServiceArgs),
    /// Read unit facts from hosts into a file that `plan --facts` reads.
    #[command(after_long_help = book!("reference/facts.md", "The facts file"))]
    Facts(FactsArgs),
    /// Print the JSON Schema of playbook or inventory files (for editors).
    #[command(after_long_help = book!("reference/file-formats.md", "File formats and JSON Schemas"))]
    Schema {
        /// Which file format.
        #[arg(value_enum)]
        kind: SchemaKind,
    },
    /// Set or clear maintenance on hosts or a unit (kept on the hosts).
    #[command(after_long_help = book!("guide/maintenance.md", "Maintenance, unit files and health"))]
    Maintenance(MaintenanceArgs),
    /// Read a unit's journal on many hosts at once, each line prefixed by its host.
    #[command(after_long_help = book!("guide/logs.md", "Unit logs"))]
    Logs(LogsArgs),
    /// Aggregate a unit's health over hosts; exits 0/1/2/3 (passing/warning/critical/unknown).
    #[command(after_long_help = book!("guide/maintenance.md", "Maintenance, unit files and health"))]
    Health(HealthArgs),
    /// Serve the HTTP API (osapi node services, jobs, runbooks) over the same engine.
    #[command(after_long_help = book!("guide/serve.md", "Serve: the HTTP API"))]
    Serve(Box<super::serve::ServeArgs>),
    /// Work the hosts of a region for cluster mode (`serve --nats`): hold
    /// their leases in NATS JetStream and answer their reads.
    #[command(after_long_help = book!("guide/cluster.md", "Cluster mode"))]
    Worker(super::cluster::WorkerArgs),
    /// Print the shell completion script (e.g. `drover completions bash > /etc/bash_completion.d/drover`).
    #[command(after_long_help = book!("operations/install.md", "Installing drover"))]
    Completions {
        /// Which shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write the manual pages (drover.1, drover-SUBCOMMAND.1) into DIR.
    #[command(after_long_help = book!("operations/install.md", "Installing drover"))]
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
    /// Write the book's generated reference pages (CLI, HTTP API, file
    /// formats) below DIR, the book's `src/`: `drover docs-gen docs/src`.
    #[command(hide = true)]
    DocsGen {
        /// The book's source folder (created if missing).
        dir: PathBuf,
    },
}

/// The shells `drover completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    /// bash (bash-completion).
    Bash,
    /// zsh (a `_drover` file on $fpath).
    Zsh,
    /// fish.
    Fish,
}

/// On or off, for `drover maintenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MaintenanceAction {
    /// Set the flag (needs --reason).
    Enable,
    /// Clear the flag.
    Disable,
}

/// `drover maintenance`.
#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// enable or disable.
    #[arg(value_enum)]
    pub action: MaintenanceAction,
    /// A unit (a bare name gets `.service`); without it the whole host.
    pub unit: Option<String>,
    /// Hosts (selector).
    #[arg(long, value_name = "SEL")]
    pub target: String,
    /// `-i INVENTORY`.
    #[command(flatten)]
    pub inv: InventoryArg,
    /// Why (required to enable); shown by status and health.
    #[arg(long)]
    pub reason: Option<String>,
    /// Write the job report (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// `--forks`.
    #[command(flatten)]
    pub work: WorkForks,
    /// Give up on one host after this long (it is then `failed`).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// `drover health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The unit (a bare name gets `.service`).
    pub unit: String,
    /// Hosts (selector, default `_all`).
    #[arg(long, value_name = "SEL")]
    pub target: Option<String>,
    /// `-i INVENTORY`.
    #[command(flatten)]
    pub inv: InventoryArg,
    /// HTTP check from this machine (template: `http://{{ host.address }}:8080/`); repeatable.
    #[arg(long, value_name = "URL")]
    pub http: Vec<String>,
    /// TCP check from this machine (template: `{{ host.address }}:22`); repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub tcp: Vec<String>,
    /// Shell command run on the host: exit 0 passing, 1 warning, else critical; repeatable.
    #[arg(long, value_name = "CMD")]
    pub command: Vec<String>,
    /// Output: the worst level and one line per host, or JSON with every host and check.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Hosts checked in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// `--timeout`.
    #[command(flatten)]
    pub read: ReadTimeout,
}

/// `drover logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The unit (a bare name gets `.service`).
    pub unit: String,
    /// Hosts (selector).
    #[arg(long, value_name = "SEL")]
    pub target: String,
    /// `-i INVENTORY`.
    #[command(flatten)]
    pub inv: InventoryArg,
    /// The newest N entries of each host (1 to 10000).
    #[arg(short = 'n', long, value_name = "N", default_value = "10", value_parser = crate::model::logs::parse_lines)]
    pub lines: u32,
    /// Only entries since T: `1h`, `30min`, `2026-01-15T10:30:00Z`, `2026-01-15 10:30` (the host's clock), `today`.
    #[arg(long, value_name = "T", value_parser = Since::parse)]
    pub since: Option<Since>,
    /// Only priority P and more urgent: 0-7, or emerg, alert, crit, err, warning, notice, info, debug.
    #[arg(short, long, value_name = "P", value_parser = Priority::parse)]
    pub priority: Option<Priority>,
    /// Output: lines prefixed by host, or JSON with every host's entries.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Hosts read in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// `--timeout`.
    #[command(flatten)]
    pub read: ReadTimeout,
}

/// `drover check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The playbook file.
    pub playbook: PathBuf,
    /// Also resolve targets and templates against this inventory (a YAML file, a directory of them, or an executable printing it as JSON).
    #[arg(short, long)]
    pub inventory: Option<PathBuf>,
    /// Output: a line (errors on stderr with the offending source line), or
    /// JSON diagnostics on stdout for editors and CI annotations:
    /// {"ok", "diagnostics": [{"file", "line", "column", "field",
    /// "message", "suggestion"}], "error", "details", "code"}. Exit codes
    /// are the same.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Also look for `use:` modules in DIR (after `modules/` beside the playbook).
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// `--param`, `--params-file`.
    #[command(flatten)]
    pub params: ParamArgs,
}

/// `drover plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The playbook file.
    pub playbook: PathBuf,
    /// `-i INVENTORY`.
    #[command(flatten)]
    pub inv: InventoryArg,
    /// Intersect every step's hosts with this selector (e.g. `role:web,!web-3`).
    #[arg(long, value_name = "SEL")]
    pub limit: Option<String>,
    /// Plan from this facts file (from `drover facts`) and connect to nothing.
    #[arg(long, value_name = "FILE")]
    pub facts: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Also save the plan as JSON (schema drover.plan/1) to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "retry")]
    pub out: Option<PathBuf>,
    /// Exit 0 when nothing would change, 2 when changes are pending, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Hosts read in parallel (live plan).
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// `--timeout`.
    #[command(flatten)]
    pub read: ReadTimeout,
    /// Also look for `use:` modules in DIR (after `modules/` beside the playbook).
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// Preview `apply --retry REPORT`.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Preview `apply --resume JOURNAL`: what it keeps and what it runs.
    #[arg(long, value_name = "JOURNAL", conflicts_with_all = ["retry", "out"])]
    pub resume: Option<PathBuf>,
    /// `--param`, `--params-file`.
    #[command(flatten)]
    pub params: ParamArgs,
}

/// `drover apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The playbook file (with --server: run the server's runbook of this
    /// file's name, which must have the same content).
    #[arg(required_unless_present_all = ["server", "plan"])]
    pub playbook: Option<PathBuf>,
    /// The inventory: a YAML file, a directory of them, or an executable printing it as JSON.
    #[arg(short, long, required_unless_present = "server")]
    pub inventory: Option<PathBuf>,
    /// Send the run through this drover server (http(s)://HOST:PORT): it
    /// runs there as a job, with its claims, audit and approvals, and its
    /// results are shown here as they happen.
    #[arg(long, value_name = "URL", conflicts_with_all = ["resume", "retry", "allow_drift", "report", "wait_lock", "metrics_file", "nats"])]
    pub server: Option<String>,
    /// With --server: the file holding the key (default: the DROVER_KEY
    /// environment variable).
    #[arg(long, value_name = "FILE", requires = "server")]
    pub key_file: Option<PathBuf>,
    /// Intersect every step's hosts with this selector.
    #[arg(long, value_name = "SEL")]
    pub limit: Option<String>,
    /// Write the job report (JSON) to FILE; a FILE.journal beside it gets each result as it happens.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// `--forks`.
    #[command(flatten)]
    pub work: WorkForks,
    /// Run even outside the playbook's `window`.
    #[arg(long)]
    pub ignore_window: bool,
    /// Allow stop/restart/mask of units the inventory marks `protected`, and
    /// replacing or removing their unit files (`unit:` steps).
    #[arg(long)]
    pub allow_protected: bool,
    /// Give up on one host's step after this long (it is then `failed`); the run never hangs.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Wait up to DURATION for another apply of this playbook to finish instead of exiting 3, and for room in a `group_by` group before a batch.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_lock: Option<Duration>,
    /// Output: text lines, or the job report as JSON on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Apply only what this saved plan (`plan --out`) reviewed: refuse if the
    /// playbook/inventory/params changed or the hosts drifted since.
    #[arg(long, value_name = "PLAN.json")]
    pub plan: Option<PathBuf>,
    /// With --plan: apply even if the hosts drifted since the plan (listed on stderr).
    #[arg(long, requires = "plan")]
    pub allow_drift: bool,
    /// Also look for `use:` modules in DIR (after `modules/` beside the playbook).
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// `--retry REPORT`.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Continue an interrupted run from its journal (FILE.journal beside
    /// its report): every step × host without a final result runs; a
    /// restart that was under way is not repeated if it happened.
    #[arg(long, value_name = "JOURNAL", conflicts_with_all = ["retry", "plan"])]
    pub resume: Option<PathBuf>,
    /// `--param`, `--params-file` (with --plan: the plan's values unless
    /// given again, and a changed one is refused).
    #[command(flatten)]
    pub params: ParamArgs,
    /// With --nats: claim every (host, unit) this run may touch in the
    /// cluster's NATS KV before it starts, so that a run on another
    /// machine (another `apply --nats`, cluster mode's jobs) never works
    /// the same unit at once; a held unit refuses the run (exit 3) or
    /// waits `--wait-lock`.
    #[command(flatten)]
    pub nats: crate::cmd::cluster::NatsArgs,
    /// With --nats: how long a claim outlives a run killed while holding
    /// it (the claims bucket's max age, when this run makes the bucket).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, requires = "nats")]
    pub claim_ttl: Duration,
    /// Write the run's metrics (gauges: last run, last success, duration,
    /// results by status) for node_exporter's textfile collector to
    /// PATH.prom, or to DIR/drover-PLAYBOOK.prom when PATH is a directory.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// `--notify`, its secret and time bound.
    #[command(flatten)]
    pub notify: super::notify::NotifyArgs,
    /// When a service step fails on a host, put the unit's last N journal
    /// lines in that host's result (`logs`; at most 64 KiB); 0: none.
    #[arg(long, value_name = "N", default_value_t = crate::engine::DEFAULT_FAILURE_LOGS, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub failure_logs: u32,
}

/// `drover status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `-i INVENTORY`.
    #[command(flatten)]
    pub inv: InventoryArg,
    /// Only these hosts (selector, default `_all`).
    #[arg(long, value_name = "SEL")]
    pub target: Option<String>,
    /// Units to show (default: every loaded service unit).
    pub units: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Hosts read in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// `--timeout`.
    #[command(flatten)]
    pub read: ReadTimeout,
}

/// The ad-hoc operations of `drover service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceAction {
    /// Start if not running.
    Start,
    /// Stop if running.
    Stop,
    /// Restart.
    Restart,
    /// Reload (start if not running).
    Reload,
}

/// `drover service`.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// What to do.
    #[arg(value_enum)]
    pub action: ServiceAction,
    /// The unit (a bare name gets `.service`).
    pub unit: String,
    /// Hosts (selector).
    #[arg(long, value_name = "SEL")]
    pub target: String,
    /// `-i INVENTORY`.
    #[command(flatten)]
    pub inv: InventoryArg,
    /// Show the plan instead of doing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the job report (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// `--forks`.
    #[command(flatten)]
    pub work: WorkForks,
    /// Allow stop/restart of protected units.
    #[arg(long)]
    pub allow_protected: bool,
    /// Give up on one host after this long (it is then `failed`).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// `drover facts`.
#[derive(Debug, Args)]
pub struct FactsArgs {
    /// `-i INVENTORY`.
    #[command(flatten)]
    pub inv: InventoryArg,
    /// Only these hosts (selector, default `_all`).
    #[arg(long, value_name = "SEL")]
    pub target: Option<String>,
    /// Units to read (default: every service unit file and loaded service).
    pub units: Vec<String>,
    /// Where to write the facts (JSON).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Hosts read in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// `--timeout`.
    #[command(flatten)]
    pub read: ReadTimeout,
}

/// Output format of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// For a terminal (coloured on a TTY).
    Text,
    /// For a pull-request comment.
    Markdown,
    /// For machines; schema `drover.plan/1` (book: reference/plan-json.md).
    Json,
}

impl From<PlanFormat> for Format {
    fn from(f: PlanFormat) -> Format {
        match f {
            PlanFormat::Text => Format::Text,
            PlanFormat::Markdown => Format::Markdown,
            PlanFormat::Json => Format::Json,
        }
    }
}

/// Which schema `drover schema` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// A playbook (schema/playbook.schema.json).
    Playbook,
    /// An inventory (schema/inventory.schema.json).
    Inventory,
    /// A composite module (`modules/NAME.yml`).
    Module,
    /// A script module's `modules/NAME/module.yml`.
    ScriptModule,
}

impl From<SchemaKind> for Kind {
    fn from(k: SchemaKind) -> Kind {
        match k {
            SchemaKind::Playbook => Kind::Playbook,
            SchemaKind::Inventory => Kind::Inventory,
            SchemaKind::Module => Kind::Module,
            SchemaKind::ScriptModule => Kind::ScriptModule,
        }
    }
}

impl From<ServiceAction> for EngineServiceAction {
    fn from(a: ServiceAction) -> EngineServiceAction {
        match a {
            ServiceAction::Start => EngineServiceAction::Start,
            ServiceAction::Stop => EngineServiceAction::Stop,
            ServiceAction::Restart => EngineServiceAction::Restart,
            ServiceAction::Reload => EngineServiceAction::Reload,
        }
    }
}

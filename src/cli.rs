//! The command line: clap definitions and the dispatch of each subcommand
//! to the pipeline. Errors are rendered here, in one place.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::dag::Dag;
use crate::diff::{self, Format};
use crate::error::{Error, Result};
use crate::facts::Facts;
use crate::inventory::Inventory;
use crate::plan::{self, PlanLabels};
use crate::playbook::Playbook;
use crate::target::Selector;

/// drover: declarative batch runbooks for systemd services.
///
/// Playbooks (YAML) describe ordered service operations over an inventory
/// of hosts. `plan` shows what would change without changing anything;
/// `apply` does it over SSH or the local D-Bus and writes a job report.
#[derive(Debug, Parser)]
#[command(name = "drover", version, about, long_about, max_term_width = 100)]
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
    Check(CheckArgs),
    /// Show what apply would change, per host, as a diff; changes nothing.
    Plan(PlanArgs),
    /// Run a playbook against the inventory and write a job report.
    Apply(ApplyArgs),
    /// List units per host: status, start time, uptime.
    Status(StatusArgs),
    /// One ad-hoc operation on one unit over the targeted hosts.
    Service(ServiceArgs),
    /// Read unit facts from hosts into a file that `plan --facts` reads.
    Facts(FactsArgs),
    /// Print the JSON Schema of playbook or inventory files (for editors).
    Schema {
        /// Which file format.
        #[arg(value_enum)]
        kind: crate::schema::Kind,
    },
    /// Set or clear maintenance on hosts or a unit (kept on the hosts).
    Maintenance(MaintenanceArgs),
    /// Aggregate a unit's health over hosts; exits 0/1/2/3 (passing/warning/critical/unknown).
    Health(HealthArgs),
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
    /// The inventory file.
    #[arg(short, long)]
    pub inventory: PathBuf,
    /// Why (required to enable); shown by status and health.
    #[arg(long)]
    pub reason: Option<String>,
    /// Write the job report (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Hosts worked on in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// Give up on one host after this long (it is then `failed`).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: String,
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
    /// The inventory file.
    #[arg(short, long)]
    pub inventory: PathBuf,
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
}

/// `drover check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The playbook file.
    pub playbook: PathBuf,
    /// Also resolve targets and templates against this inventory.
    #[arg(short, long)]
    pub inventory: Option<PathBuf>,
    /// Error output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// `drover plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The playbook file.
    pub playbook: PathBuf,
    /// The inventory file.
    #[arg(short, long)]
    pub inventory: PathBuf,
    /// Intersect every step's hosts with this selector (e.g. `role:web,!web-3`).
    #[arg(long, value_name = "SEL")]
    pub limit: Option<String>,
    /// Plan from this facts file (from `drover facts`) and connect to nothing.
    #[arg(long, value_name = "FILE")]
    pub facts: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also save the plan as JSON (schema drover.plan/1) to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when nothing would change, 2 when changes are pending, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Hosts read in parallel (live plan).
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
}

/// `drover apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The playbook file.
    pub playbook: PathBuf,
    /// The inventory file.
    #[arg(short, long)]
    pub inventory: PathBuf,
    /// Intersect every step's hosts with this selector.
    #[arg(long, value_name = "SEL")]
    pub limit: Option<String>,
    /// Write the job report (JSON) to FILE; a FILE.journal beside it gets each result as it happens.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Hosts worked on in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// Run even outside the playbook's `window`.
    #[arg(long)]
    pub ignore_window: bool,
    /// Allow stop/restart/mask of units the inventory marks `protected`.
    #[arg(long)]
    pub allow_protected: bool,
    /// Give up on one host's step after this long (it is then `failed`); the run never hangs.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: String,
    /// Wait up to DURATION for another apply of this playbook to finish instead of exiting 3.
    #[arg(long, value_name = "DURATION")]
    pub wait_lock: Option<String>,
    /// Output: text lines, or the job report as JSON on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Apply only what this saved plan (`plan --out`) reviewed: refuse if the
    /// playbook/inventory changed or the hosts drifted since.
    #[arg(long, value_name = "PLAN.json")]
    pub plan: Option<PathBuf>,
    /// With --plan: apply even if the hosts drifted since the plan (listed on stderr).
    #[arg(long, requires = "plan")]
    pub allow_drift: bool,
}

/// `drover status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The inventory file.
    #[arg(short, long)]
    pub inventory: PathBuf,
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
    /// The inventory file.
    #[arg(short, long)]
    pub inventory: PathBuf,
    /// Show the plan instead of doing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the job report (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Hosts worked on in parallel.
    #[arg(long, default_value_t = 16)]
    pub forks: usize,
    /// Allow stop/restart of protected units.
    #[arg(long)]
    pub allow_protected: bool,
    /// Give up on one host after this long (it is then `failed`).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub timeout: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// `drover facts`.
#[derive(Debug, Args)]
pub struct FactsArgs {
    /// The inventory file.
    #[arg(short, long)]
    pub inventory: PathBuf,
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
}

/// Whether stdout gets colour.
pub fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal(),
    }
}

fn init_logging(cli: &Cli) {
    let default = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("drover={default}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Parse the command line, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(&cli);
    let json_errors = match &cli.command {
        Command::Check(a) => a.format == ReportFormat::Json,
        Command::Plan(a) => a.format == Format::Json,
        Command::Apply(a) => a.format == ReportFormat::Json,
        Command::Status(a) => a.format == ReportFormat::Json,
        Command::Service(a) => a.format == ReportFormat::Json,
        Command::Facts(_) | Command::Schema { .. } => false,
        Command::Maintenance(a) => a.format == ReportFormat::Json,
        Command::Health(a) => a.format == ReportFormat::Json,
    };
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            report_error(&e, json_errors, use_color(cli.color));
            // `health` follows the monitoring-plugin convention: 3 unknown.
            if matches!(cli.command, Command::Health(_)) {
                crate::health::Health::Unknown.exit_code()
            } else {
                e.exit_code()
            }
        }
    }
}

/// Print an error in the one format drover uses.
pub fn report_error(e: &Error, json: bool, color: bool) {
    if json {
        outln!("{}", e.to_json());
    } else {
        use owo_colors::OwoColorize;
        let head = if color && std::io::stderr().is_terminal() {
            "error".red().bold().to_string()
        } else {
            "error".to_string()
        };
        eprintln!("{head}: {e}: {}", e.details());
    }
}

fn run(cli: &Cli) -> Result<i32> {
    match &cli.command {
        Command::Check(a) => check(a),
        Command::Plan(a) => plan_cmd(a, use_color(cli.color)),
        Command::Apply(a) => crate::apply::apply_cmd(a, use_color(cli.color)),
        Command::Status(a) => crate::live::status_cmd(
            &a.inventory,
            a.target.as_deref(),
            &a.units,
            a.format == ReportFormat::Json,
            a.forks,
            use_color(cli.color),
        ),
        Command::Service(a) => crate::apply::service_cmd(a, use_color(cli.color)),
        Command::Facts(a) => {
            crate::live::facts_cmd(&a.inventory, a.target.as_deref(), &a.units, &a.out, a.forks)
        }
        Command::Maintenance(a) => crate::maintenance::maintenance_cmd(a, use_color(cli.color)),
        Command::Health(a) => crate::health::health_cmd(a, use_color(cli.color)),
        Command::Schema { kind } => crate::schema::schema_cmd(*kind),
    }
}

/// Parse a `--limit`/`--target` selector from the command line.
pub fn parse_selector(flag: &str, raw: &str) -> Result<Selector> {
    Selector::parse(raw).map_err(|m| Error::Usage(format!("{flag} `{raw}`: {m}")))
}

/// Everything validated before the first connection.
pub struct Loaded {
    /// The playbook.
    pub playbook: Playbook,
    /// The inventory.
    pub inventory: Inventory,
    /// The DAG.
    pub dag: Dag,
    /// Steps with targets and templates resolved.
    pub expanded: Vec<plan::ExpandedStep>,
}

/// Load and validate playbook + inventory (+ limit): the whole model.
pub fn load(playbook: &Path, inventory: &Path, limit: Option<&str>) -> Result<Loaded> {
    let t = std::time::Instant::now();
    let playbook = Playbook::load(playbook)?;
    let inventory = Inventory::load(inventory)?;
    tracing::debug!(elapsed = ?t.elapsed(), hosts = inventory.hosts.len(), "model loaded");
    let l = assemble(playbook, inventory, limit)?;
    tracing::debug!(elapsed = ?t.elapsed(), "targets and templates expanded");
    Ok(l)
}

/// The model of an ad-hoc command (`service`, `maintenance`): a one-step
/// playbook generated from validated arguments, named `label` in errors.
pub fn load_generated(text: &str, label: &str, inventory: &Path) -> Result<Loaded> {
    let playbook = Playbook::from_str(text, Path::new(label))?;
    assemble(playbook, Inventory::load(inventory)?, None)
}

/// DAG, limit and expansion of a parsed playbook over an inventory.
fn assemble(playbook: Playbook, inventory: Inventory, limit: Option<&str>) -> Result<Loaded> {
    let dag = Dag::build(&playbook)?;
    let limit = limit.map(|l| parse_selector("--limit", l)).transpose()?;
    let expanded = plan::expand(&playbook, &inventory, limit.as_ref())?;
    Ok(Loaded {
        playbook,
        inventory,
        dag,
        expanded,
    })
}

/// `drover plan | head` closes the pipe early; that is not an error.
fn ignore_broken_pipe(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}

fn check(a: &CheckArgs) -> Result<i32> {
    match &a.inventory {
        Some(inv) => {
            let l = load(&a.playbook, inv, None)?;
            let tasks: usize = l.expanded.iter().map(|e| e.tasks.len()).sum();
            outln!(
                "ok: {} is valid: {} steps in {} waves, {} host tasks over {} hosts of {}",
                a.playbook.display(),
                l.playbook.steps.len(),
                l.dag.waves().len(),
                tasks,
                l.inventory.hosts.len(),
                inv.display()
            );
        }
        None => {
            let pb = Playbook::load(&a.playbook)?;
            let dag = Dag::build(&pb)?;
            outln!(
                "ok: {} is valid: {} steps in {} waves (add -i INVENTORY to check targets and templates)",
                a.playbook.display(),
                pb.steps.len(),
                dag.waves().len()
            );
        }
    }
    Ok(0)
}

fn plan_cmd(a: &PlanArgs, color: bool) -> Result<i32> {
    let (l, facts, source, reach_code) = match &a.facts {
        Some(facts_path) => {
            // The facts file and the model are independent: read them side by side.
            let (l, facts) = std::thread::scope(|s| {
                let facts = s.spawn(|| Facts::load(facts_path));
                let l = load(&a.playbook, &a.inventory, a.limit.as_deref());
                let facts = facts
                    .join()
                    .unwrap_or_else(|_| Err(Error::Internal("facts reader panicked".into())));
                (l, facts)
            });
            (l?, facts?, facts_path.display().to_string(), 0)
        }
        None => {
            let l = load(&a.playbook, &a.inventory, a.limit.as_deref())?;
            let (facts, code) = crate::live::live_plan_facts(&l.inventory, &l.expanded, a.forks)?;
            (l, facts, "live".to_string(), code)
        }
    };
    tracing::debug!("facts loaded");
    let plan = plan::simulate(
        &l.playbook,
        &l.inventory,
        &l.dag,
        &l.expanded,
        &facts,
        PlanLabels {
            facts_source: &source,
            limit: a.limit.as_deref(),
        },
    )?;
    tracing::debug!("plan simulated");
    let mut plan = plan;
    if a.out.is_some() || a.format == Format::Json {
        plan.facts = Some(crate::saved::facts_used(&l, &facts));
    }
    if let Some(out) = &a.out {
        crate::write_atomic_with(out, |w| diff::write_json(&plan, w))?;
    }
    {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        diff::render_to(&plan, a.format, color && a.format == Format::Text, &mut w)
            .and_then(|_| std::io::Write::flush(&mut w))
            .or_else(ignore_broken_pipe)
            .map_err(|e| Error::io("write", "stdout", e))?;
    }
    tracing::debug!("plan rendered");
    // A host without facts makes a live plan incomplete: exit 4 (DESIGN.md).
    let code = if reach_code != 0 {
        reach_code
    } else if a.detailed_exitcode && plan.has_changes() {
        2
    } else {
        0
    };
    // The process ends here: freeing a 10,000-host plan piece by piece is
    // wasted time, so leave it to the OS.
    std::mem::forget((plan, l, facts));
    Ok(code)
}

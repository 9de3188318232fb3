//! lepusctl: a `rabbitmqctl`/`rabbitmqadmin`-style command line client. It talks only to the
//! management HTTP API (RabbitMQ-compatible paths under `/api`), so the CLI and the API share
//! one code path in the broker.
//!
//! - `http`: the API client (basic auth, JSON, errors).
//! - `commands`: each command as API calls.
//! - `output`: tables and JSON.

mod commands;
mod http;
mod output;

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// What a command can fail with; [`CtlError::exit_code`] maps each to the process's exit code.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments, or `--help`/`--version` (clap renders them).
    #[error("{0}")]
    Usage(#[from] clap::Error),
    #[error("cannot reach the management API at {url}: {detail} (is the broker running with its management listener?)")]
    Unreachable { url: String, detail: String },
    #[error("login refused (401) for user '{user}' at {url}: check --user and --password")]
    LoginRefused { url: String, user: String },
    /// The API answered with an error; `reason` is its own.
    #[error("{reason} (HTTP {status})")]
    Api { status: u16, reason: String },
    #[error("cannot {action} {path}: {source}")]
    File { action: &'static str, path: String, source: std::io::Error },
    #[error("invalid JSON in {what}: {detail}")]
    BadJson { what: String, detail: String },
    #[error("the management API at {url} did not answer within {timeout_s} s: {last}")]
    NotStarted { url: String, timeout_s: u64, last: String },
}

impl CtlError {
    /// rabbitmqctl's codes: 69 unavailable, 77 no permission, 64 usage, 65 bad data, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(e) => e.exit_code(),
            CtlError::Unreachable { .. } | CtlError::NotStarted { .. } => 69,
            CtlError::LoginRefused { .. } => 77,
            CtlError::BadJson { .. } => 65,
            CtlError::Api { .. } | CtlError::File { .. } => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "lepusctl", version, about = "Manage a Lepus broker through its management HTTP API")]
pub struct Cli {
    /// The management API's base URL.
    #[arg(long, global = true, env = "LEPUSCTL_URL", default_value = "http://127.0.0.1:15672")]
    pub url: String,
    /// The user to log in as (a management-tagged user).
    #[arg(long, global = true, env = "LEPUSCTL_USER", default_value = "guest")]
    pub user: String,
    /// Its password.
    #[arg(long, global = true, env = "LEPUSCTL_PASSWORD", default_value = "guest", hide_env_values = true)]
    pub password: String,
    /// The virtual host the command works in.
    #[arg(long, short = 'p', global = true, default_value = "/")]
    pub vhost: String,
    /// Tables for people, JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
    // Positional arguments must not share an id with these global options (clap would merge
    // them), hence `new_password` and `username` below.
}

/// The columns a list shows.
#[derive(Debug, Args)]
pub struct Columns {
    /// Columns to show (and ask the API for, as `columns=`); dotted paths reach nested fields.
    pub columns: Vec<String>,
}

#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum Command {
    /// The broker's overview: version, listeners, object and message totals.
    Status,
    /// Waits until the management API answers.
    AwaitStartup {
        /// How long to keep trying, in seconds.
        #[arg(long, short = 't', default_value_t = 300)]
        timeout: u64,
    },
    #[command(flatten)]
    List(List),
    #[command(flatten)]
    Action(Action),
}

/// The `list_*` commands, each taking optional columns.
#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum List {
    /// The vhost's queues (default columns: name, messages).
    ListQueues(Columns),
    /// The vhost's exchanges (name, type).
    ListExchanges(Columns),
    /// The vhost's bindings.
    ListBindings(Columns),
    /// The vhost's AMQP connections.
    ListConnections(Columns),
    /// The vhost's channels.
    ListChannels(Columns),
    /// The vhost's consumers.
    ListConsumers(Columns),
    /// Every user, with its tags.
    ListUsers(Columns),
    /// Every virtual host.
    ListVhosts(Columns),
    /// The vhost's permissions, one line per user.
    ListPermissions(Columns),
    /// The vhost's policies.
    ListPolicies(Columns),
    /// The vhost's operator policies.
    ListOperatorPolicies(Columns),
    /// The vhost's topic permissions, one line per user and exchange.
    ListTopicPermissions(Columns),
    /// The vhost's runtime parameters (vhost limits, operator policies).
    ListParameters(Columns),
    /// The cluster-wide parameters (cluster name, internal id).
    ListGlobalParameters(Columns),
    /// A user's permissions in every vhost.
    ListUserPermissions {
        username: String,
        #[command(flatten)]
        columns: Columns,
    },
    /// A user's topic permissions in every vhost.
    ListUserTopicPermissions {
        username: String,
        #[command(flatten)]
        columns: Columns,
    },
    /// The vhost's limits, or with `--global` every vhost's.
    ListVhostLimits {
        #[arg(long)]
        global: bool,
    },
    /// A user's limits (by default the caller's), or with `--global` every user's.
    ///
    /// The user is positional: `--user` is the login here.
    ListUserLimits {
        username: Option<String>,
        #[arg(long)]
        global: bool,
    },
}

/// The commands that change something.
#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum Action {
    /// Creates a virtual host (the caller gets full permissions on it).
    AddVhost {
        name: String,
        /// A description shown in listings.
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated tags.
        #[arg(long)]
        tags: Option<String>,
        /// classic, quorum or stream (shown, not applied, as RabbitMQ 3.10).
        #[arg(long = "default-queue-type")]
        default_queue_type: Option<String>,
    },
    /// Deletes a virtual host and everything in it.
    DeleteVhost { name: String },
    /// Creates a user with a password.
    AddUser {
        name: String,
        #[arg(value_name = "PASSWORD")]
        new_password: String,
        /// Comma-separated tags (administrator, monitoring, management...).
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Deletes a user and its permissions.
    DeleteUser { name: String },
    /// Sets a user's password (its tags stay).
    ChangePassword {
        name: String,
        #[arg(value_name = "PASSWORD")]
        new_password: String,
    },
    /// Sets a user's configure, write and read patterns in the vhost.
    SetPermissions {
        #[arg(value_name = "USER")]
        username: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Removes a user's permissions in the vhost.
    ClearPermissions {
        #[arg(value_name = "USER")]
        username: String,
    },
    /// Replaces the user's tags (its password stays).
    SetUserTags {
        #[arg(value_name = "USER")]
        username: String,
        tags: Vec<String>,
    },
    /// Sets the vhost's limits from a JSON object, e.g. `{"max-connections": 64}`.
    SetVhostLimits { definition: String },
    /// Removes every limit of the vhost.
    ClearVhostLimits,
    /// Sets the user's limits from a JSON object, e.g. `{"max-channels": 8}`.
    SetUserLimits {
        #[arg(value_name = "USER")]
        username: String,
        definition: String,
    },
    /// Removes one limit of the user (`max-connections`, `max-channels`) or `all`.
    ClearUserLimits {
        #[arg(value_name = "USER")]
        username: String,
        limit: String,
    },
    /// Sets a policy in the vhost: NAME PATTERN DEFINITION (a JSON object).
    SetPolicy {
        name: String,
        pattern: String,
        /// The policy's definition as a JSON object.
        definition: String,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// queues, exchanges or all.
        #[arg(long = "apply-to", default_value = "all")]
        apply_to: String,
    },
    /// Removes a policy from the vhost.
    ClearPolicy { name: String },
    /// Sets an operator policy in the vhost: NAME PATTERN DEFINITION (a JSON object).
    SetOperatorPolicy {
        name: String,
        pattern: String,
        /// The policy's definition as a JSON object.
        definition: String,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// queues (operator policies apply to queues only).
        #[arg(long = "apply-to", default_value = "queues")]
        apply_to: String,
    },
    /// Removes an operator policy from the vhost.
    ClearOperatorPolicy { name: String },
    /// Sets a user's write and read patterns (routing keys) for one topic exchange in the vhost.
    SetTopicPermissions {
        #[arg(value_name = "USER")]
        username: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// Removes every topic permission of a user in the vhost.
    ClearTopicPermissions {
        #[arg(value_name = "USER")]
        username: String,
    },
    /// Removes every ready message from a queue.
    PurgeQueue { name: String },
    /// Deletes a queue with its messages.
    DeleteQueue { name: String },
    /// Closes a connection by name (as `list_connections` shows it), with an optional reason.
    CloseConnection { name: String, reason: Option<String> },
    /// Writes every definition to `file` (`-` for standard output).
    ExportDefinitions { file: String },
    /// Loads definitions from `file` (`-` for standard input).
    ImportDefinitions { file: String },
}

/// Parses `args` (the program name first) and runs the command; the text to print on success.
pub fn run<I, T>(args: I) -> Result<String, CtlError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    commands::execute(&cli)
}

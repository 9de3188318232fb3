//! Each command as management API calls; lists go through [`list`] with rabbitmqctl's default
//! columns, actions answer with a one-line confirmation.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{Api, segment};
use crate::output::{self, Rows};
use crate::{Action, Cli, Columns, Command, CtlError, List};

/// Pause between `await_startup` attempts.
const STARTUP_RETRY_MS: u64 = 500;

pub fn execute(cli: &Cli) -> Result<String, CtlError> {
    let api = Api::new(&cli.url, &cli.user, &cli.password);
    let vh = segment(&cli.vhost);
    match &cli.command {
        Command::Status => Ok(output::status(&api.get("/api/overview")?, cli.format)),
        Command::AwaitStartup { timeout } => await_startup(&api, *timeout),
        Command::List(which) => Ok(output::render(list(&api, cli, which)?, cli.format)),
        Command::Action(action) => act(&api, &vh, action),
    }
}

/// A list cut to the columns asked for (or rabbitmqctl's defaults), the API doing the cutting.
fn list(api: &Api, cli: &Cli, which: &List) -> Result<Rows, CtlError> {
    let vh = segment(&cli.vhost);
    let (path, asked, defaults) = list_source(&vh, cli, which);
    let columns: Vec<String> = if asked.columns.is_empty() {
        defaults.iter().map(|c| c.to_string()).collect()
    } else {
        asked.columns.iter().flat_map(|c| c.split(',')).filter(|c| !c.is_empty()).map(str::to_owned).collect()
    };
    // `/api/parameters` has no per-vhost path without a component: the vhost is fetched too
    // and the list cut to the one asked for here.
    let by_vhost = matches!(which, List::ListParameters(_));
    let fetched =
        if by_vhost { columns.iter().cloned().chain(["vhost".to_owned()]).collect() } else { columns.clone() };
    let query = fetched.iter().map(|c| segment(c)).collect::<Vec<_>>().join(",");
    let mut items = api.get(&format!("{path}?columns={query}"))?.as_array().cloned().unwrap_or_default();
    if by_vhost {
        items.retain(|i| i["vhost"] == cli.vhost.as_str());
    }
    Ok(Rows { columns, items })
}

/// Where a list comes from: its API path, the columns asked for and rabbitmqctl's defaults.
fn list_source<'a>(vh: &str, cli: &Cli, which: &'a List) -> (String, &'a Columns, &'static [&'static str]) {
    match which {
        List::ListQueues(c) => (format!("/api/queues/{vh}"), c, &["name", "messages"]),
        List::ListExchanges(c) => (format!("/api/exchanges/{vh}"), c, &["name", "type"]),
        List::ListBindings(c) => (format!("/api/bindings/{vh}"), c, BINDING_COLUMNS),
        List::ListConnections(c) => (format!("/api/vhosts/{vh}/connections"), c, CONNECTION_COLUMNS),
        List::ListChannels(c) => (format!("/api/vhosts/{vh}/channels"), c, CHANNEL_COLUMNS),
        List::ListConsumers(c) => (format!("/api/consumers/{vh}"), c, CONSUMER_COLUMNS),
        List::ListUsers(c) => ("/api/users".to_owned(), c, &["name", "tags"]),
        List::ListVhosts(c) => ("/api/vhosts".to_owned(), c, &["name"]),
        List::ListPermissions(c) => {
            (format!("/api/vhosts/{vh}/permissions"), c, &["user", "configure", "write", "read"])
        }
        List::ListPolicies(c) => (format!("/api/policies/{vh}"), c, POLICY_COLUMNS),
        List::ListOperatorPolicies(c) => (format!("/api/operator-policies/{vh}"), c, POLICY_COLUMNS),
        List::ListTopicPermissions(c) => {
            (format!("/api/vhosts/{vh}/topic-permissions"), c, &["user", "exchange", "write", "read"])
        }
        List::ListParameters(c) => ("/api/parameters".to_owned(), c, &["component", "name", "value"]),
        List::ListGlobalParameters(c) => ("/api/global-parameters".to_owned(), c, &["name", "value"]),
        List::ListUserPermissions { username, columns } => {
            (format!("/api/users/{}/permissions", segment(username)), columns, &["vhost", "configure", "write", "read"])
        }
        List::ListUserTopicPermissions { username, columns } => (
            format!("/api/users/{}/topic-permissions", segment(username)),
            columns,
            &["vhost", "exchange", "write", "read"],
        ),
        List::ListVhostLimits { global: true } => ("/api/vhost-limits".to_owned(), &NO_COLUMNS, &["vhost", "value"]),
        List::ListVhostLimits { global: false } => (format!("/api/vhost-limits/{vh}"), &NO_COLUMNS, &["value"]),
        List::ListUserLimits { global: true, .. } => ("/api/user-limits".to_owned(), &NO_COLUMNS, &["user", "value"]),
        List::ListUserLimits { username, .. } => {
            let user = username.as_deref().unwrap_or(&cli.user);
            (format!("/api/user-limits/{}", segment(user)), &NO_COLUMNS, &["value"])
        }
    }
}

/// For the lists whose columns are fixed.
static NO_COLUMNS: Columns = Columns { columns: Vec::new() };

const BINDING_COLUMNS: &[&str] = &["source", "destination_type", "destination", "routing_key", "arguments"];
const CONNECTION_COLUMNS: &[&str] = &["name", "user", "peer_host", "peer_port", "state"];
const CHANNEL_COLUMNS: &[&str] = &["name", "user", "consumer_count", "messages_unacknowledged"];
const CONSUMER_COLUMNS: &[&str] = &["queue.name", "consumer_tag", "ack_required", "prefetch_count", "active"];
const POLICY_COLUMNS: &[&str] = &["vhost", "name", "pattern", "apply-to", "definition", "priority"];

/// The commands that change something.
fn act(api: &Api, vh: &str, action: &Action) -> Result<String, CtlError> {
    match action {
        Action::AddVhost { name, description, tags, default_queue_type } => {
            let body = json!({"description": description, "tags": tags, "default_queue_type": default_queue_type});
            done(api.put(&format!("/api/vhosts/{}", segment(name)), &body), "Added vhost", name)
        }
        Action::DeleteVhost { name } => {
            done(api.delete(&format!("/api/vhosts/{}", segment(name))), "Deleted vhost", name)
        }
        Action::AddUser { name, new_password, tags } => {
            let body = json!({"password": new_password, "tags": tags});
            done(api.put(&format!("/api/users/{}", segment(name)), &body), "Added user", name)
        }
        Action::DeleteUser { name } => done(api.delete(&format!("/api/users/{}", segment(name))), "Deleted user", name),
        Action::ChangePassword { name, new_password } => change_password(api, name, new_password),
        Action::SetPermissions { username, configure, write, read } => {
            let body = json!({"configure": configure, "write": write, "read": read});
            done(
                api.put(&format!("/api/permissions/{vh}/{}", segment(username)), &body),
                "Set permissions for user",
                username,
            )
        }
        Action::ClearPermissions { username } => {
            let path = format!("/api/permissions/{vh}/{}", segment(username));
            done(api.delete(&path), "Cleared permissions for user", username)
        }
        Action::SetUserTags { username, tags } => {
            let body = json!({"tags": tags.join(",")});
            done(api.put(&format!("/api/users/{}", segment(username)), &body), "Set tags for user", username)
        }
        Action::SetVhostLimits { definition } => {
            set_limits(api, &format!("/api/vhost-limits/{vh}"), definition)?;
            Ok("Set vhost limits".to_owned())
        }
        Action::ClearVhostLimits => {
            clear_limits(api, &format!("/api/vhost-limits/{vh}"), "all")?;
            Ok("Cleared vhost limits".to_owned())
        }
        Action::SetUserLimits { username, definition } => {
            set_limits(api, &format!("/api/user-limits/{}", segment(username)), definition)?;
            Ok(format!("Set limits for user \"{username}\""))
        }
        Action::ClearUserLimits { username, limit } => {
            clear_limits(api, &format!("/api/user-limits/{}", segment(username)), limit)?;
            Ok(format!("Cleared {limit} limits for user \"{username}\""))
        }
        Action::SetPolicy { name, pattern, definition, priority, apply_to } => {
            let policy = Policy { pattern, definition, priority: *priority, apply_to };
            done(set_policy(api, &format!("/api/policies/{vh}/{}", segment(name)), policy), "Set policy", name)
        }
        Action::ClearPolicy { name } => {
            done(api.delete(&format!("/api/policies/{vh}/{}", segment(name))), "Cleared policy", name)
        }
        Action::SetOperatorPolicy { name, pattern, definition, priority, apply_to } => {
            let policy = Policy { pattern, definition, priority: *priority, apply_to };
            let path = format!("/api/operator-policies/{vh}/{}", segment(name));
            done(set_policy(api, &path, policy), "Set operator policy", name)
        }
        Action::ClearOperatorPolicy { name } => {
            let path = format!("/api/operator-policies/{vh}/{}", segment(name));
            done(api.delete(&path), "Cleared operator policy", name)
        }
        Action::SetTopicPermissions { username, exchange, write, read } => {
            let body = json!({"exchange": exchange, "write": write, "read": read});
            let path = format!("/api/topic-permissions/{vh}/{}", segment(username));
            done(api.put(&path, &body), "Set topic permissions for user", username)
        }
        Action::ClearTopicPermissions { username } => {
            let path = format!("/api/topic-permissions/{vh}/{}", segment(username));
            done(api.delete(&path), "Cleared topic permissions for user", username)
        }
        Action::PurgeQueue { name } => {
            done(api.delete(&format!("/api/queues/{vh}/{}/contents", segment(name))), "Purged queue", name)
        }
        Action::DeleteQueue { name } => {
            done(api.delete(&format!("/api/queues/{vh}/{}", segment(name))), "Deleted queue", name)
        }
        Action::CloseConnection { name, reason } => {
            let path = format!("/api/connections/{}", segment(name));
            done(api.delete_with_reason(&path, reason.as_deref()), "Closed connection", name)
        }
        Action::ExportDefinitions { file } => export_definitions(api, file),
        Action::ImportDefinitions { file } => import_definitions(api, file),
    }
}

/// A policy or operator policy as `set_policy` takes it.
struct Policy<'a> {
    pattern: &'a str,
    definition: &'a str,
    priority: i64,
    apply_to: &'a str,
}

fn set_policy(api: &Api, path: &str, p: Policy<'_>) -> Result<Value, CtlError> {
    let definition = parse_json("the policy definition", p.definition)?;
    api.put(
        path,
        &json!({"pattern": p.pattern, "definition": definition, "priority": p.priority, "apply-to": p.apply_to}),
    )
}

fn done(reply: Result<Value, CtlError>, what: &str, name: &str) -> Result<String, CtlError> {
    reply.map(|_| format!("{what} \"{name}\""))
}

/// A new password keeps the user's tags (the API replaces both).
fn change_password(api: &Api, name: &str, password: &str) -> Result<String, CtlError> {
    let path = format!("/api/users/{}", segment(name));
    let user = api.get(&path)?;
    let tags = user.get("tags").cloned().unwrap_or(Value::String(String::new()));
    done(api.put(&path, &json!({"password": password, "tags": tags})), "Changed password for user", name)
}

/// One `PUT {path}/{name}` per limit in the JSON object `definition`, as rabbitmqctl's
/// `set_vhost_limits` and `set_user_limits` take them.
fn set_limits(api: &Api, path: &str, definition: &str) -> Result<(), CtlError> {
    let limits = parse_json("the limits", definition)?;
    let Some(limits) = limits.as_object() else {
        return Err(CtlError::BadJson { what: "the limits".into(), detail: "not a JSON object".into() });
    };
    for (name, value) in limits {
        api.put(&format!("{path}/{}", segment(name)), &json!({"value": value}))?;
    }
    Ok(())
}

/// Deletes the limit `which`, or every limit set (`all`).
fn clear_limits(api: &Api, path: &str, which: &str) -> Result<(), CtlError> {
    let names: Vec<String> = if which == "all" {
        let shown = api.get(path)?;
        let set = shown.get(0).and_then(|o| o.get("value")).and_then(Value::as_object);
        set.map(|m| m.keys().cloned().collect()).unwrap_or_default()
    } else {
        vec![which.to_owned()]
    };
    for name in names {
        api.delete(&format!("{path}/{}", segment(&name)))?;
    }
    Ok(())
}

fn await_startup(api: &Api, timeout_s: u64) -> Result<String, CtlError> {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        match api.get("/api/overview") {
            Ok(_) => return Ok(format!("The management API at {} is up", api.base())),
            Err(e @ CtlError::LoginRefused { .. }) => return Err(e),
            Err(e) if Instant::now() >= deadline => {
                return Err(CtlError::NotStarted { url: api.base().to_owned(), timeout_s, last: e.to_string() });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(STARTUP_RETRY_MS)),
        }
    }
}

fn export_definitions(api: &Api, file: &str) -> Result<String, CtlError> {
    let definitions = api.get("/api/definitions")?;
    let text = serde_json::to_string_pretty(&definitions).unwrap_or_default();
    if file == "-" {
        return Ok(text);
    }
    std::fs::write(file, text).map_err(|source| CtlError::File { action: "write", path: file.to_owned(), source })?;
    Ok(format!("Exported definitions to \"{file}\""))
}

fn import_definitions(api: &Api, file: &str) -> Result<String, CtlError> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|source| CtlError::File {
            action: "read",
            path: file.to_owned(),
            source,
        })?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|source| CtlError::File {
            action: "read",
            path: file.to_owned(),
            source,
        })?
    };
    let definitions = parse_json(file, &text)?;
    api.post("/api/definitions", &definitions)?;
    Ok(format!("Imported definitions from \"{file}\""))
}

fn parse_json(what: &str, text: &str) -> Result<Value, CtlError> {
    serde_json::from_str(text).map_err(|e| CtlError::BadJson { what: what.to_owned(), detail: e.to_string() })
}

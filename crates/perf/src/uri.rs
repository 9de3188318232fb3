//! `amqp://user:pass@host:port/vhost` parsing (the subset brokers' URIs use in practice), and
//! `amqps://…?cacertfile=PATH[&server_name_indication=NAME]` for TLS, as RabbitMQ's URI
//! query parameters name them (the server's certificate is always verified).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
    /// `amqps://`: TLS, with what to trust.
    pub tls: Option<TlsTarget>,
}

/// What an `amqps://` URI says about the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTarget {
    /// PEM file of the CA certificates to trust.
    pub ca_file: String,
    /// The name to verify the certificate against (default: the host).
    pub server_name: String,
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad escape in {s:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {s:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

impl AmqpUri {
    pub fn parse(uri: &str) -> Result<AmqpUri, String> {
        let (tls, rest) = match (uri.strip_prefix("amqp://"), uri.strip_prefix("amqps://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err("only amqp:// and amqps:// URIs are supported".into()),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((a, b)) => (percent_decode(a)?, percent_decode(b)?),
                None => (percent_decode(u)?, String::new()),
            },
            None => ("guest".into(), "guest".into()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h.trim_matches(['[', ']']).to_string(), p.parse().map_err(|_| format!("bad port {p:?}"))?)
            }
            _ => (hostport.to_string(), if tls { 5671 } else { 5672 }),
        };
        let vhost = match path {
            None => "/".to_string(),
            Some(p) => percent_decode(p)?,
        };
        let host = if host.is_empty() { "localhost".into() } else { host };
        let tls = if tls { Some(tls_target(query, &host)?) } else { None };
        Ok(AmqpUri { user, password, host, port, vhost, tls })
    }
}

/// The TLS parameters of an `amqps://` URI's query.
fn tls_target(query: &str, host: &str) -> Result<TlsTarget, String> {
    let (mut ca_file, mut server_name) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "cacertfile" => ca_file = Some(percent_decode(value)?),
            "server_name_indication" => server_name = Some(percent_decode(value)?),
            other => return Err(format!("unsupported URI parameter {other:?}")),
        }
    }
    let ca_file = ca_file.ok_or("amqps:// needs ?cacertfile=PATH (the CA to verify the broker's certificate)")?;
    Ok(TlsTarget { ca_file, server_name: server_name.unwrap_or_else(|| host.to_owned()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let u = AmqpUri::parse("amqp://guest:guest@127.0.0.1:5680/%2F").unwrap();
        assert_eq!((u.user.as_str(), u.host.as_str(), u.port, u.vhost.as_str()), ("guest", "127.0.0.1", 5680, "/"));
        let u = AmqpUri::parse("amqp://localhost").unwrap();
        assert_eq!((u.port, u.vhost.as_str(), u.user.as_str()), (5672, "/", "guest"));
        let u = AmqpUri::parse("amqp://a%40b:p%3Aw@h:1/v").unwrap();
        assert_eq!((u.user.as_str(), u.password.as_str(), u.vhost.as_str()), ("a@b", "p:w", "v"));
        assert!(AmqpUri::parse("http://x").is_err());
        assert_eq!(AmqpUri::parse("amqp://h").unwrap().tls, None);
    }

    #[test]
    fn amqps_needs_a_ca_file_and_defaults_to_5671() {
        let u = AmqpUri::parse("amqps://h?cacertfile=%2Ftmp%2Fca.pem&server_name_indication=localhost").unwrap();
        assert_eq!(u.port, 5671);
        assert_eq!(u.tls, Some(TlsTarget { ca_file: "/tmp/ca.pem".into(), server_name: "localhost".into() }));
        assert_eq!(u.vhost, "/");
        assert!(AmqpUri::parse("amqps://h").is_err());
        assert!(AmqpUri::parse("amqps://h?verify=verify_none&cacertfile=x").is_err());
    }
}

//! `amqp://user:pass@host:port/vhost` parsing (the subset brokers' URIs use in practice).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
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
        let rest = uri.strip_prefix("amqp://").ok_or("only amqp:// URIs are supported")?;
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
            _ => (hostport.to_string(), 5672),
        };
        let vhost = match path {
            None => "/".to_string(),
            Some(p) => percent_decode(p)?,
        };
        Ok(AmqpUri { user, password, host: if host.is_empty() { "localhost".into() } else { host }, port, vhost })
    }
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
    }
}

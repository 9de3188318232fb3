//! Server-generated names: `amq.gen-…` queues, `amq.ctag-…` consumer tags and direct
//! reply-to addresses, as RabbitMQ forms them (prefix + 22 URL-safe base64 characters).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `prefix` followed by 128 random bits in URL-safe base64 (22 characters).
pub(crate) fn random_name(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to a process-unique counter mixed with the time.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[8..].copy_from_slice(&(t as u64).to_le_bytes());
    }
    let mut out = String::with_capacity(prefix.len() + 22);
    out.push_str(prefix);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_rabbitmq_shape_and_differ() {
        let a = random_name("amq.gen-");
        let b = random_name("amq.gen-");
        assert_eq!(a.len(), "amq.gen-".len() + 22);
        assert!(a.starts_with("amq.gen-"));
        assert!(a["amq.gen-".len()..].bytes().all(|c| ALPHABET.contains(&c)));
        assert_ne!(a, b);
    }
}

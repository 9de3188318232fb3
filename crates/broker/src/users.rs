//! Users: names, tags, password checks and RabbitMQ's rule that some users (guest by
//! default) may only log in from loopback. Protocol-neutral: a front end decodes its own
//! login exchange (SASL for AMQP) and asks [`Users::login`].
//!
//! Passwords are stored as RabbitMQ stores them (`rabbit_password_hashing_sha256`):
//! a random 4-byte salt followed by SHA-256(salt ‖ password), so definitions can be imported
//! from RabbitMQ unchanged. Hashes imported with RabbitMQ's other algorithms (SHA-512, and the
//! MD5 of nodes upgraded from before 3.6) are kept and checked as they are: the algorithm is
//! told by the hash's length.

use std::collections::HashMap;
use std::net::IpAddr;

use lepus_store::meta::UserRecord;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A stored password hash: 4 bytes of salt, then SHA-256(salt ‖ password).
pub const PASSWORD_HASH_BYTES: usize = 36;

/// RabbitMQ's password hashing algorithms: each stores a 4-byte salt, then the digest of
/// salt ‖ password, so the stored length tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingAlgorithm {
    Sha256,
    Sha512,
    Md5,
}

impl HashingAlgorithm {
    const ALL: [HashingAlgorithm; 3] = [HashingAlgorithm::Sha256, HashingAlgorithm::Sha512, HashingAlgorithm::Md5];

    /// Its name in RabbitMQ's definitions (`hashing_algorithm`).
    pub fn name(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
            HashingAlgorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    pub fn from_name(name: &str) -> Option<HashingAlgorithm> {
        HashingAlgorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Salt and digest, in bytes.
    pub fn hash_len(self) -> usize {
        4 + match self {
            HashingAlgorithm::Sha256 => 32,
            HashingAlgorithm::Sha512 => 64,
            HashingAlgorithm::Md5 => 16,
        }
    }

    /// The algorithm of a stored hash (none for an empty or malformed one).
    pub fn of_hash(hash: &[u8]) -> Option<HashingAlgorithm> {
        HashingAlgorithm::ALL.into_iter().find(|a| a.hash_len() == hash.len())
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        fn run<D: Digest>(salt: &[u8], password: &[u8]) -> Vec<u8> {
            let mut h = D::new();
            h.update(salt);
            h.update(password);
            h.finalize().to_vec()
        }
        match self {
            HashingAlgorithm::Sha256 => run::<Sha256>(salt, password),
            HashingAlgorithm::Sha512 => run::<sha2::Sha512>(salt, password),
            HashingAlgorithm::Md5 => run::<md5::Md5>(salt, password),
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub tags: Vec<String>,
    /// salt (4 bytes) ‖ SHA-256(salt ‖ password).
    password_hash: Vec<u8>,
}

impl User {
    pub fn new(name: &str, password: &str, tags: &[&str]) -> User {
        let mut salt = [0u8; 4];
        // A failing OS RNG leaves a zero salt: still a correct hash, only less salted.
        let _ = getrandom::fill(&mut salt);
        User {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            password_hash: hash(&salt, password.as_bytes()),
        }
    }

    /// A user whose password hash (salt ‖ digest, see [`HashingAlgorithm`]) comes from
    /// elsewhere, as in RabbitMQ's definitions.
    pub fn with_password_hash(name: &str, password_hash: Vec<u8>, tags: &[&str]) -> User {
        User { name: name.into(), tags: tags.iter().map(|t| t.to_string()).collect(), password_hash }
    }

    /// A user with no password: only a login that needs none (SASL EXTERNAL, a client
    /// certificate) gets in; stored with an empty hash, as RabbitMQ stores such a user.
    pub fn passwordless(name: &str, tags: &[&str]) -> User {
        User::with_password_hash(name, Vec::new(), tags)
    }

    /// Whether a password can log this user in.
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }

    pub fn password_hash(&self) -> &[u8] {
        &self.password_hash
    }

    /// How the password hash was made (none for a passwordless user).
    pub fn hashing_algorithm(&self) -> Option<HashingAlgorithm> {
        HashingAlgorithm::of_hash(&self.password_hash)
    }

    /// The user as the metadata store keeps it.
    pub fn record(&self) -> UserRecord {
        UserRecord { name: self.name.clone(), password_hash: self.password_hash.clone(), tags: self.tags.clone() }
    }

    pub fn from_record(r: UserRecord) -> User {
        User { name: r.name, tags: r.tags, password_hash: r.password_hash }
    }

    pub fn check_password(&self, password: &[u8]) -> bool {
        let Some(algorithm) = self.hashing_algorithm() else { return false };
        let (salt, stored) = self.password_hash.split_at(4);
        algorithm.digest(salt, password).ct_eq(stored).into()
    }
}

/// salt ‖ SHA-256(salt ‖ password): how passwords set here are stored.
fn hash(salt: &[u8], password: &[u8]) -> Vec<u8> {
    let mut out = salt.to_vec();
    out.extend(HashingAlgorithm::Sha256.digest(salt, password));
    out
}

/// Why a login failed; the text goes to the log, never to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("user '{}' does not exist or gave a wrong password", .0.escape_debug())]
    BadCredentials(String),
    #[error("user '{}' does not exist", .0.escape_debug())]
    NoSuchUser(String),
    #[error("user '{}' can only connect via localhost", .0.escape_debug())]
    LoopbackOnly(String),
}

/// The user database.
#[derive(Debug, Default)]
pub struct Users {
    users: HashMap<String, User>,
    loopback_only: Vec<String>,
}

impl Users {
    pub fn new(loopback_only: Vec<String>) -> Users {
        Users { users: HashMap::new(), loopback_only }
    }

    pub fn add(&mut self, user: User) {
        self.users.insert(user.name.clone(), user);
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn remove(&mut self, name: &str) -> Option<User> {
        self.users.remove(name)
    }

    /// Every user, by name.
    pub fn list(&self) -> Vec<&User> {
        let mut all: Vec<&User> = self.users.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a name and password from `peer`.
    pub fn login(&self, name: &str, password: &[u8], peer: IpAddr) -> Result<&User, LoginError> {
        let user = self
            .users
            .get(name)
            .filter(|u| u.check_password(password))
            .ok_or_else(|| LoginError::BadCredentials(name.to_owned()))?;
        self.check_loopback(user, peer)
    }

    /// A login proven by other means (a verified client certificate): the user must exist;
    /// no password is checked, so a passwordless user gets in too.
    pub fn login_external(&self, name: &str, peer: IpAddr) -> Result<&User, LoginError> {
        let user = self.users.get(name).ok_or_else(|| LoginError::NoSuchUser(name.to_owned()))?;
        self.check_loopback(user, peer)
    }

    fn check_loopback<'a>(&self, user: &'a User, peer: IpAddr) -> Result<&'a User, LoginError> {
        if self.loopback_only.contains(&user.name) && !is_loopback(peer) {
            return Err(LoginError::LoopbackOnly(user.name.clone()));
        }
        Ok(user)
    }
}

/// Loopback, including IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let mut u = Users::new(vec!["guest".into()]);
        u.add(User::new("guest", "guest", &["administrator"]));
        u.add(User::new("alice", "s3cret", &[]));
        u
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn right_password_only() {
        let u = users();
        assert_eq!(u.login("alice", b"s3cret", REMOTE).map(|u| u.name.as_str()), Ok("alice"));
        assert_eq!(u.login("alice", b"nope", REMOTE).unwrap_err(), LoginError::BadCredentials("alice".into()));
        assert_eq!(u.login("bob", b"s3cret", REMOTE).unwrap_err(), LoginError::BadCredentials("bob".into()));
    }

    #[test]
    fn guest_only_from_loopback() {
        let u = users();
        assert!(u.login("guest", b"guest", LOCAL).is_ok());
        assert!(u.login("guest", b"guest", "::1".parse().unwrap()).is_ok());
        assert!(u.login("guest", b"guest", "::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert_eq!(u.login("guest", b"guest", REMOTE).unwrap_err(), LoginError::LoopbackOnly("guest".into()));
    }

    #[test]
    fn passwordless_users_log_in_only_externally() {
        let mut u = users();
        u.add(User::passwordless("app", &[]));
        for password in [&b""[..], b"x"] {
            assert_eq!(u.login("app", password, REMOTE).unwrap_err(), LoginError::BadCredentials("app".into()));
        }
        assert!(!u.get("app").unwrap().has_password());
        assert_eq!(u.login_external("app", REMOTE).map(|u| u.name.as_str()), Ok("app"));
        assert_eq!(u.login_external("alice", REMOTE).map(|u| u.name.as_str()), Ok("alice"));
        assert_eq!(u.login_external("bob", REMOTE).unwrap_err(), LoginError::NoSuchUser("bob".into()));
        assert_eq!(u.login_external("guest", REMOTE).unwrap_err(), LoginError::LoopbackOnly("guest".into()));
        assert_eq!(User::from_record(u.get("app").unwrap().record()).password_hash(), b"");
    }

    #[test]
    fn a_name_with_a_newline_cannot_forge_a_log_line() {
        let text = LoginError::BadCredentials("x\nINFO forged".into()).to_string();
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn rabbitmq_hash_format_verifies() {
        // Test vector from RabbitMQ's password hashing docs: salt 908DC60A, password test12.
        let salt = [0x90, 0x8D, 0xC6, 0x0A];
        let user = User::with_password_hash("t", hash(&salt, b"test12"), &[]);
        assert!(user.check_password(b"test12"));
        assert!(!user.check_password(b"test13"));
        let expected = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR";
        assert_eq!(base64_encode(user.password_hash()), expected);
    }

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn sha512_and_md5_hashes_from_rabbitmq_definitions_verify() {
        // salt 908DC60A ‖ digest(salt ‖ "test12"), made with Python's hashlib.
        let sha512 = "908dc60a1b8db8861ff2545b082c598e08cac2c635f67b3afae14ed33717441180fd71893d80fc396332ec407c4da3a60338cfd9aceff3819b20d6305f670359be031e77";
        let md5 = "908dc60a1369b5ed850296055d2725fb474896e9";
        for (hex, algorithm) in [(sha512, HashingAlgorithm::Sha512), (md5, HashingAlgorithm::Md5)] {
            let user = User::with_password_hash("t", from_hex(hex), &[]);
            assert_eq!(user.hashing_algorithm(), Some(algorithm));
            assert!(user.check_password(b"test12"), "{algorithm:?}");
            assert!(!user.check_password(b"test13"), "{algorithm:?}");
            assert_eq!(HashingAlgorithm::from_name(algorithm.name()), Some(algorithm));
        }
        assert_eq!(User::new("n", "p", &[]).hashing_algorithm(), Some(HashingAlgorithm::Sha256));
        assert_eq!(User::passwordless("n", &[]).hashing_algorithm(), None);
    }

    fn base64_encode(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in bytes.chunks(3) {
            let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}

//! AMQP over TLS end to end: amqprs over TLS with PLAIN and with SASL EXTERNAL (a client
//! certificate whose CN, or DN, names the user), 403 ACCESS_REFUSED for a certificate naming
//! no user, a handshake refused without a client certificate when one is required, EXTERNAL
//! offered only where client certificates are verified, a silent TLS socket released at the
//! handshake timeout, and certificate reload (new connections get the new certificate, open
//! ones go on, a failed reload keeps the old one). Certificates are made at test time (rcgen).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use amqprs::BasicProperties;
use amqprs::channel::{BasicGetArguments, BasicPublishArguments, QueueDeclareArguments};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::security::SecurityCredentials;
use amqprs::tls::TlsAdaptor;
use common::{HANG_GUARD, Raw};
use lepus_broker::command::{Credential, NodeCommand};
use lepus_protocol::constants::PROTOCOL_HEADER;
use lepus_protocol::method::*;
use lepus_protocol::{FieldTable, LongStr, Method, ShortStr};
use lepus_server::config::CertLoginFrom;
use lepus_server::{Config, Server};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A CA and the certificates it signs, written as PEM files into a temporary directory.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("lepus-tls-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Lepus test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        std::fs::write(dir.join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
        Pki { dir, ca: Issuer::new(params, key) }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Writes `{name}.pem` and `{name}.key`, a certificate for localhost (server) or with the
    /// given subject (client); returns the certificate's DER.
    fn issue(&self, name: &str, server: bool, subject: &[(DnType, &str)]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let sans = if server { vec!["localhost".to_owned(), "127.0.0.1".to_owned()] } else { Vec::new() };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name = DistinguishedName::new();
        for (t, v) in subject {
            params.distinguished_name.push(t.clone(), *v);
        }
        let usage = if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth };
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    /// A client certificate with CN `cn`.
    fn client(&self, name: &str, cn: &str) {
        self.issue(name, false, &[(DnType::OrganizationName, "Lepus"), (DnType::CommonName, cn)]);
    }

    fn config(&self, verify_peer: bool, fail_if_no_peer_cert: bool) -> Config {
        Config {
            tls_port: 0,
            tls_cert_file: Some(self.path("server.pem")),
            tls_key_file: Some(self.path("server.key")),
            tls_ca_file: Some(self.path("ca.pem")),
            tls_verify_peer: verify_peer,
            tls_fail_if_no_peer_cert: fail_if_no_peer_cert,
            ..common::test_config()
        }
    }

    /// A raw rustls client trusting the CA, presenting `client` (`{client}.pem/.key`) if given.
    fn connector(&self, client: Option<&str>) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(pem_certificate(&self.path("ca.pem"))).unwrap();
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let config = match client {
            Some(name) => {
                let key = std::fs::read(self.path(&format!("{name}.key"))).unwrap();
                let key = rustls_pki_types::pem::PemObject::from_pem_slice(&key).unwrap();
                let chain = vec![pem_certificate(&self.path(&format!("{name}.pem")))];
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }

    /// amqprs connection arguments over TLS, with `client`'s certificate if given.
    fn amqprs(
        &self,
        addr: std::net::SocketAddr,
        client: Option<&str>,
        user: &str,
        pass: &str,
    ) -> OpenConnectionArguments {
        let ca = self.path("ca.pem");
        let adaptor = match client {
            Some(name) => TlsAdaptor::with_client_auth(
                Some(&ca),
                &self.path(&format!("{name}.pem")),
                &self.path(&format!("{name}.key")),
                "localhost".into(),
            ),
            None => TlsAdaptor::without_client_auth(Some(&ca), "localhost".into()),
        };
        let mut args = OpenConnectionArguments::new("localhost", addr.port(), user, pass);
        args.tls_adaptor(adaptor.expect("TLS adaptor"));
        args
    }
}

fn pem_certificate(path: &Path) -> CertificateDer<'static> {
    rustls_pki_types::pem::PemObject::from_pem_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A running broker with its TLS listener.
struct TlsBroker {
    tls_addr: std::net::SocketAddr,
    addr: std::net::SocketAddr,
    service: lepus_broker::BrokerRef,
    tls: Arc<lepus_server::Tls>,
    handle: lepus_server::ShutdownHandle,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: Config) -> TlsBroker {
    let server = Server::bind(config).await.expect("broker binds");
    let tls_addr = server.tls_local_addr().expect("TLS listener").expect("bound");
    let addr = server.local_addr().unwrap();
    let (service, handle, tls) = (server.broker(), server.shutdown_handle(), server.tls().expect("TLS"));
    let task = tokio::spawn(server.run());
    TlsBroker { tls_addr, addr, service, tls, handle, task }
}

impl TlsBroker {
    /// A user with every permission on the default vhost.
    fn add_user(&self, name: &str, credential: Credential) {
        let command = NodeCommand::PutUser { name: name.into(), credential, tags: Vec::new() };
        self.service.execute_node(command).expect("user added");
        let all = || ".*".to_owned();
        let grant = NodeCommand::SetPermissions {
            user: name.into(),
            vhost: "/".into(),
            configure: all(),
            write: all(),
            read: all(),
        };
        self.service.execute_node(grant).expect("permissions set");
    }

    async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(HANG_GUARD, self.task).await.expect("broker stops").expect("broker task ok");
    }

    /// A raw AMQP client over TLS, after the handshake.
    async fn raw(&self, connector: &TlsConnector) -> Raw<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.tls_addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        Raw::over(connector.connect(name, tcp).await.expect("TLS handshake"))
    }
}

/// Publishes one message through `conn` and gets it back: the connection really works.
async fn round_trip(conn: &Connection, queue: &str) {
    let ch = conn.open_channel(None).await.expect("channel");
    ch.queue_declare(QueueDeclareArguments::new(queue).finish()).await.expect("declare");
    let publish = BasicPublishArguments::new("", queue);
    ch.basic_publish(BasicProperties::default(), b"over tls".to_vec(), publish).await.expect("publish");
    let got = loop {
        if let Some(got) = ch.basic_get(BasicGetArguments::new(queue).no_ack(true).finish()).await.expect("get") {
            break got;
        }
    };
    assert_eq!(got.2, b"over tls");
    ch.close().await.expect("channel close");
}

/// `connection.start`'s mechanisms, then start-ok with `mechanism`; the broker's answer.
async fn login<S>(raw: &mut Raw<S>, mechanism: &'static str, response: &str) -> (String, Method)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    raw.send(&PROTOCOL_HEADER).await;
    let Some((0, Method::ConnectionStart(start))) = raw.next_method().await else { panic!("expected start") };
    let caps = FieldTable::new().with("authentication_failure_close", true);
    let start_ok = ConnectionStartOk {
        client_properties: FieldTable::new().with("capabilities", caps),
        mechanism: ShortStr::from_static(mechanism),
        response: LongStr::from(response.to_owned()),
        locale: ShortStr::from_static("en_US"),
    };
    raw.send_method(0, start_ok).await;
    let (_, answer) = raw.next_method().await.expect("an answer to start-ok");
    (String::from_utf8_lossy(&start.mechanisms.0).into_owned(), answer)
}

fn quick_refusals(config: Config) -> Config {
    Config { login_failure_delay_ms: 0, ..config }
}

#[tokio::test]
async fn amqprs_over_tls_with_plain() {
    let pki = Pki::new("plain");
    pki.issue("server", true, &[(DnType::CommonName, "localhost")]);
    let broker = start(pki.config(false, false)).await;
    let conn = Connection::open(&pki.amqprs(broker.tls_addr, None, "guest", "guest")).await.expect("TLS + PLAIN");
    round_trip(&conn, "tls-plain").await;
    // The registry knows the session and the mechanism (the management API shows them).
    let open = broker.service.connections().list();
    let negotiated = &open.first().expect("registered").negotiated;
    assert_eq!(negotiated.auth_mechanism, "PLAIN");
    let tls = negotiated.tls.as_ref().expect("a TLS session");
    assert_eq!(tls.protocol, "tlsv1.3");
    assert!(tls.cipher_suite.starts_with("TLS13_"), "{tls:?}");
    assert!(negotiated.frame_max > 0 && negotiated.channel_max > 0, "{negotiated:?}");
    conn.close().await.expect("close");
    // Plain TCP goes on beside it, and offers no EXTERNAL.
    let mut raw = Raw::connect(broker.addr).await;
    let (mechanisms, answer) = login(&mut raw, "PLAIN", "\0guest\0guest").await;
    assert_eq!(mechanisms, "PLAIN AMQPLAIN");
    assert!(matches!(answer, Method::ConnectionTune(_)));
    // Without client verification, EXTERNAL is not offered over TLS either.
    let mut raw = broker.raw(&pki.connector(None)).await;
    assert_eq!(login(&mut raw, "PLAIN", "\0guest\0guest").await.0, "PLAIN AMQPLAIN");
    broker.stop().await;
}

#[tokio::test]
async fn external_logs_in_the_user_the_certificate_names() {
    let pki = Pki::new("external");
    pki.issue("server", true, &[(DnType::CommonName, "localhost")]);
    pki.client("app", "app");
    pki.client("stranger", "stranger");
    let broker = start(quick_refusals(pki.config(true, true))).await;
    broker.add_user("app", Credential::Passwordless);
    let mut args = pki.amqprs(broker.tls_addr, Some("app"), "", "");
    args.credentials(SecurityCredentials::new_external());
    let conn = Connection::open(&args).await.expect("EXTERNAL login");
    round_trip(&conn, "tls-external").await;
    conn.close().await.expect("close");

    // A certificate naming no user: 403, as RabbitMQ.
    let mut raw = broker.raw(&pki.connector(Some("stranger"))).await;
    let (mechanisms, answer) = login(&mut raw, "EXTERNAL", "").await;
    assert_eq!(mechanisms, "PLAIN AMQPLAIN EXTERNAL");
    let Method::ConnectionClose(close) = answer else { panic!("expected close, got {answer:?}") };
    assert_eq!(close.reply_code, 403);
    assert_eq!(
        close.reply_text.to_string(),
        "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."
    );
    // A passwordless user cannot log in with a password, whatever it is.
    let mut raw = broker.raw(&pki.connector(Some("app"))).await;
    let Method::ConnectionClose(close) = login(&mut raw, "PLAIN", "\0app\0").await.1 else { panic!("expected close") };
    assert_eq!(close.reply_code, 403);
    // PLAIN still works over the same listener, with a certificate.
    let mut raw = broker.raw(&pki.connector(Some("stranger"))).await;
    assert!(matches!(login(&mut raw, "PLAIN", "\0guest\0guest").await.1, Method::ConnectionTune(_)));
    broker.stop().await;
}

#[tokio::test]
async fn external_by_distinguished_name() {
    let pki = Pki::new("dn");
    pki.issue("server", true, &[(DnType::CommonName, "localhost")]);
    pki.client("app", "app");
    let config = Config { tls_cert_login_from: CertLoginFrom::DistinguishedName, ..pki.config(true, true) };
    let broker = start(config).await;
    broker.add_user("CN=app,O=Lepus", Credential::Passwordless);
    let mut raw = broker.raw(&pki.connector(Some("app"))).await;
    let answer = login(&mut raw, "EXTERNAL", "").await.1;
    assert!(matches!(answer, Method::ConnectionTune(_)), "{answer:?}");
    broker.stop().await;
}

#[tokio::test]
async fn without_a_required_client_certificate_the_handshake_fails() {
    let pki = Pki::new("required");
    pki.issue("server", true, &[(DnType::CommonName, "localhost")]);
    let broker = start(pki.config(true, true)).await;
    let tcp = TcpStream::connect(broker.tls_addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    // TLS 1.3: the client finishes its side first; the server's refusal comes on the first
    // read, and no AMQP byte ever does.
    if let Ok(mut tls) = pki.connector(None).connect(name, tcp).await {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut tls, &PROTOCOL_HEADER).await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(HANG_GUARD, tls.read(&mut buf)).await.expect("no hang");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // amqprs sees the failure as an error.
    assert!(Connection::open(&pki.amqprs(broker.tls_addr, None, "guest", "guest")).await.is_err());
    // When the certificate is only requested, a client without one gets in (PLAIN); EXTERNAL
    // is offered and refused for it.
    broker.stop().await;
    let broker = start(quick_refusals(pki.config(true, false))).await;
    let conn = Connection::open(&pki.amqprs(broker.tls_addr, None, "guest", "guest")).await.expect("PLAIN");
    conn.close().await.expect("close");
    let mut raw = broker.raw(&pki.connector(None)).await;
    let Method::ConnectionClose(close) = login(&mut raw, "EXTERNAL", "").await.1 else { panic!("expected close") };
    assert_eq!(close.reply_code, 403);
    broker.stop().await;
}

#[tokio::test]
async fn a_silent_tls_socket_is_released_at_the_handshake_timeout() {
    let pki = Pki::new("silent");
    pki.issue("server", true, &[(DnType::CommonName, "localhost")]);
    let config = Config { handshake_timeout_ms: 200, handshake_max: 1, ..pki.config(false, false) };
    let broker = start(config).await;
    // It holds the only handshake place until the broker drops it.
    let mut silent = TcpStream::connect(broker.tls_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(HANG_GUARD, silent.read(&mut buf)).await.expect("closed by the broker");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let conn =
        Connection::open(&pki.amqprs(broker.tls_addr, None, "guest", "guest")).await.expect("then a client gets in");
    conn.close().await.expect("close");
    broker.stop().await;
}

#[tokio::test]
async fn reload_gives_new_connections_the_new_certificate() {
    let pki = Pki::new("reload");
    let first = pki.issue("server", true, &[(DnType::CommonName, "first")]);
    let broker = start(pki.config(false, false)).await;
    let presented = |raw: &Raw<tokio_rustls::client::TlsStream<TcpStream>>| {
        raw.stream.get_ref().1.peer_certificates().expect("server certificate")[0].to_vec()
    };
    let open = Connection::open(&pki.amqprs(broker.tls_addr, None, "guest", "guest")).await.expect("connects");
    assert_eq!(presented(&broker.raw(&pki.connector(None)).await), first);

    let second = pki.issue("server", true, &[(DnType::CommonName, "second")]);
    broker.tls.reload().expect("reload");
    assert_eq!(presented(&broker.raw(&pki.connector(None)).await), second);
    round_trip(&open, "opened-before-the-reload").await;

    // A reload that fails (no key in the key file) keeps the certificate in use.
    std::fs::write(pki.path("server.key"), "no key here").unwrap();
    let error = broker.tls.reload().expect_err("refused").to_string();
    assert!(error.starts_with("no private key found in tls_key_file"), "{error}");
    assert_eq!(presented(&broker.raw(&pki.connector(None)).await), second);
    open.close().await.expect("close");
    broker.stop().await;
}

#[tokio::test]
async fn unreadable_files_stop_the_start_with_a_clear_error() {
    let pki = Pki::new("startup");
    let error = Server::bind(pki.config(false, false)).await.err().expect("refused").to_string();
    assert_eq!(
        error,
        format!(
            "cannot read tls_cert_file {}: No such file or directory (os error 2)",
            pki.path("server.pem").display()
        )
    );
}

/// The `lepus` binary with TLS from flags and `LEPUS_*` variables: SIGHUP reloads the
/// certificate (new connections get it), and a failed reload keeps the one in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary_s_certificate() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let pki = Pki::new("sighup");
    pki.issue("server", true, &[(DnType::CommonName, "first")]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lepus"))
        .args(["--bind-address", "127.0.0.1", "--port", "0", "--tls-port", "0", "--prometheus-port", "0"])
        .arg("--tls-cert-file")
        .arg(pki.path("server.pem"))
        .env("LEPUS_TLS_KEY_FILE", pki.path("server.key"))
        .env("LEPUS_DATA_DIR", pki.path("data"))
        .env("LEPUS_LOG", "info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("lepus starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut wait_for = move |text: &str| loop {
        let line = lines.next().expect("lepus logs before exiting").expect("utf-8 log");
        assert!(!line.contains("panicked"), "{line}");
        if line.contains(text) {
            return line;
        }
    };
    let line = wait_for("over TLS");
    let addr: std::net::SocketAddr =
        line.split("address=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    let presented = async |connector: &TlsConnector| {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("handshake");
        tls.get_ref().1.peer_certificates().expect("server certificate")[0].to_vec()
    };
    let connector = pki.connector(None);
    let first = presented(&connector).await;
    let second = pki.issue("server", true, &[(DnType::CommonName, "second")]);
    assert_ne!(first, second);
    let pid = child.id().to_string();
    let signal = |name: &str| assert!(Command::new("kill").args([name, &pid]).status().expect("kill").success());
    signal("-HUP");
    wait_for("TLS certificate reloaded");
    assert_eq!(presented(&connector).await, second);
    std::fs::write(pki.path("server.pem"), "garbage").unwrap();
    signal("-HUP");
    let failed = wait_for("TLS reload failed");
    assert!(failed.contains("no certificate found in tls_cert_file"), "{failed}");
    assert_eq!(presented(&connector).await, second);
    signal("-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "exit status {status:?}");
}

//! A minimal AMQP 0-9-1 client on the Lepus codec: handshake, synchronous set-up methods,
//! and split read/write halves for the load loops. Writes are batched by the callers.

use bytes::BytesMut;
use lepus_protocol::constants::PROTOCOL_HEADER;
use lepus_protocol::frame::write_method;
use lepus_protocol::method::*;
use lepus_protocol::{FieldTable, Frame, FrameType, LongStr, Method, ShortStr, parse_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::uri::{AmqpUri, TlsTarget};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// The read half of a connection, over TCP or TLS.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection, over TCP or TLS.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Reads frames from one half of a connection.
pub struct FrameReader {
    rd: ReadHalf,
    buf: BytesMut,
}

impl FrameReader {
    /// The next frame; `Ok(None)` at EOF.
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(f) = self.try_next()? {
                return Ok(Some(f));
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// A frame already buffered, without reading.
    pub fn try_next(&mut self) -> Result<Option<Frame>> {
        Ok(parse_frame(&mut self.buf, u32::MAX)?)
    }

    /// Reads more bytes; false at EOF.
    pub async fn fill(&mut self) -> Result<bool> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(256 * 1024);
        }
        Ok(self.rd.read_buf(&mut self.buf).await? > 0)
    }
}

pub struct Client {
    pub reader: FrameReader,
    pub writer: WriteHalf,
    pub frame_max: u32,
}

/// The TLS handshake, verifying the broker's certificate against the URI's CA file.
async fn tls_connect(stream: TcpStream, target: &TlsTarget) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&target.ca_file)? {
        roots.add(cert?)?;
    }
    let config = tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from(target.server_name.clone())?;
    Ok(connector.connect(name, stream).await?)
}

fn closed_error(m: &Method) -> Option<String> {
    match m {
        Method::ConnectionClose(c) => Some(format!("connection closed: {} {}", c.reply_code, c.reply_text)),
        Method::ChannelClose(c) => Some(format!("channel closed: {} {}", c.reply_code, c.reply_text)),
        _ => None,
    }
}

impl Client {
    /// Connects, authenticates with PLAIN, tunes (heartbeats off), opens the vhost and
    /// channel 1.
    pub async fn connect(uri: &AmqpUri) -> Result<Client> {
        let stream = TcpStream::connect((uri.host.as_str(), uri.port)).await?;
        stream.set_nodelay(true)?;
        let (rd, wr): (ReadHalf, WriteHalf) = match &uri.tls {
            None => {
                let (rd, wr) = stream.into_split();
                (Box::new(rd), Box::new(wr))
            }
            Some(target) => {
                let (rd, wr) = tokio::io::split(tls_connect(stream, target).await?);
                (Box::new(rd), Box::new(wr))
            }
        };
        let mut c = Client {
            reader: FrameReader { rd, buf: BytesMut::with_capacity(256 * 1024) },
            writer: wr,
            frame_max: 131_072,
        };
        c.writer.write_all(&PROTOCOL_HEADER).await?;
        c.expect(0, "connection.start").await?;
        let start_ok = ConnectionStartOk {
            client_properties: FieldTable::new().with("product", "lepus-perf"),
            mechanism: ShortStr::from_static("PLAIN"),
            response: LongStr::from(format!("\0{}\0{}", uri.user, uri.password)),
            locale: ShortStr::from_static("en_US"),
        };
        c.send(0, start_ok).await?;
        let Method::ConnectionTune(tune) = c.expect(0, "connection.tune").await? else { unreachable!() };
        c.frame_max = if tune.frame_max == 0 { 131_072 } else { tune.frame_max.min(131_072) };
        let channel_max = if tune.channel_max == 0 { 2047 } else { tune.channel_max };
        c.send(0, ConnectionTuneOk { channel_max, frame_max: c.frame_max, heartbeat: 0 }).await?;
        let vhost = ShortStr::try_from(uri.vhost.as_str()).map_err(|_| "vhost name too long")?;
        c.send(0, ConnectionOpen { virtual_host: vhost, ..Default::default() }).await?;
        c.expect(0, "connection.open-ok").await?;
        c.send(1, ChannelOpen::default()).await?;
        c.expect(1, "channel.open-ok").await?;
        Ok(c)
    }

    pub async fn send(&mut self, channel: u16, m: impl Into<Method>) -> Result<()> {
        let mut out = BytesMut::new();
        write_method(&mut out, channel, &m.into());
        self.writer.write_all(&out).await?;
        Ok(())
    }

    /// Reads until the method named `name` arrives on `channel`.
    pub async fn expect(&mut self, channel: u16, name: &str) -> Result<Method> {
        loop {
            let Some(frame) = self.reader.next().await? else { return Err(format!("EOF waiting for {name}").into()) };
            if frame.frame_type != FrameType::Method {
                continue;
            }
            let m = Method::decode(frame.payload)?;
            if let Some(e) = closed_error(&m) {
                return Err(e.into());
            }
            if frame.channel == channel && m.name() == name {
                return Ok(m);
            }
        }
    }

    /// Sends `m` on channel 1 and waits for the reply named `reply`.
    pub async fn call(&mut self, m: impl Into<Method>, reply: &str) -> Result<Method> {
        self.send(1, m).await?;
        self.expect(1, reply).await
    }

    pub async fn close(mut self) -> Result<()> {
        self.send(0, ConnectionClose { reply_code: 200, ..Default::default() }).await?;
        let _ = self.expect(0, "connection.close-ok").await;
        Ok(())
    }
}

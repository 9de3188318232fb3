//! A discarding AMQP endpoint for measuring the load generator's own ceiling: it answers the
//! handshake and every synchronous set-up method a producer sends, acknowledges confirms,
//! and throws everything else away. Publishing into it shows how fast `lepus-perf` itself
//! can produce, so the tool's limit is never mistaken for a broker's.

use bytes::BytesMut;
use lepus_protocol::constants::PROTOCOL_HEADER;
use lepus_protocol::frame::write_method;
use lepus_protocol::method::*;
use lepus_protocol::{FieldTable, FrameType, LongStr, Method, ShortStr, parse_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::Result;

/// Serves discarding connections on `port` until the process ends.
pub async fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("lepus-perf: sink listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = connection(stream).await;
        });
    }
}

async fn connection(mut stream: TcpStream) -> Result<()> {
    let mut buf = BytesMut::with_capacity(1 << 20);
    while buf.len() < PROTOCOL_HEADER.len() {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    let _ = buf.split_to(PROTOCOL_HEADER.len());
    let mut out = BytesMut::new();
    let start = ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: FieldTable::new().with("product", "lepus-perf sink"),
        mechanisms: LongStr::from("PLAIN"),
        locales: LongStr::from("en_US"),
    };
    write_method(&mut out, 0, &start.into());
    stream.write_all(&out).await?;
    let mut published = 0u64;
    let mut confirming = false;
    loop {
        out.clear();
        while let Some(frame) = parse_frame(&mut buf, u32::MAX)? {
            if frame.frame_type != FrameType::Method {
                continue;
            }
            let reply: Option<Method> = match Method::decode(frame.payload)? {
                Method::ConnectionStartOk(_) => {
                    Some(ConnectionTune { channel_max: 2047, frame_max: 131_072, heartbeat: 0 }.into())
                }
                Method::ConnectionOpen(_) => Some(ConnectionOpenOk { known_hosts: ShortStr::default() }.into()),
                Method::ChannelOpen(_) => Some(ChannelOpenOk::default().into()),
                Method::ConfirmSelect(_) => {
                    confirming = true;
                    Some(ConfirmSelectOk {}.into())
                }
                Method::QueueDeclare(q) => {
                    Some(QueueDeclareOk { queue: q.queue, message_count: 0, consumer_count: 0 }.into())
                }
                Method::QueuePurge(_) => Some(QueuePurgeOk { message_count: 0 }.into()),
                Method::QueueDelete(_) => Some(QueueDeleteOk { message_count: 0 }.into()),
                Method::QueueBind(_) => Some(QueueBindOk {}.into()),
                Method::ExchangeDeclare(_) => Some(ExchangeDeclareOk {}.into()),
                Method::ExchangeDelete(_) => Some(ExchangeDeleteOk {}.into()),
                Method::BasicQos(_) => Some(BasicQosOk {}.into()),
                Method::BasicPublish(_) => {
                    published += 1;
                    None
                }
                Method::ConnectionClose(_) => {
                    write_method(&mut out, 0, &ConnectionCloseOk {}.into());
                    stream.write_all(&out).await?;
                    return Ok(());
                }
                _ => None,
            };
            if let Some(m) = reply {
                write_method(&mut out, frame.channel, &m);
            }
        }
        if confirming && published > 0 {
            write_method(&mut out, 1, &BasicAck { delivery_tag: published, multiple: true }.into());
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(1 << 20);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

//! The byte stream a connection runs over: anything that splits into a read half and a write
//! half. Plain TCP splits without a lock (`TcpStream::into_split`); TLS, next, wraps a stream
//! and splits it its own way. The connection never names a socket type.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub trait Transport: Send + 'static {
    type Read: AsyncRead + Send + Unpin + 'static;
    type Write: AsyncWrite + Send + Unpin + 'static;

    /// Splits the stream, after tuning it for small writes (no Nagle delay).
    fn split(self) -> (Self::Read, Self::Write);
}

impl Transport for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        // Without it every small reply waits for the peer's delayed ack.
        let _ = self.set_nodelay(true);
        self.into_split()
    }
}

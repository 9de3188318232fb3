//! The byte stream a connection runs over: anything that splits into a read half and a write
//! half. Plain TCP splits without a lock (`TcpStream::into_split`); TLS (tokio-rustls over
//! TCP) splits with `tokio::io::split`, whose halves share the stream behind a lock taken once
//! per read or write call, not per frame. The connection is generic over the transport, so
//! plain TCP pays nothing for TLS existing: no dynamic dispatch, no extra copy. The
//! connection never names a socket type.

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;

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

impl Transport for TlsStream<TcpStream> {
    type Read = ReadHalf<TlsStream<TcpStream>>;
    type Write = WriteHalf<TlsStream<TcpStream>>;

    fn split(self) -> (Self::Read, Self::Write) {
        let _ = self.get_ref().0.set_nodelay(true);
        tokio::io::split(self)
    }
}

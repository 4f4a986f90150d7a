//! The reading side of a stream clone (see `clone_stream.rs`) on a session of
//! its own making: just enough of the PostgreSQL wire protocol to log in, run
//! simple statements and take a `COPY ... TO STDOUT` as raw bytes.
//!
//! Why not tokio-postgres, as everywhere else: the server sends one CopyData
//! message per row, and the driver turns each into a message object and a
//! wake-up of the reading task. On a 1 GB table that was over a CPU second
//! of the clone's budget, CPU the two servers' COPYs need. Here the socket is
//! read in large blocks and the rows' bytes are cut out of the CopyData
//! frames in place; the target's `COPY ... FROM STDIN` takes the stream in
//! any framing, so the result goes to it in large batches.
//!
//! Plain connections only, like every admin session (`open_admin`): the
//! admin URL names the server itself, never through TLS.
use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use capydb_domain::ports::ProviderError;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::{failure_as, sqlstate_is_retryable, Cause};

/// Socket reads of this size: a few hundred rows' frames per read.
const READ_BLOCK: usize = 256 * 1024;
/// TCP keepalive idle time, the admin sessions' (`PgProvider::connect`).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a source session failed.
#[derive(Debug)]
pub enum SourceError {
    /// The server said no: an ErrorResponse, with its SQLSTATE.
    Db { code: String, message: String },
    /// The connection failed or was lost.
    Io(io::Error),
    /// The server sent what the protocol does not allow here, or a login
    /// this client cannot do.
    Protocol(String),
}

impl From<io::Error> for SourceError {
    fn from(e: io::Error) -> Self {
        SourceError::Io(e)
    }
}

/// A message we could not even encode (a NUL byte in the SQL or the
/// password): a request error, never worth a retry.
fn encoding(e: io::Error) -> SourceError {
    SourceError::Protocol(format!("could not encode a message: {e}"))
}

impl SourceError {
    /// The same split as `from_pg`: the server's SQLSTATE decides, a lost
    /// connection is retryable, anything else is permanent. The message is
    /// a user's (`Cause`); the server's words are logged.
    pub fn into_provider(self, what: &str) -> ProviderError {
        match self {
            SourceError::Db { code, message } => {
                let retryable = sqlstate_is_retryable(&code, &message);
                let detail = format!("{message} (SQLSTATE {code})");
                failure_as(retryable, Cause::of_sqlstate(&code, &message), what, &detail)
            }
            SourceError::Io(e) => {
                failure_as(true, Cause::Unreachable, what, &format!("connection to the source failed: {e}"))
            }
            SourceError::Protocol(m) => failure_as(false, Cause::Internal, what, &m),
        }
    }
}

pub type Result<T> = std::result::Result<T, SourceError>;

/// One backend message: its tag and body (the length word stripped).
struct Message {
    tag: u8,
    body: Bytes,
}

/// A logged-in session on the source server.
pub struct SourceSession {
    stream: Box<dyn Stream>,
    buf: BytesMut,
}

impl SourceSession {
    /// Connects and logs in as `config` says (host or Unix socket, user,
    /// password, database, options), within `timeout`.
    pub async fn connect(config: &Config, timeout: Duration) -> Result<SourceSession> {
        tokio::time::timeout(timeout, Self::connect_now(config)).await.unwrap_or_else(|_| {
            Err(SourceError::Io(io::Error::new(io::ErrorKind::TimedOut, format!("timed out after {timeout:?}"))))
        })
    }

    async fn connect_now(config: &Config) -> Result<SourceSession> {
        let stream = open_stream(config).await?;
        let mut session = SourceSession { stream, buf: BytesMut::with_capacity(READ_BLOCK) };
        session.log_in(config).await?;
        Ok(session)
    }

    async fn log_in(&mut self, config: &Config) -> Result<()> {
        let user = config.get_user().ok_or_else(|| SourceError::Protocol("no user to log in as".into()))?;
        let mut params = vec![("client_encoding", "UTF8"), ("user", user)];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        if let Some(name) = config.get_application_name() {
            params.push(("application_name", name));
        }
        let mut out = BytesMut::new();
        frontend::startup_message(params, &mut out).map_err(encoding)?;
        self.send(&out).await?;

        let password = || {
            config
                .get_password()
                .ok_or_else(|| SourceError::Protocol("the server asks for a password and none is configured".into()))
        };
        let mut scram: Option<ScramSha256> = None;
        let mut scram_verified = false;
        loop {
            let msg = self.next_message().await?;
            match msg.tag {
                b'R' => {
                    let mut body = msg.body;
                    if body.len() < 4 {
                        return Err(SourceError::Protocol("short authentication message".into()));
                    }
                    let mut out = BytesMut::new();
                    match body.get_i32() {
                        // After SCRAM, only once the server proved it knows
                        // the password too (its final message, checked below).
                        0 if scram.is_some() && !scram_verified => {
                            return Err(SourceError::Protocol("the server ended SCRAM without proving itself".into()))
                        }
                        0 => {}
                        3 => frontend::password_message(password()?, &mut out).map_err(encoding)?,
                        5 if body.len() < 4 => return Err(SourceError::Protocol("short md5 salt".into())),
                        5 => {
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(user.as_bytes(), password()?, salt);
                            frontend::password_message(hash.as_bytes(), &mut out).map_err(encoding)?;
                        }
                        10 => {
                            let offered = body.split(|b| *b == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
                            if !offered {
                                return Err(SourceError::Protocol(
                                    "the server offers no SASL mechanism this client has".into(),
                                ));
                            }
                            let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                            frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out).map_err(encoding)?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| SourceError::Protocol("SASL continue out of turn".into()))?;
                            s.update(&body).map_err(|e| SourceError::Protocol(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(s.message(), &mut out).map_err(encoding)?;
                        }
                        12 => {
                            let s =
                                scram.as_mut().ok_or_else(|| SourceError::Protocol("SASL final out of turn".into()))?;
                            s.finish(&body).map_err(|e| SourceError::Protocol(format!("SCRAM: {e}")))?;
                            scram_verified = true;
                        }
                        code => return Err(SourceError::Protocol(format!("unsupported authentication method {code}"))),
                    }
                    if !out.is_empty() {
                        self.send(&out).await?;
                    }
                }
                b'E' => return Err(db_error(&msg.body)),
                // Parameter status, backend key data, notices: nothing to keep.
                b'S' | b'K' | b'N' => {}
                b'Z' => return Ok(()),
                tag => return Err(unexpected(tag, "logging in")),
            }
        }
    }

    /// Runs `sql` (one or more statements, simple protocol) and waits for the
    /// server to be ready again. Rows are not wanted and are dropped.
    pub async fn execute(&mut self, sql: &str) -> Result<()> {
        self.send_query(sql).await?;
        self.finish_command("running a statement").await
    }

    /// Starts `COPY ... TO STDOUT`; its data is read with `CopyOut::next_batch`.
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>> {
        self.send_query(sql).await?;
        loop {
            let msg = self.next_message().await?;
            match msg.tag {
                b'H' => return Ok(CopyOut { session: self, state: CopyState::Data }),
                b'E' => {
                    // Ready again, or closed after a FATAL one: either way
                    // the server's error is the answer.
                    let _ = self.finish_command("starting COPY").await;
                    return Err(db_error(&msg.body));
                }
                b'N' | b'S' | b'A' => {}
                tag => return Err(unexpected(tag, "starting COPY")),
            }
        }
    }

    async fn send_query(&mut self, sql: &str) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(encoding)?;
        self.send(&out).await
    }

    /// Reads up to ReadyForQuery, the end of the command under way, and
    /// answers with the server's error if it sent one, also when a FATAL
    /// error closed the connection after it: the server's error is the
    /// answer, not the closed socket.
    async fn finish_command(&mut self, doing: &str) -> Result<()> {
        let mut failed = None;
        loop {
            let msg = match self.next_message().await {
                Ok(msg) => msg,
                Err(e) => return Err(failed.unwrap_or(e)),
            };
            match msg.tag {
                b'E' => failed = Some(db_error(&msg.body)),
                b'Z' => return failed.map_or(Ok(()), Err),
                // Row description, data rows, command complete, empty query, notices, parameter status, notifications.
                b'T' | b'D' | b'C' | b'I' | b'N' | b'S' | b'A' => {}
                tag => return Err(failed.unwrap_or_else(|| unexpected(tag, doing))),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads more from the socket; the end of the stream is an error (the
    /// protocol always ends with a message we wait for).
    async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(READ_BLOCK);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(SourceError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        Ok(())
    }

    /// The next whole message, reading from the socket until it is there.
    async fn next_message(&mut self) -> Result<Message> {
        loop {
            if let Some((_, total)) = frame(&self.buf)? {
                let mut frame = self.buf.split_to(total);
                let tag = frame[0];
                frame.advance(5);
                return Ok(Message { tag, body: frame.freeze() });
            }
            self.fill().await?;
        }
    }
}

enum CopyState {
    Data,
    /// CopyDone seen: the command's completion and ReadyForQuery follow.
    Done,
    Finished,
}

/// A `COPY ... TO STDOUT` under way.
pub struct CopyOut<'a> {
    session: &'a mut SourceSession,
    state: CopyState,
}

impl CopyOut<'_> {
    /// The next `at_least` bytes or more of the COPY's data (whole frames'
    /// payloads, concatenated), fewer only at its end; `None` once it has
    /// ended and the session is ready for the next statement.
    pub async fn next_batch(&mut self, at_least: usize) -> Result<Option<Bytes>> {
        let mut batch = BytesMut::with_capacity(at_least + READ_BLOCK);
        loop {
            match self.state {
                CopyState::Data => {
                    self.take_data(&mut batch)?;
                    if batch.len() >= at_least {
                        return Ok(Some(batch.freeze()));
                    }
                    if matches!(self.state, CopyState::Data) {
                        self.session.fill().await?;
                    }
                }
                CopyState::Done => {
                    if !batch.is_empty() {
                        return Ok(Some(batch.freeze()));
                    }
                    self.state = CopyState::Finished;
                    self.session.finish_command("ending COPY").await?;
                }
                CopyState::Finished => return Ok(None),
            }
        }
    }

    /// Moves the payloads of the complete CopyData frames in the buffer into
    /// `batch`; stops at CopyDone or at an error, which ends the COPY.
    fn take_data(&mut self, batch: &mut BytesMut) -> Result<()> {
        let buf = &mut self.session.buf;
        let mut at = 0;
        let result = loop {
            let (tag, total) = match frame(&buf[at..]) {
                Ok(Some(complete)) => complete,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            match tag {
                b'd' => batch.extend_from_slice(&buf[at + 5..at + total]),
                b'c' => {
                    at += total;
                    self.state = CopyState::Done;
                    break Ok(());
                }
                // An error ends the COPY: leave it for the Done state to read.
                b'E' => {
                    self.state = CopyState::Done;
                    break Ok(());
                }
                b'N' | b'S' | b'A' => {}
                tag => break Err(unexpected(tag, "reading COPY data")),
            }
            at += total;
        };
        buf.advance(at);
        result
    }
}

async fn open_stream(config: &Config) -> Result<Box<dyn Stream>> {
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    let mut last = None;
    for (i, host) in hosts.iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let attempt: io::Result<Box<dyn Stream>> = match host {
            Host::Tcp(name) => tokio::net::TcpStream::connect((name.as_str(), port)).await.and_then(|s| {
                s.set_nodelay(true)?;
                // As the admin sessions do: a peer gone silent is found out
                // instead of holding a clone worker for good.
                socket2::SockRef::from(&s)
                    .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE))?;
                Ok(Box::new(s) as Box<dyn Stream>)
            }),
            #[cfg(unix)]
            Host::Unix(dir) => tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                .await
                .map(|s| Box::new(s) as Box<dyn Stream>),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| SourceError::Protocol("no host to connect to".into()), SourceError::Io))
}

/// The tag and the whole length (tag byte and length word included) of the
/// message at the front of `buf`, once all of it is there.
fn frame(buf: &[u8]) -> Result<Option<(u8, usize)>> {
    let [tag, a, b, c, d, ..] = *buf else { return Ok(None) };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len < 4 {
        return Err(SourceError::Protocol(format!("invalid message length {len}")));
    }
    Ok((buf.len() > len).then_some((tag, 1 + len)))
}

/// An ErrorResponse's SQLSTATE (`C`) and message (`M`).
fn db_error(body: &[u8]) -> SourceError {
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', value)) => code = String::from_utf8_lossy(value).into_owned(),
            Some((b'M', value)) => message = String::from_utf8_lossy(value).into_owned(),
            _ => {}
        }
    }
    SourceError::Db { code, message }
}

fn unexpected(tag: u8, doing: &str) -> SourceError {
    SourceError::Protocol(format!("unexpected message {:?} from the server while {doing}", tag as char))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_give_the_sqlstate_and_message() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0Fparse_relation.c\0\0";
        match db_error(body) {
            SourceError::Db { code, message } => {
                assert_eq!(code, "42P01");
                assert_eq!(message, "relation \"t\" does not exist");
            }
            e => panic!("{e:?}"),
        }
        let retryable = SourceError::Db { code: "57P01".into(), message: "terminating".into() };
        assert!(
            matches!(retryable.into_provider("copy"), ProviderError::Retryable(m) if m == Cause::Restarting.message())
        );
        let lost = SourceError::Io(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert!(matches!(lost.into_provider("copy"), ProviderError::Retryable(_)));
    }
}

//! A `redis-server` child process on a free loopback port, for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_llm_redis::testing::RedisServer;
//!
//! // `None` when `redis-server` is not on the PATH and `TOWER_LLM_REQUIRE_REDIS` is not `1`
//! // (the test prints that it was skipped); an error when it is required and missing.
//! let Some(server) = RedisServer::start_or_skip("my_test").await? else { return Ok(()) };
//! let url = server.url(); // "redis://127.0.0.1:<port>/0"
//! # let _ = url;
//! server.stop().await; // or drop it: the child is killed on drop
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The environment variable that turns a missing `redis-server` into a test failure (CI sets it).
pub const REQUIRE_REDIS_ENV: &str = "TOWER_LLM_REQUIRE_REDIS";

/// How long [`RedisServer::start`] waits for the server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child listening on `127.0.0.1:<port>`, without persistence; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts a server unless `redis-server` is missing from the PATH: then prints that `test`
    /// was skipped and returns `Ok(None)`, or fails when [`REQUIRE_REDIS_ENV`] is `1`.
    pub async fn start_or_skip(test: &str) -> io::Result<Option<Self>> {
        match Self::start().await {
            Ok(server) => Ok(Some(server)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !redis_required() => {
                eprintln!("skipped {test}: redis-server is not on the PATH ({REQUIRE_REDIS_ENV}=1 makes this a failure)");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Starts a server on a free loopback port and waits until it answers `PING`.
    pub async fn start() -> io::Result<Self> {
        Self::start_on(free_port()?).await
    }

    /// Starts a server on `port` (a restart of a stopped server keeps its address).
    pub async fn start_on(port: u16) -> io::Result<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut server = Self {
            child: Some(child),
            addr,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL a client connects with: `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Kills the server and waits for it to exit (a test of "Redis down" calls this, then
    /// [`RedisServer::start_on`] with the same port for "Redis back").
    pub async fn stop(mut self) {
        self.kill().await;
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    async fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "redis-server exited at start ({status}); is port {} free?",
                        self.addr.port()
                    )));
                }
            }
            if ping(self.addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill().await;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server on {} did not answer PING within {READY_TIMEOUT:?}",
                        self.addr
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether [`REQUIRE_REDIS_ENV`] asks for a failure instead of a skip.
pub fn redis_required() -> bool {
    std::env::var(REQUIRE_REDIS_ENV).is_ok_and(|v| v == "1")
}

/// A port that was free a moment ago (bound to port 0, then released).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// One `PING` in RESP over a fresh connection.
async fn ping(addr: SocketAddr) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).await?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(io::Error::other("unexpected reply to PING"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // `kill_on_drop` also does this; starting the kill here makes it immediate.
            let _ = child.start_kill();
        }
    }
}

//! A TCP proxy in front of a server (moto) that can be switched off: while down, its port
//! refuses connections and every open connection is cut, as when a storage endpoint or the
//! network to it fails. Switched on again, it listens on the same port.
//!
//! While up it can also misbehave: cut a random share of requests ([`Proxy::set_fail_ratio`])
//! or hold every request unanswered ([`Proxy::set_stalled`]), as a flaky or hung endpoint does.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running proxy; stopped when dropped.
pub struct Proxy {
    port: u16,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    /// Stops the accept loop (going down or dropping).
    stop: AtomicBool,
    /// Both sockets of every open connection, to cut them when going down.
    open: Mutex<HashMap<u64, [TcpStream; 2]>>,
    next_id: AtomicU64,
    /// Requests cut, per million (0 = none).
    fail_ppm: AtomicU32,
    /// xorshift state for choosing the requests to cut.
    rng: AtomicU64,
    /// Requests are held, not forwarded.
    stalled: AtomicBool,
    /// Requests cut so far.
    cuts: AtomicU64,
    /// Bytes the server sent to clients (responses, headers included).
    bytes_down: AtomicU64,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> io::Result<Proxy> {
        let upstream: SocketAddr =
            upstream.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{upstream}: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut p = Proxy { port, upstream, shared: Arc::new(Shared::default()), acceptor: None };
        p.serve(listener)?;
        Ok(p)
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes the server has sent through the proxy so far (what clients downloaded).
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts each request a client sends with probability `ratio` (0.0 ..= 1.0): the connection
    /// is closed instead of the request being forwarded. `seed` chooses which ones.
    pub fn set_fail_ratio(&self, ratio: f64, seed: u64) {
        self.shared.rng.store(seed | 1, Ordering::SeqCst);
        self.shared.fail_ppm.store((ratio.clamp(0.0, 1.0) * 1e6) as u32, Ordering::SeqCst);
    }

    /// How many requests [`Proxy::set_fail_ratio`] has cut so far.
    pub fn cut_requests(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// While `on`, requests are held unanswered (connections stay open), as when the endpoint
    /// hangs; switched off, held requests go on (if their clients are still waiting).
    pub fn set_stalled(&self, on: bool) {
        self.shared.stalled.store(on, Ordering::SeqCst);
    }

    /// True while the proxy accepts connections.
    pub fn is_up(&self) -> bool {
        self.acceptor.is_some()
    }

    /// Refuses new connections and cuts open ones.
    pub fn down(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap_or_else(|p| p.into_inner()));
        for s in open.values().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn up(&mut self) -> io::Result<()> {
        if self.is_up() {
            return Ok(());
        }
        // The port was released a moment ago; binding it again can race TIME_WAIT rules.
        let mut last = None;
        for _ in 0..100 {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => {
                    self.shared.stop.store(false, Ordering::SeqCst);
                    return self.serve(l);
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(last.unwrap_or_else(|| io::Error::other("bind failed")))
    }

    fn serve(&mut self, listener: TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let (shared, upstream) = (self.shared.clone(), self.upstream);
        self.acceptor = Some(std::thread::spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, upstream, shared.clone()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // Dropping the listener here closes the port: connections are refused.
        }));
        Ok(())
    }
}

fn forward(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) =
        (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone())
    else {
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    shared.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, [c3, s3]);
    let counter = shared.clone();
    let back = std::thread::spawn(move || pipe(s2, c2, &counter.bytes_down));
    std::thread::spawn(move || {
        requests(client, server, &shared);
        let _ = back.join();
        shared.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    });
}

fn pipe(mut from: TcpStream, mut to: TcpStream, bytes: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Client to server: forwards each chunk (a request, or part of one) unless the proxy stalls
/// it or chooses to cut it.
fn requests(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while shared.stalled.load(Ordering::SeqCst) {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if cut(shared) {
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn cut(shared: &Shared) -> bool {
    let ppm = shared.fail_ppm.load(Ordering::SeqCst);
    if ppm == 0 {
        return false;
    }
    let mut x = shared.rng.load(Ordering::SeqCst);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    shared.rng.store(x, Ordering::SeqCst);
    (x % 1_000_000) < u64::from(ppm)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

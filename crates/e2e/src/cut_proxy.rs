//! A TCP forwarder on a free port of 127.0.0.1 to another local port that a test can cut:
//! while cut, open connections are shut down and new ones closed at once — one instance's
//! network to Redis failing while the others still reach it.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// The forwarder; stops (and shuts its connections) on drop.
pub struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl CutProxy {
    /// Forwards a free port of 127.0.0.1 to 127.0.0.1:`target`.
    pub fn start(target: u16) -> io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (cut, stopping, connections) = (
                Arc::clone(&cut),
                Arc::clone(&stopping),
                Arc::clone(&connections),
            );
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    if cut.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    forward(&client, &upstream, &connections);
                }
            })
        };
        Ok(CutProxy {
            port,
            cut,
            stopping,
            connections,
            acceptor: Some(acceptor),
        })
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts every open connection and refuses new ones until [`CutProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.shut_all();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn shut_all(&self) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for stream in connections.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies both ways between `client` and `upstream` on two threads; both streams are kept in
/// `connections` so that a cut can shut them.
fn forward(client: &TcpStream, upstream: &TcpStream, connections: &Mutex<Vec<TcpStream>>) {
    let pairs = [(client, upstream), (upstream, client)];
    for (from, to) in pairs {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
            return;
        };
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
    let mut kept = connections.lock().unwrap_or_else(|e| e.into_inner());
    for stream in [client, upstream] {
        if let Ok(stream) = stream.try_clone() {
            kept.push(stream);
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.shut_all();
        // Wake the acceptor so that it sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

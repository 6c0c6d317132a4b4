//! The admin endpoint, apart from the data path: a TCP listener (loopback
//! by default) that answers each connection with the current counters as
//! JSON and closes it. Workers publish snapshots now and then (never per
//! packet); `tensorwire stats` reads them.

use serde_json::{Map, Value};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The latest snapshot of every component's counters.
#[derive(Debug, Default)]
pub struct StatsBoard {
    entries: Mutex<Map<String, Value>>,
}

impl StatsBoard {
    pub fn new() -> Arc<StatsBoard> {
        Arc::new(StatsBoard::default())
    }

    /// Replaces the snapshot published under `key`.
    pub fn publish(&self, key: &str, value: impl serde::Serialize) {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), v);
    }

    pub fn snapshot(&self) -> Value {
        Value::Object(
            self.entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Serves `board` on `addr` in a background thread until `shutdown`.
pub fn spawn(
    addr: SocketAddr,
    board: Arc<StatsBoard>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("tensorwire-admin".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let body = serde_json::to_vec_pretty(&board.snapshot()).unwrap_or_default();
                        let _ = s.write_all(&body);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok(local)
}

/// Reads a running proxy's counters from its admin endpoint.
pub fn fetch(addr: SocketAddr, timeout: Duration) -> io::Result<Value> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_snapshots() {
        let board = StatsBoard::new();
        board.publish("queue0", serde_json::json!({"frames": 3}));
        let stop = Arc::new(AtomicBool::new(false));
        let addr = spawn("127.0.0.1:0".parse().unwrap(), board.clone(), stop.clone()).unwrap();
        let v = fetch(addr, Duration::from_secs(2)).unwrap();
        assert_eq!(v["queue0"]["frames"], 3);
        board.publish("queue0", serde_json::json!({"frames": 5}));
        assert_eq!(
            fetch(addr, Duration::from_secs(2)).unwrap()["queue0"]["frames"],
            5
        );
        stop.store(true, Ordering::Relaxed);
    }
}

//! Readiness probes and port checks: a minimal blocking HTTP/1.1 GET (no client library, short
//! timeouts, loopback only) and "is this port free" by binding it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::plan::{LOOPBACK, PortUse};

/// `GET path` on `address`; returns the status code and the body (at most 1 MiB).
pub fn http_get(address: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// Decodes a chunked body (best effort: probes only read small bodies).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 || rest.len() < size {
            out.push_str(rest.get(..size.min(rest.len())).unwrap_or(""));
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Whether `GET path` answers 200.
pub fn http_ok(address: SocketAddr, path: &str) -> bool {
    matches!(
        http_get(address, path, Duration::from_millis(500)),
        Ok((200, _))
    )
}

/// The value of an unlabelled-or-labelled sample line `name{labels} value` in Prometheus
/// text, e.g. `sample(text, "fusioninfer_epp_endpoints{state=\"ready\"}")`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.split_whitespace().next()?;
        if !rest.starts_with(' ') {
            return None;
        }
        value.parse().ok()
    })
}

/// A port that cannot be bound.
#[derive(Debug)]
pub struct PortTaken {
    /// What wanted it.
    pub port: PortUse,
    /// Why binding failed.
    pub error: io::Error,
}

/// Binds each port on 127.0.0.1 (and releases it) to report every taken one before anything
/// starts.
pub fn check_ports(ports: &[PortUse]) -> Vec<PortTaken> {
    ports
        .iter()
        .filter_map(
            |p| match TcpListener::bind(SocketAddr::new(LOOPBACK, p.port)) {
                Ok(_) => None,
                Err(error) => Some(PortTaken {
                    port: p.clone(),
                    error,
                }),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_series() {
        let text = "# HELP x\nfusioninfer_epp_endpoints{state=\"known\"} 4\nfusioninfer_epp_endpoints{state=\"ready\"} 3\n";
        assert_eq!(
            sample(text, "fusioninfer_epp_endpoints{state=\"ready\"}"),
            Some(3.0)
        );
        assert_eq!(sample(text, "fusioninfer_epp_endpoints"), None);
        assert_eq!(sample(text, "missing"), None);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk("4\r\nLIVE\r\n1\r\n\n\r\n0\r\n\r\n"), "LIVE\n");
    }

    #[test]
    fn a_bound_port_is_reported_with_its_flag() {
        let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = check_ports(&[PortUse {
            port,
            what: "the Envoy listener".to_owned(),
            flag: "--port",
        }]);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].port.flag, "--port");
        assert_eq!(taken[0].error.kind(), io::ErrorKind::AddrInUse);
        drop(listener);
    }

    #[test]
    fn http_get_reads_status_and_body() {
        let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "request cut short");
                request.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nLIVE")
                .unwrap();
        });
        let (status, body) = http_get(address, "/ready", Duration::from_secs(2)).unwrap();
        server.join().unwrap();
        assert_eq!((status, body.as_str()), (200, "LIVE"));
    }
}

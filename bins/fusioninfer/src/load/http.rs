//! A minimal HTTP/1.1 client over hyper for loopback load: one connection per request, no
//! TLS (so no TLS back end to configure, whatever features a workspace build unifies), bodies
//! read frame by frame so streamed answers can be timed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A parsed `http://` URL on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopbackUrl {
    /// Where to connect.
    pub address: SocketAddr,
    /// The `Host` header.
    pub authority: String,
    /// The path prefix, without a trailing slash (`/v1`).
    pub path: String,
}

impl LoopbackUrl {
    /// Parses `http://127.0.0.1:8080/v1` (also `localhost` and `[::1]`). Anything that is not
    /// plain HTTP on a loopback address is refused: the load generator never dials elsewhere.
    pub fn parse(url: &str) -> Result<LoopbackUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs on this machine are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => (
                &authority[..i],
                authority[i + 1..]
                    .parse::<u16>()
                    .map_err(|_| format!("{url}: bad port"))?,
            ),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().map_err(|_| {
                format!(
                    "{url} is not a loopback address; the load generator only sends to this machine"
                )
            })?
        };
        if !ip.is_loopback() {
            return Err(format!(
                "{url} is not a loopback address; the load generator only sends to this machine"
            ));
        }
        Ok(LoopbackUrl {
            address: SocketAddr::new(ip, port),
            authority: authority.to_owned(),
            path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// An answer whose body has not been read yet.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    body: Incoming,
}

impl Response {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next chunk of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match self.body.frame().await? {
                Err(e) => return Some(Err(e.to_string())),
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
            }
        }
    }

    /// The whole body.
    pub async fn bytes(mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunk().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }
}

/// Sends `method url.path+path` with an optional JSON body on a new connection.
pub async fn request(
    method: &str,
    url: &LoopbackUrl,
    path: &str,
    json: Option<&serde_json::Value>,
) -> Result<Response, String> {
    let stream = TcpStream::connect(url.address)
        .await
        .map_err(|e| format!("connecting to {}: {e}", url.address))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", url.address))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let body = json
        .map(|v| Bytes::from(serde_json::to_vec(v).expect("JSON")))
        .unwrap_or_default();
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", url.path))
        .header("host", &url.authority)
        .header("accept", "*/*");
    if json.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {}{path}: {e}", url.path))?;
    let (parts, body) = response.into_parts();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_only_loopback_passes() {
        let u = LoopbackUrl::parse("http://127.0.0.1:8080/v1/").unwrap();
        assert_eq!(u.address, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(u.path, "/v1");
        assert_eq!(u.authority, "127.0.0.1:8080");
        let u = LoopbackUrl::parse("http://localhost:9000").unwrap();
        assert_eq!(u.address.port(), 9000);
        assert_eq!(u.path, "");
        assert!(LoopbackUrl::parse("http://[::1]:8080/v1").is_ok());
        assert!(LoopbackUrl::parse("http://10.0.0.1:8080/v1").is_err());
        assert!(LoopbackUrl::parse("http://example.com/v1").is_err());
        assert!(LoopbackUrl::parse("https://127.0.0.1/v1").is_err());
    }
}

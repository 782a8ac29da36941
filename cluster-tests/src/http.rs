//! A minimal HTTP/1.1 GET over loopback, for the nodes' HTTP port (`/metrics`, `/status.json`,
//! `/healthz`, `/readyz`): one request per connection, the whole answer read (bounded).

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

/// Largest answer read.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// An HTTP answer: its status code and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET http://{address}{path}` within `timeout`.
pub async fn get(address: &str, path: &str, timeout: Duration) -> Result<HttpAnswer, String> {
    tokio::time::timeout(timeout, async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|error| format!("connecting to {address}: {error}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| format!("sending to {address}: {error}"))?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .await
            .map_err(|error| format!("reading from {address}: {error}"))?;
        parse(&answer)
    })
    .await
    .map_err(|_| format!("GET {address}{path} took more than {timeout:?}"))?
}

fn parse(answer: &[u8]) -> Result<HttpAnswer, String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.trim().to_string(),
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    let body = if chunked {
        unchunk(body)?
    } else {
        body.to_string()
    };
    Ok(HttpAnswer {
        status,
        content_type,
        body,
    })
}

fn unchunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| "a chunk without its size line".to_string())?;
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| format!("a chunk size that is not hex: {size:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| "a chunk shorter than its size".to_string())?;
        out.push_str(chunk);
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

/// The value of `sample` (a name, with its labels as written) in a `/metrics` text, read
/// without a parser (for polling; the lint test runs the real parser).
pub fn sample_value(metrics: &str, sample: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

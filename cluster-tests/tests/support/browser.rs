//! Headless Chromium driven over the DevTools protocol: open a page, evaluate JavaScript in
//! it, take a screenshot. Chromium is Debian's `chromium` package (`scripts/test.sh` installs
//! it); the test fails, saying so, when it is missing.

use std::io::BufRead;
use std::io::BufReader;
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use base64::Engine;
use serde_json::Value;
use serde_json::json;
use tungstenite::Message;
use tungstenite::WebSocket;
use tungstenite::stream::MaybeTlsStream;

/// Where Chromium is looked for, in order.
const CANDIDATES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// How long Chromium may take to start and each DevTools call to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn chromium() -> String {
    for candidate in CANDIDATES {
        if Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
        {
            return candidate.to_string();
        }
    }
    panic!(
        "no Chromium found (tried {CANDIDATES:?}): the status page test needs a real browser; \
         install Debian's package with `apt-get install chromium` (scripts/test.sh does)"
    );
}

impl Browser {
    /// Starts headless Chromium and opens `url` in a new tab.
    pub fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().expect("a temporary browser profile");
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                // A tab the protocol opens counts as hidden: without these its timers run at
                // most once a second or slower, and the page would update late.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--window-size=1400,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium should succeed");
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(at) = line.find("ws://") {
                    found.send(line[at..].trim().to_string()).ok();
                    sent = true;
                }
                // Keep draining, so Chromium never blocks on a full pipe.
            }
        });
        let address = address
            .recv_timeout(CALL_TIMEOUT)
            .expect("chromium should print its DevTools address within 30 s");
        let (socket, _) = tungstenite::connect(address.as_str())
            .unwrap_or_else(|error| panic!("connecting to DevTools at {address}: {error}"));
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": url }));
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    /// One DevTools call (on the page's session once there is one); its `result`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = Value::String(self.session.clone());
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|error| panic!("sending {method} to chromium: {error}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "chromium did not answer {method} within {CALL_TIMEOUT:?}"
            );
            let answer = self
                .socket
                .read()
                .unwrap_or_else(|error| panic!("reading chromium's answer to {method}: {error}"));
            let Message::Text(text) = answer else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            // Events (no id) and answers to other calls are skipped.
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                panic!("chromium refused {method}: {error}");
            }
            return answer["result"].clone();
        }
    }

    /// Evaluates `expression` in the page; its value (JSON), or `Null` when it threw.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if result.get("exceptionDetails").is_some() {
            return Value::Null;
        }
        result["result"]["value"].clone()
    }

    /// Writes a PNG screenshot of the page to `path`; its size in bytes.
    pub fn screenshot(&mut self, path: &Path) -> usize {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("the screenshot is base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is a PNG"
        );
        std::fs::write(path, &png).expect("writing the screenshot");
        png.len()
    }
}

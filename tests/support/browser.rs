//! Headless Chromium, driven over the DevTools protocol: start it on
//! 127.0.0.1 with a port of its own choosing, open a page, evaluate
//! JavaScript in it, take a screenshot; the whole process group is killed
//! when the browser is dropped.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The browser binary: `$CHROMIUM` (set by scripts/test), else Debian's.
pub fn chromium_binary() -> std::path::PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/chromium/chromium-headless-shell".into());
    assert!(
        path.is_file(),
        "real peer headless Chromium not found at {}: run scripts/install-peers (the README's test command does). \
         Tests with real peers are never skipped.",
        path.display()
    );
    path
}

pub struct Browser {
    child: Child,
    debug_port: u16,
    page: Socket,
    next_id: u64,
}

impl Browser {
    /// Starts the browser with a fresh profile under `dir` and opens its page.
    pub async fn launch(dir: &Path) -> Browser {
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=900,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start headless Chromium");
        let debug_port = devtools_port(&mut child);
        let targets: Value = serde_json::from_str(&devtools_get(debug_port, "/json/list")).expect("DevTools targets");
        let page_url = targets
            .as_array()
            .and_then(|list| list.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (page, _) = tokio_tungstenite::connect_async(page_url).await.expect("DevTools websocket");
        Browser { child, debug_port, page, next_id: 0 }
    }

    /// Sends one DevTools command and waits for its result (events are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page.send(Message::text(request)).await.expect("DevTools send");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("DevTools socket open")
                .expect("DevTools message");
            let Ok(text) = message.to_text() else { continue };
            let value: Value = serde_json::from_str(text).expect("DevTools JSON");
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method} failed: {value}");
                return value["result"].clone();
            }
        }
    }

    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// The value of a JavaScript expression in the page.
    pub async fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page; its value, or a failure naming it.
    pub async fn wait_for(&mut self, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.evaluate(expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false)) && value != json!("");
            if truthy {
                return value;
            }
            assert!(Instant::now() < deadline, "page never showed {expression} within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the page at `path` (a test artifact).
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).expect("base64 PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub fn debug_port(&self) -> u16 {
        self.debug_port
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser runs renderer and GPU helpers: end its whole process group.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET of the DevTools HTTP endpoint, which answers only HTTP/1.1 and
/// keeps the connection open: the body is read by its Content-Length.
fn devtools_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).expect("DevTools answer");
        assert!(n > 0, "DevTools closed the connection early");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a Content-Length");
            if body.len() >= length {
                return body[..length].to_owned();
            }
        }
    }
}

/// Reads the browser's stderr until it names its DevTools port, then keeps
/// draining it so the browser never blocks on a full pipe.
fn devtools_port(child: &mut Child) -> u16 {
    let stderr = child.stderr.take().expect("piped stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                    if let Some(port) = port {
                        let _ = sender.send(port);
                        sent = true;
                    }
                }
            }
        }
    });
    receiver.recv_timeout(Duration::from_secs(30)).expect("Chromium printed its DevTools address within 30 s")
}

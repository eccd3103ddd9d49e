//! `ember serve` end to end over loopback: the API's answers equal `ember run`'s text, streams
//! equal whole replies, bad requests get a 4xx with an OpenAI error body, the queue refuses
//! with 503 when full, the API key guards every endpoint but /health, and a bounded load test
//! with clients that hang up leaves the server answering, its slots free and its memory flat.

mod common;

use common::ember;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = ember()
            .args(["serve", "--port", "0"])
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting ember serve");
        let err = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(err).lines();
        let mut port = 0;
        let mut ready = false;
        while let Some(Ok(l)) = lines.next() {
            if let Some(rest) = l.split("http://127.0.0.1:").nth(1) {
                port = rest.split(' ').next().unwrap().parse().unwrap();
            }
            if l.contains("ready:") {
                ready = true;
                break;
            }
        }
        assert!(ready && port != 0, "the server did not start");
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, port }
    }

    /// One request; (status, body).
    fn request(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        parse_response(&raw)
    }

    /// A streamed request: status and the `data:` events.
    fn stream(&self, path: &str, v: &Value) -> (u16, Vec<String>) {
        let (st, body) = self.request("POST", path, &[], v.to_string().as_bytes());
        (st, events(&body))
    }

    fn post(&self, path: &str, v: &Value) -> (u16, Value) {
        let (st, body) = self.request("POST", path, &[], v.to_string().as_bytes());
        (st, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// Status and body of an HTTP/1.1 response (chunked bodies joined).
fn parse_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        body = out;
    }
    (status, body)
}

/// The text of `ember run` with `args` (greedy).
fn run_text(args: &[&str]) -> String {
    let out = ember().arg("run").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `data:` events of a server-sent event stream.
fn events(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(String::from))
        .collect()
}

fn error_type(v: &Value) -> &str {
    v["error"]["type"].as_str().unwrap_or("")
}

#[test]
fn the_api_answers_as_ember_run_does_and_refuses_bad_requests() {
    let srv = Server::start(&["-c", "512", "--slots", "2"]);
    let (st, health) = srv.request("GET", "/health", &[], b"");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&health));
    let (st, models) = srv.request("GET", "/v1/models", &[], b"");
    let models: Value = serde_json::from_slice(&models).unwrap();
    assert_eq!(st, 200);
    assert_eq!(models["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");

    // Chat completions: the text of `ember run --chat` for the same message, greedy.
    let q = "What is the capital of France?";
    let want = run_text(&["--chat", "-p", q, "-n", "6", "-c", "512"]);
    let req =
        json!({"messages": [{"role": "user", "content": q}], "max_tokens": 6, "temperature": 0});
    let (st, v) = srv.post("/v1/chat/completions", &req);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 6);
    assert_eq!(v["object"], "chat.completion");

    // Streamed: the deltas join to the same text, then a finish, the usage and [DONE].
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let (st, evs) = srv.stream("/v1/chat/completions", &sreq);
    assert_eq!(st, 200);
    assert_eq!(evs.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = evs[..evs.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, want);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("length"));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 6);

    // Completions: the text of `ember run -p`.
    let p = "The three primary colours are";
    let want = run_text(&["-p", p, "-n", "16", "-c", "512"]);
    let (st, v) = srv.post("/v1/completions", &json!({"prompt": p, "max_tokens": 16}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], want.as_str());
    // A stop string ends the text before it, with finish_reason "stop".
    let cut = want.chars().take(12).collect::<String>();
    let stop = &want[cut.len()..cut.len() + 3];
    if !stop.trim().is_empty() && !cut.contains(stop) {
        let (_, v) = srv.post(
            "/v1/completions",
            &json!({"prompt": p, "max_tokens": 16, "stop": [stop]}),
        );
        assert_eq!(v["choices"][0]["text"], cut.as_str(), "stop {stop:?}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
    // JSON mode: the reply parses as JSON.
    let (st, v) = srv.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Give me a JSON object with a name."}],
                "max_tokens": 64, "response_format": {"type": "json_object"}}),
    );
    assert_eq!(st, 200, "{v}");
    if v["choices"][0]["finish_reason"] == "stop" {
        let reply = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(serde_json::from_str::<Value>(reply).is_ok(), "{reply:?}");
    }

    // A JSON Schema (OpenAI's response_format shape): the reply is an object with the required
    // members of the required types; a schema ember cannot follow is a 400 naming the keyword.
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 16}, "age": {"type": "integer"}},
        "required": ["name", "age"]});
    let (st, v) = srv.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Ana is 31. Reply in JSON."}], "max_tokens": 40,
                "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}}),
    );
    assert_eq!(st, 200, "{v}");
    let reply: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{v}: {e}"));
    assert!(
        reply["name"].is_string() && reply["age"].is_i64(),
        "{reply}"
    );
    let (st, v) = srv.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "pattern": "a+"}}}}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("pattern"),
        "{v}"
    );

    // Tokenize and back.
    let (st, v) = srv.post("/tokenize", &json!({"content": "Hello world"}));
    assert_eq!(st, 200);
    let (st, back) = srv.post("/detokenize", &json!({"tokens": v["tokens"]}));
    assert_eq!(st, 200);
    assert_eq!(back["content"], "Hello world");

    // Bad requests: a status, an OpenAI error body, and the server goes on.
    let big = vec![b'a'; (1 << 20) + 1];
    let msg = |extra: Value| {
        let mut r = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r.to_string().into_bytes()
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("POST", "/v1/chat/completions", b"{".to_vec(), 400),
        ("POST", "/v1/chat/completions", b"[1, 2]".to_vec(), 400),
        ("POST", "/v1/chat/completions", vec![0xff, 0xfe, b'{'], 400),
        ("POST", "/v1/chat/completions", b"{}".to_vec(), 400),
        (
            "POST",
            "/v1/chat/completions",
            br#"{"messages": "hi"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            br#"{"messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"temperature": "hot"})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"temperature": -1})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"top_p": 0})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"max_tokens": 100000})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"max_tokens": -3})),
            400,
        ),
        ("POST", "/v1/chat/completions", msg(json!({"n": 2})), 400),
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"stop": [1, 2]})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"stream": "yes"})),
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"grammar": "root ::= ("})),
            400,
        ),
        // Token names are looked up in the model's vocabulary when a slot takes the request.
        (
            "POST",
            "/v1/chat/completions",
            msg(json!({"grammar": "root ::= <|no-such-token|>"})),
            400,
        ),
        ("POST", "/v1/chat/completions", big, 413),
        (
            "POST",
            "/v1/completions",
            br#"{"prompt": [4000000000]}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/completions",
            br#"{"prompt": {"a": 1}}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/v1/completions",
            br#"{"prompt": ""}"#.to_vec(),
            400,
        ),
        ("POST", "/detokenize", br#"{"tokens": [-1]}"#.to_vec(), 400),
        ("GET", "/v1/chat/completions", Vec::new(), 405),
        ("GET", "/no/such/path", Vec::new(), 404),
    ];
    for (method, path, body, want) in cases {
        let (st, resp) = srv.request(method, path, &[], &body);
        assert_eq!(
            st,
            want,
            "{method} {path} {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        assert!(v["error"]["message"].is_string(), "{path}: {v}");
    }
    // A prompt longer than the context.
    let long = "word ".repeat(700);
    let (st, v) = srv.post("/v1/completions", &json!({"prompt": long}));
    assert_eq!((st, error_type(&v)), (400, "invalid_request_error"), "{v}");
    // Not HTTP at all: the connection gets a 400 or is closed, and the server goes on.
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(
        raw.is_empty() || raw.starts_with(b"HTTP/1.1 400"),
        "{raw:?}"
    );
    // The chat page is served, and fetches nothing from elsewhere.
    let (st, page) = srv.request("GET", "/", &[], b"");
    let page = String::from_utf8(page).unwrap();
    assert_eq!(st, 200);
    assert!(
        page.contains("/v1/chat/completions")
            && !page.contains("http://")
            && !page.contains("https://"),
        "the page links out"
    );
    let (st, _) = srv.request("GET", "/health", &[], b"");
    assert_eq!(st, 200);
}

#[test]
fn the_api_key_guards_every_endpoint_but_health() {
    let srv = Server::start(&["-c", "256", "--api-key", "s3cret"]);
    assert_eq!(srv.request("GET", "/health", &[], b"").0, 200);
    for (m, p) in [
        ("GET", "/v1/models"),
        ("POST", "/tokenize"),
        ("POST", "/v1/completions"),
    ] {
        for h in [
            &[][..],
            &["Authorization: Bearer wrong"][..],
            &["Authorization: s3cret"][..],
        ] {
            let (st, body) = srv.request(m, p, h, br#"{"content": "x", "prompt": "x"}"#);
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                (st, error_type(&v)),
                (401, "authentication_error"),
                "{m} {p} {h:?}"
            );
        }
    }
    let (st, _) = srv.request("GET", "/v1/models", &["Authorization: Bearer s3cret"], b"");
    assert_eq!(st, 200);
}

#[test]
fn a_full_queue_refuses_with_503_and_load_leaves_the_server_whole() {
    let srv = Server::start(&["-c", "256", "--slots", "2", "--queue", "2"]);
    // Two slots busy with long streams, two requests queued: the fifth is refused.
    let long = json!({"prompt": "Once upon a time", "max_tokens": 200, "stream": true}).to_string();
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{long}",
            long.len()
        )
        .unwrap();
        busy.push(s);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, v) = srv.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 4}));
    assert_eq!((st, error_type(&v)), (503, "unavailable_error"), "{v}");
    // Hanging up frees the slots (a queued request whose client left is dropped when a slot
    // takes it, or at its first token).
    drop(busy);
    let t0 = Instant::now();
    loop {
        let (st, _) = srv.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 4}));
        if st == 200 {
            break;
        }
        assert_eq!(st, 503);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the slots stayed busy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    drop(srv);

    // 8 clients x 25 requests, streamed or not, some hung up at random, on a server whose
    // queue holds every client: each is answered with a status (a 503 only while the requests
    // of clients that hung up still hold places: a queued stream's hang-up is seen when its
    // first token is written), never a crash; memory flat after the first ones.
    let srv = Server::start(&["-c", "256", "--slots", "2", "--queue", "8"]);
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let pid = srv.child.id();
    let port = srv.port;
    let round = |seed: u64| {
        let mut workers = Vec::new();
        for c in 0..8u64 {
            workers.push(std::thread::spawn(move || {
                let mut x = seed ^ (c + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut statuses = Vec::new();
                for _ in 0..5 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let stream = x & 1 == 1;
                    let hang_up = x.is_multiple_of(5);
                    let body = json!({"messages": [{"role": "user", "content": format!("Count to {}", x % 10)}],
                                      "max_tokens": 8 + x % 16, "stream": stream})
                    .to_string();
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                    write!(
                        s,
                        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                    if hang_up {
                        let mut first = [0u8; 16];
                        let _ = s.read(&mut first);
                        continue;
                    }
                    let mut raw = Vec::new();
                    let _ = s.read_to_end(&mut raw);
                    statuses.push(parse_response(&raw).0);
                }
                statuses
            }));
        }
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect::<Vec<u16>>()
    };
    // Five requests per client per round: five rounds make the 25.
    let first = round(1);
    let rss_after_first = rss(pid);
    let mut all = first;
    for r in 2..=5 {
        all.extend(round(r));
    }
    let rss_end = rss(pid);
    assert!(all.iter().all(|s| *s == 200 || *s == 503), "{all:?}");
    let ok = all.iter().filter(|s| **s == 200).count();
    assert!(
        all.len() > 100 && ok * 10 >= all.len() * 8,
        "{ok} of {} answered",
        all.len()
    );
    assert!(
        rss_end <= rss_after_first + 16 * 1024,
        "RSS grew from {rss_after_first} to {rss_end} KiB"
    );
    // Every slot is free again: two requests at once both start at once.
    let (st, v) = srv.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[test]
fn the_openai_python_client_gets_what_ember_run_prints() {
    let lib = common::python_package("openai", "openai>=1.40");
    let srv = Server::start(&["-c", "512"]);
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/openai/client.py"
        ))
        .arg(srv.port.to_string())
        .env("PYTHONPATH", &lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let chat = run_text(&[
        "--chat",
        "-p",
        "What is the capital of France?",
        "-n",
        "6",
        "-c",
        "512",
    ]);
    let plain = run_text(&[
        "-p",
        "The three primary colours are",
        "-n",
        "16",
        "-c",
        "512",
    ]);
    assert_eq!(got["models"][0], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(got["chat"], chat.as_str());
    assert_eq!(got["chat_stream"], chat.as_str());
    assert_eq!(got["chat_finish"], "length");
    assert_eq!(got["chat_usage"][1], 6);
    assert_eq!(got["completion"], plain.as_str());
    assert_eq!(got["completion_stream"], plain.as_str());
    assert_eq!(got["too_long"], 400);
}

/// The chat page in a real headless browser (Chromium driven by selenium): a message typed and
/// sent streams back the reply `ember run --chat` prints. Needs Debian's `chromium` and
/// `chromium-driver`; runs when `EMBER_BROWSER=1` (CI installs them and sets it), and says it
/// was skipped otherwise.
#[test]
fn the_chat_page_streams_a_reply_in_a_headless_browser() {
    if std::env::var_os("EMBER_BROWSER").is_none() {
        eprintln!("skipped: set EMBER_BROWSER=1 (needs chromium and chromium-driver)");
        return;
    }
    let lib = common::python_package("selenium", "selenium>=4.10");
    let srv = Server::start(&["-c", "256"]);
    let msg = "Hello! Who are you?";
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/page.py"
        ))
        .arg(format!("http://127.0.0.1:{}/", srv.port))
        .arg(msg)
        .env("PYTHONPATH", &lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = run_text(&["--chat", "-p", msg, "-n", "256", "-c", "256"]);
    assert_eq!(got["errors"], json!([]));
    assert_eq!(got["user"], json!([msg]));
    // The page shows text as HTML renders it (trailing white space dropped).
    assert_eq!(got["reply"].as_str().unwrap(), want.trim_end());
    assert!(
        got["changes"].as_u64().unwrap() > 2,
        "the reply did not stream: {got}"
    );
}

/// Idle connections (a slow or stuck client holding sockets open) do not stop the server
/// answering others, and bytes trickled slowly still make a request.
#[test]
fn idle_and_slow_clients_do_not_block_the_others() {
    let srv = Server::start(&["-c", "256", "--max-connections", "32"]);
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port)).unwrap())
        .collect();
    let t0 = Instant::now();
    let (st, _) = srv.post("/tokenize", &json!({"content": "hi"}));
    assert_eq!(st, 200);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A request sent a few bytes at a time.
    let body = json!({"content": "Hello world"}).to_string();
    let req = format!(
        "POST /tokenize HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for chunk in req.as_bytes().chunks(7) {
        s.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (st, body) = parse_response(&raw);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    drop(idle);
}

/// Tool calls: the tools go into the system message, the reply is constrained to a call of one
/// of them (with arguments its parameters' schema accepts) or an answer; a call comes back as
/// OpenAI's `tool_calls` (streamed too), and a tool's result can be sent back as a `tool`
/// message.
#[test]
fn tool_calls_come_back_as_openai_tool_calls() {
    // SmolLM2's template takes no tools: llama.cpp's generic format.
    tool_calls(&Server::start(&["-c", "2048"]));
    // The same weights under templates that take tools: Qwen2.5's (<tool_call> JSON) and
    // Llama 3.2's ({"name", "parameters"}), read from llama.cpp's suite.
    let dir = ember_tests::llama_cpp_source().join("models/templates");
    for (name, file) in [
        ("tools-qwen", "Qwen-Qwen2.5-7B-Instruct.jinja"),
        ("tools-llama", "meta-llama-Llama-3.2-3B-Instruct.jinja"),
    ] {
        let template = std::fs::read_to_string(dir.join(file)).unwrap();
        let model = ember_tests::model_with_template(&format!("{name}.gguf"), &template);
        let srv = Server::start(&["-c", "2048", "-m", model.to_str().unwrap()]);
        tool_calls(&srv);
    }
}

fn tool_calls(srv: &Server) {
    let tools = json!([
        {"type": "function", "function": {"name": "set_light", "description": "Turn a room light on or off",
            "parameters": {"type": "object", "properties": {"room": {"enum": ["kitchen", "bedroom"]}, "on": {"type": "boolean"}},
                           "required": ["room", "on"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "The current time",
            "parameters": {"type": "object", "properties": {}}}}
    ]);
    let user = json!([{"role": "user", "content": "Turn on the kitchen light."}]);
    for choice in [
        json!("auto"),
        json!("required"),
        json!({"type": "function", "function": {"name": "set_light"}}),
    ] {
        let (st, v) = srv.post(
            "/v1/chat/completions",
            &json!({"messages": user, "tools": tools, "tool_choice": choice, "max_tokens": 120}),
        );
        assert_eq!(st, 200, "{v}");
        let c = &v["choices"][0];
        if c["finish_reason"] == "tool_calls" {
            let call = &c["message"]["tool_calls"][0];
            assert_eq!(call["type"], "function");
            let name = call["function"]["name"].as_str().unwrap();
            let args: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            match name {
                "set_light" => {
                    assert!(
                        ["kitchen", "bedroom"].contains(&args["room"].as_str().unwrap()),
                        "{args}"
                    );
                    assert!(args["on"].is_boolean(), "{args}");
                }
                "get_time" => assert_eq!(args, json!({}), "get_time takes no arguments"),
                other => panic!("a tool that was not offered: {other}"),
            }
            if choice.is_object() {
                assert_eq!(name, "set_light");
            }
        } else {
            assert_eq!(choice, "auto", "{v}");
            assert!(c["message"]["content"].is_string(), "{v}");
        }
    }
    // Streamed: one delta with the call, then the finish and [DONE].
    let body = json!({"messages": user, "tools": tools, "tool_choice": "required", "stream": true, "max_tokens": 120});
    let (st, evs) = srv.stream("/v1/chat/completions", &body);
    assert_eq!(st, 200);
    assert_eq!(evs.last().map(String::as_str), Some("[DONE]"));
    let first: Value = serde_json::from_str(&evs[0]).unwrap();
    assert!(
        first["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].is_string(),
        "{first}"
    );
    // The result of the call goes back as a tool message; the conversation goes on.
    let history = json!([
        {"role": "user", "content": "Turn on the kitchen light."},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call-1", "type": "function",
            "function": {"name": "set_light", "arguments": "{\"room\": \"kitchen\", \"on\": true}"}}]},
        {"role": "tool", "tool_call_id": "call-1", "content": "{\"ok\": true}"}
    ]);
    let (st, v) = srv.post(
        "/v1/chat/completions",
        &json!({"messages": history, "tools": tools, "max_tokens": 120}),
    );
    assert_eq!(st, 200, "{v}");
    // Bad tools: a 400 naming the field.
    for bad in [
        json!({"tools": "x"}),
        json!({"tools": [{"type": "function"}]}),
        json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
        json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string", "pattern": "a"}}}]}),
        json!({"tools": tools, "response_format": {"type": "json_object"}}),
    ] {
        let mut r = bad.clone();
        r["messages"] = user.clone();
        let (st, v) = srv.post("/v1/chat/completions", &r);
        assert_eq!(st, 400, "{bad}: {v}");
    }
}

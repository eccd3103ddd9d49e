//! `ember serve`: an OpenAI-compatible HTTP server on the engine API, with a chat page.
//!
//! HTTP/1.1 on hyper over tokio: one small async front (parsing, limits, streaming) and one
//! thread that runs the model's slots ([`slots`]). The port is bound before the model loads, so
//! `/health` answers 503 while loading and 200 once ready.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (both with `stream`),
//! `GET /v1/models`, `GET /health`, `POST /tokenize`, `POST /detokenize`, and `GET /` (the page).

mod api;
mod slots;

use super::{ContextArgs, ModelArgs, SamplingArgs};
use crate::load::{self, CliError, CliResult};
use api::{ApiError, ApiResult, Fields};
use bytes::Bytes;
use ember_runtime::chat::tools::{ToolReply, ToolSet};
use ember_runtime::chat::{ChatTemplate, Message};
use ember_runtime::engine::{LoadedModel, Request};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use slots::{Event, Job, Queue};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (the loopback by default: other machines cannot reach it).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sessions served at the same time, each with its own KV cache (reserved at start).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    slots: u16,
    /// Requests that may wait for a slot; more get 503.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health (also $EMBER_API_KEY).
    #[arg(long = "api-key", env = "EMBER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest request body in bytes.
    #[arg(long = "max-body", default_value_t = 1 << 20)]
    max_body: usize,
    /// Largest number of open connections; more are closed at once.
    #[arg(long = "max-connections", default_value_t = 128)]
    max_connections: usize,
    /// The model's name in responses (default: the file name without .gguf).
    #[arg(long)]
    alias: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    context: ContextArgs,
}

/// The chat page, embedded (it fetches nothing from the network).
const PAGE: &str = include_str!("page.html");

/// What the handlers share once the model is loaded.
struct Ready {
    model: Arc<LoadedModel>,
    template: ChatTemplate,
    queue: Queue,
    n_ctx: usize,
    sampler: ember_runtime::sampler::SamplerConfig,
}

struct State {
    ready: OnceLock<Ready>,
    /// The model's name in responses.
    name: String,
    api_key: Option<String>,
    max_body: usize,
    ids: AtomicU64,
    created: u64,
}

type Out = Either<Full<Bytes>, Sse>;
type Response = hyper::Response<Out>;

pub fn main(a: Args) -> CliResult {
    let sampler = a.sampling.config();
    sampler.validate()?;
    if a.sampling.beam > 0 {
        return Err(CliError("ember serve does not do beam search".into()));
    }
    // A bad --kernels is refused before the port is bound (the model opens after).
    load::kernels(a.model.kernels.as_deref())?;
    let path = load::model_path(a.model.model.clone());
    let name = a.alias.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| "model".into())
    });
    let addr: SocketAddr = format!("{}:{}", bracket(&a.host), a.port)
        .parse()
        .map_err(|_| CliError(format!("--host '{}' is not an IP address", a.host)))?;
    // A client that hangs up must not kill the server (ember sets SIGPIPE to its default for
    // the other commands).
    #[cfg(unix)]
    // SAFETY: changing one signal's disposition before any thread of this command starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .enable_time()
        .thread_name("ember-http")
        .build()
        .map_err(|e| CliError(format!("starting the HTTP runtime: {e}")))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| CliError(format!("listening on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    errln!(
        "ember serve: listening on http://{bound} (loading {})",
        path.display()
    );
    let state = Arc::new(State {
        ready: OnceLock::new(),
        name,
        api_key: a.api_key.clone().filter(|k| !k.is_empty()),
        max_body: a.max_body,
        ids: AtomicU64::new(1),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let limit = Arc::new(tokio::sync::Semaphore::new(a.max_connections.max(1)));
    let st = Arc::clone(&state);
    rt.spawn(accept(listener, st, limit));
    // Load in this thread while the server already answers /health with 503.
    let ready = prepare(&a, sampler)?;
    let (slots, n_ctx, threads) = (a.slots, ready.n_ctx, ready.threads);
    if state.ready.set(ready.ready).is_err() {
        return Err(CliError("the server was made ready twice".into()));
    }
    errln!(
        "ember serve: ready: {} slot{} of {n_ctx} tokens, {threads} threads, {:.1} MiB of sessions",
        slots,
        if slots == 1 { "" } else { "s" },
        ready.session_bytes as f64 / 1048576.0
    );
    // Serve until the process is stopped.
    loop {
        std::thread::park();
    }
}

struct Prepared {
    ready: Ready,
    n_ctx: usize,
    threads: usize,
    session_bytes: usize,
}

/// Loads the model and makes every slot's engine (all memory reserved here).
fn prepare(a: &Args, sampler: ember_runtime::sampler::SamplerConfig) -> CliResult<Prepared> {
    use ember_runtime::parallel::Parallel;
    let opened = super::Opened::open(
        &a.model,
        &a.context,
        super::Sessions::Slots(a.slots as usize),
    )?;
    let (m, sc) = (opened.loaded.model(), opened.sc);
    let mut engines = Vec::with_capacity(a.slots as usize);
    for _ in 0..a.slots {
        engines.push(opened.engine(sampler, None)?);
    }
    let session_bytes = ember_runtime::session::Session::plan(m, &sc)?.total * a.slots as usize;
    let template = ChatTemplate::for_model(m)?;
    let queue = slots::start(engines, a.queue)
        .map_err(|e| CliError(format!("starting the slot thread: {e}")))?;
    Ok(Prepared {
        threads: opened.pool.threads(),
        n_ctx: sc.n_ctx,
        session_bytes,
        ready: Ready {
            model: Arc::clone(&opened.loaded),
            template,
            queue,
            n_ctx: sc.n_ctx,
            sampler,
        },
    })
}

/// `host` as the address part of `host:port` (IPv6 in brackets).
fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    limit: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let st = Arc::clone(&st);
                async move { Ok::<_, std::convert::Infallible>(handle(&st, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = conn.await;
            drop(permit);
        });
    }
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn json_response(status: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    hyper::Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Either::Left(Full::new(Bytes::from(body))))
        .unwrap_or_else(|_| hyper::Response::new(Either::Left(Full::new(Bytes::new()))))
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.status, &e.body());
    if e.status == 401 {
        r.headers_mut().insert(
            "www-authenticate",
            hyper::header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// One line per request on stderr.
fn log(peer: SocketAddr, method: &Method, path: &str, status: u16, t0: Instant, what: &str) {
    errln!(
        "ember serve: {peer} {method} {path} {status} {:.3} s{}{what}",
        t0.elapsed().as_secs_f64(),
        if what.is_empty() { "" } else { " " }
    );
}

/// Logs a request whose client went away before its response was made (hyper drops the
/// handler then).
struct Pending {
    peer: SocketAddr,
    method: Method,
    path: String,
    t0: Instant,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            log(
                self.peer,
                &self.method,
                &self.path,
                499,
                self.t0,
                "the client closed the connection",
            );
        }
    }
}

async fn handle(state: &Arc<State>, req: hyper::Request<Incoming>, peer: SocketAddr) -> Response {
    let t0 = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut pending = Pending {
        peer,
        method: method.clone(),
        path: path.clone(),
        t0,
        done: false,
    };
    let r = route(state, req).await;
    pending.done = true;
    match r {
        Ok((resp, what)) => {
            log(peer, &method, &path, resp.status().as_u16(), t0, &what);
            resp
        }
        Err(e) => {
            log(peer, &method, &path, e.status, t0, &e.message);
            error_response(&e)
        }
    }
}

async fn route(state: &Arc<State>, req: hyper::Request<Incoming>) -> ApiResult<(Response, String)> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let known = [
        "/",
        "/health",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/tokenize",
        "/detokenize",
    ];
    if !known.contains(&path.as_str()) {
        return Err(ApiError::new(
            404,
            "not_found_error",
            format!("no endpoint {path}"),
        ));
    }
    match (method.clone(), path.as_str()) {
        (Method::GET, "/health") => {
            return Ok(match state.ready.get() {
                Some(_) => (json_response(200, &json!({"status": "ok"})), String::new()),
                None => (
                    json_response(503, &json!({"status": "loading model"})),
                    String::new(),
                ),
            })
        }
        (Method::GET, "/") => {
            let r = hyper::Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .header("cache-control", "no-store")
                .body(Either::Left(Full::new(Bytes::from_static(PAGE.as_bytes()))))
                .map_err(|e| ApiError::new(500, "server_error", e.to_string()))?;
            return Ok((r, String::new()));
        }
        _ => {}
    }
    if let Some(key) = &state.api_key {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(given.trim().as_bytes(), key.as_bytes()) {
            return Err(ApiError::new(
                401,
                "authentication_error",
                "a valid API key is required (Authorization: Bearer KEY)",
            ));
        }
    }
    let Some(ready) = state.ready.get() else {
        return Err(ApiError::new(
            503,
            "unavailable_error",
            "the model is still loading",
        ));
    };
    let post = |m: &Method| {
        if *m == Method::POST {
            Ok(())
        } else {
            Err(ApiError::new(
                405,
                "invalid_request_error",
                format!("{path} takes POST"),
            ))
        }
    };
    match path.as_str() {
        "/v1/models" => {
            if method != Method::GET {
                return Err(ApiError::new(
                    405,
                    "invalid_request_error",
                    "/v1/models takes GET",
                ));
            }
            let c = &ready.model.model().config;
            let v = json!({"object": "list", "data": [{
                "id": state.name, "object": "model", "created": state.created, "owned_by": "ember",
                "meta": {"n_ctx": ready.n_ctx, "n_ctx_train": c.n_ctx_train, "n_vocab": c.n_vocab},
            }]});
            Ok((json_response(200, &v), String::new()))
        }
        "/tokenize" => {
            post(&method)?;
            let body = read_body(state, req).await?;
            tokenize(ready, &body)
        }
        "/detokenize" => {
            post(&method)?;
            let body = read_body(state, req).await?;
            detokenize(ready, &body)
        }
        "/v1/chat/completions" | "/v1/completions" => {
            post(&method)?;
            let body = read_body(state, req).await?;
            complete(state, ready, &body, path == "/v1/chat/completions").await
        }
        _ => Err(ApiError::new(
            404,
            "not_found_error",
            format!("no endpoint {path}"),
        )),
    }
}

/// The request body, at most `max_body` bytes, read within 30 s.
async fn read_body(state: &State, req: hyper::Request<Incoming>) -> ApiResult<Bytes> {
    let limited = Limited::new(req.into_body(), state.max_body);
    match tokio::time::timeout(Duration::from_secs(30), limited.collect()).await {
        Err(_) => Err(ApiError::new(
            408,
            "invalid_request_error",
            "the request body took too long",
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                413,
                "invalid_request_error",
                format!("the request body is larger than {} bytes", state.max_body),
            ))
        }
        Ok(Err(e)) => Err(ApiError::new(
            400,
            "invalid_request_error",
            format!("reading the body: {e}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn tokenize(ready: &Ready, body: &[u8]) -> ApiResult<(Response, String)> {
    let o = api::object(body)?;
    let f = Fields(&o);
    let text = f
        .str("content")?
        .ok_or_else(|| ApiError::bad("content", "'content' is required"))?;
    let add_special = f.bool("add_special")?.unwrap_or(false);
    let ids = ready
        .model
        .model()
        .tokenizer
        .encode_to_vec(text.as_bytes(), true, add_special)
        .map_err(|e| ApiError::bad("content", e.to_string()))?;
    let n = ids.len();
    Ok((
        json_response(200, &json!({"tokens": ids})),
        format!("{n} tokens"),
    ))
}

fn detokenize(ready: &Ready, body: &[u8]) -> ApiResult<(Response, String)> {
    let o = api::object(body)?;
    let f = Fields(&o);
    let tok = &ready.model.model().tokenizer;
    let n_vocab = ready.model.model().config.n_vocab;
    let ids = match f.value("tokens") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v.as_u64() {
                Some(t) if (t as usize) < n_vocab => Ok(t as u32),
                _ => Err(ApiError::bad(
                    "tokens",
                    format!("'tokens' must be token ids below {n_vocab}"),
                )),
            })
            .collect::<ApiResult<Vec<u32>>>()?,
        _ => {
            return Err(ApiError::bad(
                "tokens",
                "'tokens' must be a list of token ids",
            ))
        }
    };
    let text = String::from_utf8_lossy(&tok.decode_to_vec(&ids, true)).into_owned();
    Ok((json_response(200, &json!({"content": text})), String::new()))
}

/// A seed for a request that samples without one.
fn fresh_seed(state: &State) -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ state
        .ids
        .load(Ordering::Relaxed)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

async fn complete(
    state: &Arc<State>,
    ready: &Ready,
    body: &[u8],
    chat: bool,
) -> ApiResult<(Response, String)> {
    let o = api::object(body)?;
    let f = Fields(&o);
    let g = api::generate(&f, &ready.sampler, fresh_seed(state))?;
    let model = ready.model.model();
    let tools = if chat {
        api::tools(&f, &ready.template)?
    } else {
        None
    };
    if tools.is_some() && g.grammar.is_some() {
        return Err(ApiError::bad(
            "tools",
            "tools cannot be combined with a grammar or a JSON response_format",
        ));
    }
    let grammar = match &tools {
        Some(t) => Some(t.grammar().to_string()),
        None => g.grammar.clone(),
    };
    let prompt = if chat {
        let msgs = api::messages(&f, tools.as_ref())?;
        let view: Vec<Message<'_>> = msgs
            .iter()
            .map(|(r, c)| Message {
                role: r,
                content: c,
            })
            .collect();
        ember_runtime::engine::chat_prompt(&ready.template, model, &view, tools.as_ref())
            .map_err(|e| ApiError::bad("messages", e.to_string()))?
    } else {
        match api::prompt(&f, model.config.n_vocab)? {
            api::Prompt::Text(t) => model
                .tokenizer
                .encode_to_vec(t.as_bytes(), true, true)
                .map_err(|e| ApiError::bad("prompt", e.to_string()))?,
            api::Prompt::Tokens(ids) => ids,
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad("prompt", "the prompt is empty"));
    }
    let n_ctx = ready.n_ctx;
    if prompt.len() >= n_ctx {
        return Err(ApiError::bad(
            if chat { "messages" } else { "prompt" },
            format!(
                "the prompt is {} tokens; this server's context holds {n_ctx} (prompt and reply)",
                prompt.len()
            ),
        ));
    }
    let room = n_ctx - prompt.len();
    let max_tokens = match g.max_tokens {
        Some(n) if n > room => {
            return Err(ApiError::bad(
                "max_tokens",
                format!(
                    "the prompt is {} tokens and max_tokens {n}: more than this server's context of {n_ctx}",
                    prompt.len()
                ),
            ))
        }
        Some(n) => n,
        None => room,
    };
    let (tx, rx) = unbounded_channel();
    let job = Job {
        prompt,
        request: Request {
            max_tokens,
            stop: g.stop.clone(),
            ignore_eos: g.ignore_eos,
        },
        sampler: g.sampler,
        grammar,
        events: tx,
    };
    if !ready.queue.submit(job) {
        return Err(ApiError::new(
            503,
            "unavailable_error",
            "every slot is busy and the queue is full; try again later",
        ));
    }
    let n = state.ids.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n:x}", if chat { "chatcmpl" } else { "cmpl" });
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let meta = Meta {
        id,
        created,
        model: state.name.clone(),
        chat,
        tools,
    };
    if g.stream && meta.tools.is_some() {
        // A tool call is known only once its JSON is complete: the reply is collected, then
        // sent as one stream of chunks.
        let (resp, what) = collect(rx, &meta).await?;
        return Ok((resp_as_stream(resp, &meta, g.include_usage).await, what));
    }
    if g.stream {
        let body = Sse {
            rx,
            meta,
            include_usage: g.include_usage,
            started: false,
            ended: false,
        };
        let r = hyper::Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Either::Right(body))
            .map_err(|e| ApiError::new(500, "server_error", e.to_string()))?;
        return Ok((r, "stream".into()));
    }
    collect(rx, &meta).await
}

/// Identity of one completion.
struct Meta {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    /// The reply is a tool call or an answer in the tools' JSON (sent whole, parsed).
    tools: Option<ToolSet>,
}

impl Meta {
    /// A streamed chunk with `choice`.
    fn chunk(&self, choice: Value) -> Value {
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    fn piece(&self, text: &str) -> Value {
        if self.chat {
            self.chunk(json!({"index": 0, "delta": {"content": text}, "finish_reason": null}))
        } else {
            self.chunk(json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null}))
        }
    }
}

/// A non-streamed reply: every event, then one JSON body.
async fn collect(mut rx: UnboundedReceiver<Event>, meta: &Meta) -> ApiResult<(Response, String)> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Piece(p) => text.push_str(&p),
            Event::Failed(e) => return Err(e),
            Event::Done {
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                first_token,
            } => {
                let mut finish = api::finish_reason(reason);
                let reply = meta.tools.as_ref().filter(|_| finish == "stop");
                let choice = if let Some(tools) = reply {
                    match tools.parse_reply(&text) {
                        ToolReply::Call { name, arguments } => {
                            finish = "tool_calls";
                            json!({"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [{
                                "id": format!("call-{}", meta.id), "type": "function",
                                "function": {"name": name, "arguments": arguments}}]}, "finish_reason": finish})
                        }
                        ToolReply::Text(t) => {
                            json!({"index": 0, "message": {"role": "assistant", "content": t}, "finish_reason": finish})
                        }
                    }
                } else if meta.chat {
                    json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
                } else {
                    json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
                };
                let v = json!({
                    "id": meta.id,
                    "object": if meta.chat { "chat.completion" } else { "text_completion" },
                    "created": meta.created,
                    "model": meta.model,
                    "choices": [choice],
                    "usage": api::usage(prompt_tokens, completion_tokens),
                });
                let what = format!(
                    "prompt={prompt_tokens} (cached {cached_tokens}) completion={completion_tokens} first-token={:.3} s {finish}",
                    first_token.as_secs_f64()
                );
                return Ok((json_response(200, &v), what));
            }
        }
    }
    Err(ApiError::new(
        500,
        "server_error",
        "the slot ended the request without a reply",
    ))
}

/// A whole reply (a JSON response from [`collect`]) sent as a stream: the role, the message's
/// content or tool calls as one delta, the finish, the usage if asked, then `[DONE]`.
async fn resp_as_stream(resp: Response, meta: &Meta, include_usage: bool) -> Response {
    let body = match resp.into_body() {
        Either::Left(full) => full
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default(),
        Either::Right(_) => Bytes::new(),
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let msg = &v["choices"][0]["message"];
    let mut delta = json!({"role": "assistant"});
    if msg["tool_calls"].is_array() {
        let mut calls = msg["tool_calls"].clone();
        if let Some(a) = calls.as_array_mut() {
            for (i, c) in a.iter_mut().enumerate() {
                c["index"] = json!(i);
            }
        }
        delta["tool_calls"] = calls;
    } else {
        delta["content"] = msg["content"].clone();
    }
    let mut out = sse(&meta.chunk(json!({"index": 0, "delta": delta, "finish_reason": null})));
    out.push_str(&sse(&meta.chunk(
        json!({"index": 0, "delta": {}, "finish_reason": v["choices"][0]["finish_reason"]}),
    )));
    if include_usage {
        let mut u = meta.chunk(Value::Null);
        u["choices"] = json!([]);
        u["usage"] = v["usage"].clone();
        out.push_str(&sse(&u));
    }
    out.push_str("data: [DONE]\n\n");
    hyper::Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Either::Left(Full::new(Bytes::from(out))))
        .unwrap_or_else(|_| hyper::Response::new(Either::Left(Full::new(Bytes::new()))))
}

/// A streamed reply: server-sent events, `data: {chunk}` per piece, then `data: [DONE]`.
/// Dropping it (the client went away) drops the receiver, which stops the slot.
struct Sse {
    rx: UnboundedReceiver<Event>,
    meta: Meta,
    include_usage: bool,
    started: bool,
    ended: bool,
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

impl Body for Sse {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut out = String::new();
        if !self.started && self.meta.chat {
            out.push_str(&sse(&self.meta.chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}),
            )));
        }
        self.started = true;
        // Everything already waiting goes out in one frame.
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    self.ended = true;
                    out.push_str("data: [DONE]\n\n");
                    break;
                }
                Poll::Ready(Some(Event::Piece(p))) => out.push_str(&sse(&self.meta.piece(&p))),
                Poll::Ready(Some(Event::Failed(e))) => {
                    out.push_str(&sse(&e.body()));
                    out.push_str("data: [DONE]\n\n");
                    self.ended = true;
                    break;
                }
                Poll::Ready(Some(Event::Done {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    ..
                })) => {
                    let finish = api::finish_reason(reason);
                    let last = if self.meta.chat {
                        json!({"index": 0, "delta": {}, "finish_reason": finish})
                    } else {
                        json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish})
                    };
                    out.push_str(&sse(&self.meta.chunk(last)));
                    if self.include_usage {
                        let mut u = self.meta.chunk(Value::Null);
                        u["choices"] = json!([]);
                        u["usage"] = api::usage(prompt_tokens, completion_tokens);
                        out.push_str(&sse(&u));
                    }
                    out.push_str("data: [DONE]\n\n");
                    self.ended = true;
                    break;
                }
            }
        }
        if out.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
        assert!(same_secret(b"", b""));
    }
}

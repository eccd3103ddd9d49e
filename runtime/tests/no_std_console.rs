//! The serial console with only the `no_std` core (`cargo test -p ember-runtime
//! --no-default-features --test no_std_console`): the ChatML assistant, its session and sampler
//! carved from one buffer, on a fixed-size in-memory port. The reply to a fixture question must
//! be llama.cpp's greedy text for the same conversation (`tests/fixtures/greedy`), and a second
//! turn must answer from the kept cache.

use ember_runtime::arena::Arena;
use ember_runtime::console::{self, Assistant, ChatAssistant, ConsoleConfig, Exit};
use ember_runtime::gguf::Gguf;
use ember_runtime::kernels::Kernels;
use ember_runtime::model::Model;
use ember_runtime::sampler::{Sampler, SamplerConfig};
use ember_runtime::session::{Session, SessionConfig};
use std::path::PathBuf;

const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
const REPLY_TOKENS: usize = 16;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A port over fixed arrays: input given up front, output recorded.
struct ArrayPort {
    input: [u8; 512],
    in_len: usize,
    pos: usize,
    output: [u8; 8192],
    out_len: usize,
}

impl embedded_io::ErrorType for ArrayPort {
    type Error = core::convert::Infallible;
}
impl embedded_io::Read for ArrayPort {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        // One line per read, as typed.
        let rest = &self.input[self.pos..self.in_len];
        let line = rest
            .iter()
            .position(|&b| b == b'\r')
            .map_or(rest.len(), |i| i + 1);
        let n = line.min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}
impl embedded_io::ReadReady for ArrayPort {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        // Nothing is typed during a reply.
        Ok(false)
    }
}
impl embedded_io::Write for ArrayPort {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.output.len() - self.out_len);
        self.output[self.out_len..self.out_len + n].copy_from_slice(&buf[..n]);
        self.out_len += n;
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[test]
fn console_replies_like_llama_cpp_without_std() {
    let path = std::env::var_os("EMBER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let file = std::fs::read(&path).expect("the model (run tools/fetch-model.sh)");
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/greedy/expected.json")).unwrap(),
    )
    .unwrap();
    // The third fixture case: identical to llama.cpp in the no_std generation test.
    let case = &fixture["cases"][2];
    let prompt = case["prompt"].as_str().unwrap();
    let want = case["text"].as_str().unwrap();
    let question = prompt
        .split("<|im_start|>user\n")
        .nth(1)
        .and_then(|s| s.split("<|im_end|>").next())
        .unwrap();
    assert!(prompt.contains(SYSTEM));

    let g = Gguf::parse(&file).unwrap();
    let sc = SessionConfig {
        n_ctx: 192,
        n_batch: 16,
        ..SessionConfig::default()
    };
    let cfg = SamplerConfig::default(); // temperature 0: greedy
    let max_line = 128;
    let mut ram = vec![0u8; Model::memory_needed(&g).unwrap() + (16 << 20)];
    let mut arena = Arena::new(&mut ram);
    let model = Model::load(g, &mut arena, Kernels::best()).unwrap();
    let session = Session::new(&model, &mut arena, &sc).unwrap();
    let sampler = Sampler::new(&mut arena, model.config.n_vocab, cfg).unwrap();
    let mut a =
        ChatAssistant::chatml(session, sampler, &mut arena, max_line, REPLY_TOKENS).unwrap();
    a.set_system(SYSTEM).unwrap();
    a.enable_json(&mut arena).unwrap();

    let mut port = ArrayPort {
        input: [0; 512],
        in_len: 0,
        pos: 0,
        output: [0; 8192],
        out_len: 0,
    };
    let script = format!("{question}\rAnd why?\r/stats\r/json on\rList two colors.\r");
    port.input[..script.len()].copy_from_slice(script.as_bytes());
    port.in_len = script.len();
    let mut line = [0u8; 128];
    let cc = ConsoleConfig {
        banner: "ember",
        echo: true,
    };
    let exit = console::run(&mut port, &mut a, &mut (), &cc, &mut line).unwrap();
    assert_eq!(exit, Exit::EndOfInput);
    let out = core::str::from_utf8(&port.output[..port.out_len]).unwrap();
    let first = out
        .split(&format!("{question}\r\n"))
        .nth(1)
        .and_then(|s| s.split("\r\n> ").next())
        .unwrap();
    assert!(!first.is_empty());
    assert!(
        want.replace('\n', "\r\n").starts_with(first),
        "console {first:?} vs llama.cpp {want:?}"
    );
    let second = out
        .split("And why?\r\n")
        .nth(1)
        .and_then(|s| s.split("\r\n> ").next())
        .unwrap();
    assert!(!second.is_empty());
    assert!(out.contains("turns 2 |"), "{out}");
    assert!(a.session().n_past() > 2 * REPLY_TOKENS);
    // /json on: the reply is JSON (whole, or cut short by the reply limit: a prefix of it).
    let json = out
        .split("List two colors.\r\n")
        .nth(1)
        .and_then(|s| s.split("\r\n> ").next())
        .unwrap()
        .replace("\r\n", "\n");
    assert!(out.contains("(replies are JSON)"), "{out}");
    assert!(!json.trim().is_empty(), "{out}");
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
        assert!(e.is_eof(), "{json:?}: {e}");
    }
}

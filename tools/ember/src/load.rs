//! Opening a model for a command: path resolution, memory map, kernel choice.

use ember_runtime::arena::Arena;
use ember_runtime::gguf::{Gguf, MappedFile};
use ember_runtime::kernels::{Isa, Kernels};
use ember_runtime::model::Model;
use std::fmt;
use std::path::PathBuf;

/// The model used when neither `-m` nor `$EMBER_MODEL` names one.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A command's error: one line for the user.
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ember_runtime::Error> for CliError {
    fn from(e: ember_runtime::Error) -> Self {
        CliError(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError(e.to_string())
    }
}

/// Shorthand for a command's result.
pub type CliResult<T = ()> = Result<T, CliError>;

/// Writes to stdout; a failure (full disk, closed file) is the command's error, never a panic.
pub fn write_out(args: fmt::Arguments<'_>) -> CliResult {
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_fmt(args)
        .map_err(|e| CliError(format!("writing to stdout: {e}")))
}

/// Writes to stderr, ignoring a failure: a diagnostic that cannot be shown is dropped, and the
/// exit status still tells.
pub fn write_err(args: fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// The model named on the command line, else `$EMBER_MODEL`, else the default path. (The
/// environment is read here, not by clap, so that an explicit argument always wins over it.)
pub fn model_path(m: Option<PathBuf>) -> PathBuf {
    m.or_else(|| {
        std::env::var_os("EMBER_MODEL")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL))
}

/// The kernel set: `--kernels` / `$EMBER_KERNELS` if given (must be supported), else the best.
/// `exact` (or `SET+exact`) keeps llama.cpp's order for Q4_0 / Q4_1 / Q8_0.
pub fn kernels(name: Option<&str>) -> CliResult<Kernels> {
    let n = name.unwrap_or("");
    Kernels::from_name(n).ok_or_else(|| {
        let set = n.strip_suffix("+exact").unwrap_or(n);
        if set == "auto" || Isa::from_name(set).is_some() {
            CliError(format!("this CPU cannot run the '{set}' kernels"))
        } else {
            let all: Vec<_> = Isa::ALL.iter().map(|i| i.name()).collect();
            CliError(format!(
                "unknown kernel set '{n}' (choose from: auto, exact, {}; add +exact to a set \
                 for llama.cpp's order)",
                all.join(", ")
            ))
        }
    })
}

/// A mapped, parsed file.
pub struct OpenFile {
    pub path: PathBuf,
    pub file: MappedFile,
}

impl OpenFile {
    pub fn open(path: PathBuf) -> CliResult<Self> {
        let file =
            MappedFile::open(&path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        Ok(OpenFile { path, file })
    }

    pub fn gguf(&self) -> CliResult<Gguf<'_>> {
        Gguf::parse(self.file.bytes())
            .map_err(|e| CliError(format!("{}: {e}", self.path.display())))
    }
}

/// Opens the model at `path` and runs `f` with it.
pub fn with_model<R>(
    path: PathBuf,
    kernels: Kernels,
    f: impl FnOnce(&Model<'_>) -> CliResult<R>,
) -> CliResult<R> {
    let file = OpenFile::open(path)?;
    let g = file.gguf()?;
    let ctx = |e: ember_runtime::Error| CliError(format!("{}: {e}", file.path.display()));
    let mut mem =
        ember_runtime::arena::try_zeroed(Model::memory_needed(&g).map_err(ctx)?, "model tables")?;
    let mut arena = Arena::new(&mut mem);
    let model = Model::load(g, &mut arena, kernels).map_err(ctx)?;
    f(&model)
}

/// Opens the model at `path` as an owned, shareable model (for the engine API).
pub fn open_model(
    path: PathBuf,
    kernels: Kernels,
) -> CliResult<std::sync::Arc<ember_runtime::engine::LoadedModel>> {
    ember_runtime::engine::LoadedModel::open(&path, kernels)
        .map(std::sync::Arc::new)
        .map_err(|e| CliError(format!("{}: {e}", path.display())))
}

/// Runs `f` with only the tokenizer of the file at `path` (a vocabulary-only GGUF will do).
pub fn with_tokenizer<R>(
    path: PathBuf,
    f: impl FnOnce(&ember_runtime::tokenizer::Tokenizer<'_>) -> CliResult<R>,
) -> CliResult<R> {
    use ember_runtime::tokenizer::Tokenizer;
    let file = OpenFile::open(path)?;
    let g = file.gguf()?;
    let ctx = |e: ember_runtime::Error| CliError(format!("{}: {e}", file.path.display()));
    let mut mem = ember_runtime::arena::try_zeroed(
        Tokenizer::memory_needed(&g).map_err(ctx)?,
        "tokenizer tables",
    )?;
    let mut arena = Arena::new(&mut mem);
    let t = Tokenizer::from_gguf(&g, &mut arena).map_err(ctx)?;
    f(&t)
}

/// The default thread count: the physical cores (the runtime's one definition, shared with the
/// C ABI).
pub fn default_threads() -> usize {
    ember_runtime::parallel::default_threads()
}

/// A thread pool for `-t N` (`None`: the default), checked for sense.
pub fn thread_pool(n: Option<usize>) -> CliResult<ember_runtime::parallel::ThreadPool> {
    let n = n.unwrap_or_else(default_threads);
    if n == 0 || n > 256 {
        return Err(CliError(format!(
            "threads (-t) must be between 1 and 256, not {n}"
        )));
    }
    ember_runtime::parallel::ThreadPool::new(n)
        .map_err(|e| CliError(format!("starting {n} threads: {e}")))
}

/// Peak resident memory of this process so far (Linux: VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

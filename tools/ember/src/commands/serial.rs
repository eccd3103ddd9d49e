//! `ember serial`: the chat console ([`ember_runtime::console`]) on a serial device or on
//! stdin/stdout.
//!
//! The device is opened through the `serialport` crate: raw mode, the baud rate, 8N1, no flow
//! control unless `--rtscts`. When the line hangs up (or input ends) the command exits 0 with a
//! message, so a service manager can start it again for the next session.

use super::{ContextArgs, ModelArgs, SamplingArgs};
use crate::load::{CliError, CliResult};
use ember_runtime::console::{self, BusyIndicator, ConsoleConfig, EngineAssistant};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The serial device (e.g. /dev/serial0, /dev/ttyUSB0, /dev/pts/3).
    #[arg(long, required_unless_present = "stdio", conflicts_with = "stdio")]
    device: Option<PathBuf>,
    /// Run the console on stdin/stdout instead of a device.
    #[arg(long)]
    stdio: bool,
    /// Baud rate of the device.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Hardware (RTS/CTS) flow control.
    #[arg(long)]
    rtscts: bool,
    /// Do not echo typed characters (for terminals that echo locally).
    #[arg(long)]
    no_echo: bool,
    /// Longest input line in bytes; longer lines are refused.
    #[arg(long, default_value_t = console::DEFAULT_MAX_LINE as u32,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_line: u32,
    /// A system message to start each conversation with.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n_predict: usize,
    /// A GPIO line lit while the model generates, as CHIP:LINE (e.g. /dev/gpiochip0:17).
    #[arg(long, value_name = "CHIP:LINE")]
    busy_led: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    context: ContextArgs,
}

/// A byte link the console can run on: blocking reads, and a check for waiting input.
trait Link: Read + Write {
    fn input_waiting(&mut self) -> io::Result<bool>;
    /// True when the other side has hung up (for errors that do not say so themselves).
    fn hung_up(&mut self) -> bool {
        false
    }
}

/// `embedded-io` over a [`Link`].
struct Port<L>(L);

impl<L: Link> embedded_io::ErrorType for Port<L> {
    type Error = io::Error;
}

impl<L: Link> embedded_io::Read for Port<L> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_hangup(&e) => return Ok(0),
                r => return r,
            }
        }
    }
}

impl<L: Link> embedded_io::ReadReady for Port<L> {
    fn read_ready(&mut self) -> io::Result<bool> {
        match self.0.input_waiting() {
            // A hung-up line "has input": the read that follows reports the end.
            Err(e) if is_hangup(&e) => Ok(true),
            r => r,
        }
    }
}

impl<L: Link> embedded_io::Write for Port<L> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.0.flush() {
            // Draining output to a line that just hung up fails, and `serialport` reports that
            // only as "flush failed": ask the line, so a hangup ends the console cleanly.
            Err(e) if self.0.hung_up() => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
            r => r,
        }
    }
}

/// Errors that mean the other side went away. A tty whose other end closed reports EIO on
/// read; `serialport` passes that on as an `io::Error` of kind `Other` without the OS error
/// number, keeping only its message, hence the text match.
fn is_hangup(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    ) || e.raw_os_error() == Some(libc::EIO)
        || e.to_string().contains("Input/output error")
}

impl Link for serialport::TTYPort {
    fn input_waiting(&mut self) -> io::Result<bool> {
        use serialport::SerialPort;
        // A hung-up line counts as input: the read that follows reports the end.
        if poll_events(std::os::fd::AsRawFd::as_raw_fd(self))? & libc::POLLHUP != 0 {
            return Ok(true);
        }
        self.bytes_to_read()
            .map(|n| n > 0)
            .map_err(|e| io::Error::other(e.to_string()))
    }
    fn hung_up(&mut self) -> bool {
        poll_events(std::os::fd::AsRawFd::as_raw_fd(self)).is_ok_and(|ev| ev & libc::POLLHUP != 0)
    }
}

/// The poll events of `fd` now (input, hangup), without waiting.
fn poll_events(fd: std::os::fd::RawFd) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(p.revents)
}

/// stdin and stdout, with stdin in raw mode while it is a terminal.
struct Stdio {
    saved: Option<libc::termios>,
}

impl Stdio {
    fn open() -> Self {
        let mut saved = None;
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a zeroed termios they fill in.
        unsafe {
            if libc::isatty(0) == 1 {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(0, &mut t) == 0 {
                    saved = Some(t);
                    let mut raw = t;
                    libc::cfmakeraw(&mut raw);
                    // Keep output processing off too: the console sends CRLF itself.
                    libc::tcsetattr(0, libc::TCSANOW, &raw);
                }
            }
        }
        Stdio { saved }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: restoring the settings read from fd 0 at open.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Unbuffered: `input_waiting` must see everything not yet read.
        // SAFETY: reading into a valid buffer of buf.len() bytes from fd 0.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Unbuffered, like `read`: nothing is left in a buffer that a hung-up line could never
        // take (which would turn a clean hangup into a failed flush at exit).
        // SAFETY: writing from a valid buffer of buf.len() bytes to fd 1.
        let n = unsafe { libc::write(1, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Link for Stdio {
    fn input_waiting(&mut self) -> io::Result<bool> {
        // Only real input counts: at the end of piped input (POLLHUP alone) the reply goes on,
        // and the console ends at its next read.
        poll_events(0).map(|ev| ev & libc::POLLIN != 0)
    }
}

/// The busy LED on a GPIO character device line.
fn open_busy_led(spec: &str) -> CliResult<console::BusyPin<linux_embedded_hal::CdevPin>> {
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    let (chip, line) = spec
        .rsplit_once(':')
        .and_then(|(c, l)| Some((c, l.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            CliError(format!(
                "--busy-led wants CHIP:LINE, e.g. /dev/gpiochip0:17 (got {spec:?})"
            ))
        })?;
    let err = |e: linux_embedded_hal::gpio_cdev::Error| CliError(format!("busy LED {spec}: {e}"));
    let handle = Chip::new(chip)
        .map_err(err)?
        .get_line(line)
        .map_err(err)?
        .request(LineRequestFlags::OUTPUT, 0, "ember-busy")
        .map_err(err)?;
    Ok(console::BusyPin(
        linux_embedded_hal::CdevPin::new(handle).map_err(err)?,
    ))
}

pub fn main(a: Args) -> CliResult {
    let sampler_cfg = a.sampling.config();
    sampler_cfg.validate()?;
    if a.sampling.beam > 0 {
        return Err(CliError(
            "beam search is not available on the serial console".into(),
        ));
    }
    let mut busy: Box<dyn BusyIndicator> = match &a.busy_led {
        Some(spec) => Box::new(open_busy_led(spec)?),
        None => Box::new(()),
    };
    // Open the line before loading the model, so a wrong device fails at once.
    enum Opened {
        Tty(Port<serialport::TTYPort>),
        Stdio(Port<Stdio>),
    }
    let mut port = match &a.device {
        Some(dev) => {
            let path = dev.to_string_lossy();
            let tty = serialport::new(path.as_ref(), a.baud)
                .data_bits(serialport::DataBits::Eight)
                .parity(serialport::Parity::None)
                .stop_bits(serialport::StopBits::One)
                .flow_control(if a.rtscts {
                    serialport::FlowControl::Hardware
                } else {
                    serialport::FlowControl::None
                })
                // Reads wait this long, then wait again (see `Port::read`).
                .timeout(Duration::from_secs(3600))
                .open_native()
                .map_err(|e| CliError(format!("opening {}: {e}", dev.display())))?;
            Opened::Tty(Port(tty))
        }
        None => {
            // On a terminal, a hangup also sends SIGHUP, whose default action would kill the
            // console mid-reply: ignore it, and let the failing read or write (EIO) end the
            // console cleanly, as it does on a device.
            // SAFETY: isatty on fd 0; setting one signal's disposition to SIG_IGN.
            unsafe {
                if libc::isatty(0) == 1 {
                    libc::signal(libc::SIGHUP, libc::SIG_IGN);
                }
            }
            Opened::Stdio(Port(Stdio::open()))
        }
    };

    let opened = super::Opened::open(&a.model, &a.context, super::Sessions::One)?;
    let (model, sc) = (opened.loaded.model(), opened.sc);
    let mut engine = opened.engine(sampler_cfg, None)?;
    engine.conversation().set_system(a.system.as_deref());
    let mut assistant = EngineAssistant::new(engine, a.n_predict);
    let name = model
        .gguf
        .get_str("general.name")
        .ok()
        .flatten()
        .unwrap_or("model");
    let banner = format!(
        "ember serial console: {name}, context {} tokens ({} KV). Type /help for commands.",
        sc.n_ctx,
        sc.kv_type.name()
    );
    let cfg = ConsoleConfig {
        banner: &banner,
        echo: !a.no_echo,
    };
    let mut line = vec![0u8; a.max_line as usize];
    let where_ = match &a.device {
        Some(d) => d.display().to_string(),
        None => "stdin".into(),
    };
    errln!("ember serial: console on {where_}");
    let r = match &mut port {
        Opened::Tty(p) => console::run(p, &mut assistant, busy.as_mut(), &cfg, &mut line),
        Opened::Stdio(p) => console::run(p, &mut assistant, busy.as_mut(), &cfg, &mut line),
    };
    busy.set_busy(false);
    match r {
        Ok(console::Exit::EndOfInput) => {
            errln!("ember serial: {where_} hung up (end of input); exiting");
            Ok(())
        }
        Err(e) if is_hangup(&e) => {
            errln!("ember serial: {where_} hung up ({e}); exiting");
            Ok(())
        }
        Err(e) => Err(CliError(format!("serial line {where_}: {e}"))),
    }
}

//! `ember serial` end to end through a pseudo-terminal pair: this test is the terminal on the
//! master side, `ember serial --device /dev/pts/N` holds the other side.
#![cfg(target_os = "linux")]

mod common;

use common::{ember, wait_or_kill};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Longest any one exchange may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(180);

struct Pty {
    master: OwnedFd,
    slave: Option<OwnedFd>,
    slave_path: String,
}

fn open_pty() -> Pty {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty fills two descriptors; name, termios and winsize may be NULL.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // Not inherited by `ember`: the hangup comes when this test closes the master.
    for fd in [m, s] {
        // SAFETY: setting a descriptor flag on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: both descriptors were just opened and are owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: a buffer of name.len() bytes for the NUL-terminated path.
    let r = unsafe { libc::ttyname_r(s, name.as_mut_ptr(), name.len()) };
    assert_eq!(r, 0);
    // SAFETY: ttyname_r wrote a NUL-terminated string into `name`.
    let slave_path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Pty {
        master,
        slave: Some(slave),
        slave_path,
    }
}

impl Pty {
    fn send(&self, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            // SAFETY: writing from a valid slice.
            let n = unsafe {
                libc::write(
                    self.master.as_raw_fd(),
                    bytes[off..].as_ptr().cast(),
                    bytes.len() - off,
                )
            };
            assert!(
                n > 0,
                "write to the pty: {}",
                std::io::Error::last_os_error()
            );
            off += n as usize;
        }
    }

    /// Reads until the output so far ends with `end`; returns it.
    fn read_until(&self, end: &str) -> String {
        let mut out = Vec::new();
        let deadline = Instant::now() + HANG;
        while !out.ends_with(end.as_bytes()) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {end:?} after {HANG:?}; got {:?}",
                String::from_utf8_lossy(&out)
            );
            let mut p = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a valid buffer.
            let n =
                unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            assert!(
                n > 0,
                "read from the pty: {}",
                std::io::Error::last_os_error()
            );
            out.extend_from_slice(&buf[..n as usize]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends a line and returns everything up to the next prompt.
    fn turn(&self, line: &str) -> String {
        self.send(line.as_bytes());
        self.send(b"\r");
        self.read_until("\r\n> ")
    }
}

/// The greedy answer of `ember run --chat`.
fn run_chat(q: &str, n: usize) -> String {
    let out = ember()
        .args([
            "run",
            "--chat",
            "--temp",
            "0",
            "-t",
            "1",
            "-n",
            &n.to_string(),
            "-p",
            q,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The reply part of a turn's output: after the echoed line, before the prompt.
fn reply_of<'a>(turn: &'a str, line: &str) -> &'a str {
    let echoed = format!("{line}\r\n");
    let start = turn.find(&echoed).map_or(0, |i| i + echoed.len());
    turn[start..]
        .strip_suffix("\r\n> ")
        .unwrap_or(&turn[start..])
}

#[test]
fn a_serial_session_through_a_pty() {
    let mut pty = open_pty();
    let mut child = ember()
        .args([
            "serial",
            "--device",
            &pty.slave_path,
            "--baud",
            "115200",
            "--temp",
            "0",
            "-n",
            "200",
            "-t",
            "1",
            "--max-line",
            "200",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let banner = pty.read_until("\r\n> ");
    assert!(banner.starts_with("ember serial console: "), "{banner:?}");

    // The answer is the greedy answer of `ember run --chat`, with CRLF line ends.
    let q = "What is the capital of France?";
    let t = pty.turn(q);
    assert_eq!(reply_of(&t, q), run_chat(q, 200).replace('\n', "\r\n"));

    // A new conversation; then a line edited with Backspace and DEL (typed "Whaz" then erased).
    assert!(pty.turn("/reset").contains("(new conversation)"));
    pty.send(b"Whaz\x08t is 2+2?x\x7f\r");
    let t = pty.read_until("\r\n> ");
    assert!(
        t.starts_with("Whaz\x08 \x08t is 2+2?x\x08 \x08\r\n"),
        "{t:?}"
    );
    let edited = t
        .split_once("\r\n")
        .unwrap()
        .1
        .strip_suffix("\r\n> ")
        .unwrap();
    assert_eq!(edited, run_chat("What is 2+2?", 200).replace('\n', "\r\n"));

    // An overlong line is refused and the console goes on.
    let t = pty.turn(&"x".repeat(300));
    assert!(
        t.contains("error: line too long (more than 200 bytes), discarded"),
        "{t:?}"
    );

    // Garbage: NUL, escape sequences, invalid UTF-8, stray control bytes.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut garbage: Vec<u8> = (0..60)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .filter(|b| !matches!(b, b'\r' | b'\n' | 0x03 | 0x08 | 0x7f))
        .collect();
    garbage.extend_from_slice(b"\x00\x1b[A\x1b[D\xff\xfe");
    pty.send(&garbage);
    let t = pty.turn("");
    assert!(
        t.contains("error: the line is not valid UTF-8, discarded"),
        "{t:?}"
    );

    // Ctrl-C mid-reply stops it and brings the prompt back.
    pty.send(b"Tell me a long story about a dragon.\r");
    pty.read_until("dragon.\r\n");
    // Wait for the reply to start, then interrupt.
    let mut first = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(pty.master.as_raw_fd(), first.as_mut_ptr().cast(), 1) };
        if n == 1 {
            break;
        }
    }
    pty.send(b"\x03");
    let t = pty.read_until("\r\n> ");
    assert!(t.ends_with(" ^C\r\n> "), "{t:?}");
    let stats = pty.turn("/stats");
    let last: usize = stats
        .split("last reply ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stats:?}"));
    assert!(last < 200, "the reply was not stopped: {stats:?}");

    // /json on: the next reply is one JSON value; /json off: free text again.
    assert!(pty.turn("/json on").contains("(replies are JSON)"));
    let q = "Describe a cat as a JSON object with a name and an age.";
    let t = pty.turn(q);
    let reply = t
        .split(&format!("{q}\r\n"))
        .nth(1)
        .and_then(|r| r.strip_suffix("\r\n> "))
        .unwrap_or_else(|| panic!("{t:?}"))
        .replace("\r\n", "\n");
    // Any JSON value (the built-in grammar's), whole: it parses.
    serde_json::from_str::<serde_json::Value>(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    assert!(pty.turn("/stats").contains("| JSON replies"));
    assert!(pty
        .turn("/json maybe")
        .contains("error: /json needs on or off"));
    assert!(pty.turn("/json off").contains("(replies are free text)"));
    assert!(!pty.turn("/stats").contains("JSON"));
    // Unknown command, then hangup: ember exits 0 with a message.
    assert!(pty.turn("/nope").contains("error: unknown command /nope"));
    drop(pty.slave.take());
    drop(pty);
    let status = wait_or_kill(&mut child, HANG).expect("ember serial exits after the hangup");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("hung up"), "{err}");
}

#[test]
fn a_missing_device_is_a_clear_error() {
    let out = ember()
        .args(["serial", "--device", "/dev/does-not-exist-ember"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ember: error: opening /dev/does-not-exist-ember"),
        "{err}"
    );
    let out = ember()
        .args(["serial", "--stdio", "--busy-led", "nonsense"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--busy-led wants CHIP:LINE"));
    let out = ember()
        .args([
            "serial",
            "--stdio",
            "--busy-led",
            "/dev/no-such-gpiochip:17",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy LED /dev/no-such-gpiochip:17"));
}

#[test]
fn stdio_console_answers_like_run_chat() {
    let q = "Name three colors.";
    let mut child = ember()
        .args([
            "serial",
            "--stdio",
            "--no-echo",
            "--temp",
            "0",
            "-n",
            "24",
            "-t",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{q}\r\n").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let reply = text
        .split_once("\r\n> ")
        .map(|(_, r)| r)
        .and_then(|r| r.strip_suffix("\r\n> "))
        .unwrap_or_else(|| panic!("{text:?}"));
    assert_eq!(reply, run_chat(q, 24).replace('\n', "\r\n"));
}

/// `ember serial --stdio` on a terminal that hangs up while a reply streams: the terminal is the
/// console's controlling terminal, so the kernel also sends SIGHUP, which must not kill it; it
/// exits 0 with a message, as it does on a device.
#[test]
fn stdio_on_a_terminal_that_hangs_up_mid_reply_exits_0() {
    use std::os::unix::process::CommandExt;
    let mut pty = open_pty();
    let slave = pty.slave.take().unwrap();
    let fd = slave.as_raw_fd();
    let mut cmd = ember();
    cmd.args(["serial", "--stdio", "--temp", "0", "-n", "400", "-t", "1"])
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls: a new session, the pty as
    // its controlling terminal and as stdin and stdout.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::ioctl(fd, libc::TIOCSCTTY as _, 0);
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    pty.read_until("\r\n> ");
    pty.send(b"Tell me a long story about a dragon.\r");
    // Some of the reply, then the terminal goes away.
    pty.read_until(" ");
    std::thread::sleep(Duration::from_millis(300));
    drop(pty);
    let status = wait_or_kill(&mut child, HANG).expect("ember serial did not exit");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("hung up"), "{err}");
}

/// The systemd unit in `boards/rpi/` starts a command this `ember` accepts: its ExecStart, with
/// the unit's environment, fails only at opening the (absent) device.
#[test]
fn the_rpi_service_unit_runs_a_valid_command() {
    let unit_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../boards/rpi/ember-serial.service");
    let unit = std::fs::read_to_string(unit_path).unwrap();
    let mut env = std::collections::HashMap::new();
    for l in unit.lines() {
        if let Some((k, v)) = l
            .strip_prefix("Environment=")
            .and_then(|kv| kv.split_once('='))
        {
            env.insert(k.to_string(), v.to_string());
        }
    }
    assert!(env.contains_key("EMBER_BOARD") && env.contains_key("EMBER_MODEL"));
    env.insert("EMBER_DEVICE".into(), "/dev/ember-test-no-such-uart".into());
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut words = exec.split_whitespace().map(|w| {
        let mut w = w.to_string();
        for (k, v) in &env {
            w = w.replace(&format!("${{{k}}}"), v);
        }
        w
    });
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/ember"));
    let args: Vec<String> = words.collect();
    let out = ember().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ember: error: opening /dev/ember-test-no-such-uart"),
        "{args:?}: {err}"
    );
}

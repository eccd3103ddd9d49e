//! The serial console on arbitrary byte streams (cut into reads at the fuzzer's choice), with a
//! scripted assistant: it must consume everything, keep every line within its buffer, send only
//! CRLF line ends, and end cleanly when the input ends.
#![no_main]

use ember_runtime::console::{self, Assistant, ConsoleConfig, Exit, ReplyEnd};
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;

struct Port {
    input: VecDeque<Vec<u8>>,
    output: Vec<u8>,
}

impl embedded_io::ErrorType for Port {
    type Error = core::convert::Infallible;
}
impl embedded_io::Read for Port {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let Some(mut c) = self.input.pop_front() else {
            return Ok(0);
        };
        let n = c.len().min(buf.len());
        buf[..n].copy_from_slice(&c[..n]);
        if n < c.len() {
            self.input.push_front(c.split_off(n));
        }
        Ok(n)
    }
}
impl embedded_io::ReadReady for Port {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.input.is_empty())
    }
}
impl embedded_io::Write for Port {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct Echo {
    max_line: usize,
}
impl Assistant for Echo {
    fn reply(
        &mut self,
        line: &str,
        emit: &mut dyn FnMut(&str) -> bool,
    ) -> Result<ReplyEnd, ember_runtime::Error> {
        assert!(line.len() <= self.max_line);
        for w in line.split(' ').take(8) {
            if !emit(w) {
                return Ok(ReplyEnd::Stopped);
            }
        }
        Ok(ReplyEnd::Finished)
    }
    fn reset(&mut self) {}
    fn set_system(&mut self, _: &str) -> Result<(), ember_runtime::Error> {
        Ok(())
    }
    fn set_temperature(&mut self, _: f32) -> Result<(), ember_runtime::Error> {
        Ok(())
    }
    fn write_stats(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        out.write_str("stats")
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    let max_line = 1 + (cfg as usize % 64);
    // 0xA5 cuts the stream into reads (and is dropped), so the fuzzer controls the timing.
    let input = rest
        .split(|&b| b == 0xa5)
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut port = Port {
        input,
        output: Vec::new(),
    };
    let mut line = vec![0u8; max_line];
    let c = ConsoleConfig {
        banner: "fuzz",
        echo: cfg & 0x80 != 0,
    };
    let exit = console::run(&mut port, &mut Echo { max_line }, &mut (), &c, &mut line);
    assert_eq!(exit, Ok(Exit::EndOfInput));
    for (i, &b) in port.output.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && port.output[i - 1] == b'\r');
        }
    }
});

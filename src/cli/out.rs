//! Writing to stdout without panicking when the reader went away
//! (`tensorwire stats | head`): `println!` panics on EPIPE ("failed
//! printing to stdout: Broken pipe"); these helpers exit quietly (status
//! 0: the reader had what it wanted) instead.

use std::io::Write;

/// Writes `args` and a newline to stdout; a closed stdout ends the
/// process quietly with status 0, any other error with status 1.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = r {
        gone(e);
    }
}

/// Writes raw text to stdout (no newline added), flushed.
pub fn text(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        gone(e);
    }
}

/// Flushes stdout at the end (a buffered write can fail only now).
pub fn flush() {
    if let Err(e) = std::io::stdout().lock().flush() {
        gone(e);
    }
}

fn gone(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("tensorwire: error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// `println!` through [`line`].
macro_rules! outln {
    () => { $crate::cli::out::line(format_args!("")) };
    ($($t:tt)*) => { $crate::cli::out::line(format_args!($($t)*)) };
}
pub(crate) use outln;

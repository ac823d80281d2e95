//! Puts a terminal stdin in raw mode for the guest console and restores it.

use std::sync::Mutex;
use vmm::config::sync::lock_unpoisoned;

static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Raw mode on stdin if it is a TTY; no-op otherwise.
pub fn enter_raw_mode() {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return;
    }
    // SAFETY: termios is plain data, filled in by tcgetattr below.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is a TTY and `t` is a valid termios to fill.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
        return;
    }
    *lock_unpoisoned(&SAVED) = Some(t);
    let mut raw = t;
    // No line editing, echo or signal keys: every byte goes to the guest.
    raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
    raw.c_iflag &= !(libc::IXON | libc::ICRNL);
    // SAFETY: valid fd and termios.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) };
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        prev(info)
    }));
}

/// Restores the terminal saved by [`enter_raw_mode`], if any.
pub fn restore() {
    if let Some(t) = lock_unpoisoned(&SAVED).take() {
        // SAFETY: valid fd and the termios tcgetattr gave us.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    }
}

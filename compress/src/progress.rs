//! Progress bars on stderr (indicatif), shown only for steps that take over a second, only on a terminal, and
//! never when `COMPRESSOR_NO_PROGRESS=1`.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use compressor_passes::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Show a bar only once a step has run this long.
const SHOW_AFTER: Duration = Duration::from_secs(1);

struct Current {
    bar: ProgressBar,
    started: Instant,
    shown: bool,
}

/// The binary's [`Progress`]: one bar per step.
pub struct Bars {
    enabled: bool,
    current: Mutex<Option<Current>>,
}

impl Bars {
    /// Enabled when stderr is a terminal and `COMPRESSOR_NO_PROGRESS` is not `1`.
    pub fn from_env() -> Self {
        let off = std::env::var_os("COMPRESSOR_NO_PROGRESS").is_some_and(|v| v == "1");
        Self {
            enabled: !off && std::io::stderr().is_terminal(),
            current: Mutex::new(None),
        }
    }
}

impl Bars {
    /// Update the current bar, making it visible once its step has run for [`SHOW_AFTER`].
    fn advance(&self, update: impl FnOnce(&ProgressBar)) {
        let Ok(mut guard) = self.current.lock() else {
            return;
        };
        let Some(c) = guard.as_mut() else { return };
        if !c.shown && c.started.elapsed() >= SHOW_AFTER {
            c.bar.set_draw_target(ProgressDrawTarget::stderr());
            c.shown = true;
        }
        update(&c.bar);
    }
}

impl Progress for Bars {
    fn on_pass_start(&self, label: &str, units: usize) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(units as u64), ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {wide_msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        if let Ok(mut c) = self.current.lock() {
            *c = Some(Current {
                bar,
                started: Instant::now(),
                shown: false,
            });
        }
    }

    fn on_unit(&self, name: &str) {
        self.advance(|bar| {
            bar.set_message(name.to_string());
            bar.inc(1);
        });
    }

    fn on_pass_end(&self) {
        if let Ok(mut guard) = self.current.lock() {
            if let Some(c) = guard.take() {
                c.bar.finish_and_clear();
            }
        }
    }
}

impl compressor_eval::suite::SuiteProgress for Bars {
    fn task(&self, model: &str, task: &str) {
        self.on_pass_end();
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>8} {spinner} {pos} inputs {wide_msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix("eval");
        bar.set_message(format!("{task} on {model}"));
        if let Ok(mut c) = self.current.lock() {
            *c = Some(Current {
                bar,
                started: Instant::now(),
                shown: false,
            });
        }
    }

    fn inputs(&self, n: usize) {
        self.advance(|bar| bar.inc(n as u64));
    }
}

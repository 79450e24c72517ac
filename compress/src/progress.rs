//! Progress on stderr, for the steps of a command (passes, their sub-steps, evaluation, writing), in one of three
//! modes chosen from the environment:
//!
//! - **bars** when stderr is a terminal: an indicatif bar per step, shown once the step has run for a second, with
//!   count of total, elapsed time and an estimate of the time left;
//! - **lines** when stderr is not a terminal (a log file, CI): one plain line every few seconds for a step that is
//!   still running (`progress: pass[0] blockwise-quant: calibrate 12/16 (75%), 9.1s elapsed, about 3.0s left`),
//!   and a closing line for each step that printed one. Steps shorter than the interval print nothing;
//!   `COMPRESSOR_PROGRESS_INTERVAL` sets the interval in seconds (default 5);
//! - **off** with `COMPRESSOR_NO_PROGRESS=1` (set by tests that compare stderr exactly).
//!
//! A step that starts while another is running (a pass's `calibrate` inside `pass[0] blockwise-quant`) is shown as
//! a sub-step of the outermost one: `pass[0] blockwise-quant: calibrate`.

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compressor_passes::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::human::duration;

/// Show a bar only once a step has run this long.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// The default interval between progress lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Off,
    Bars,
    /// A line every this often.
    Lines(Duration),
}

impl Mode {
    /// From `COMPRESSOR_NO_PROGRESS`, `COMPRESSOR_PROGRESS_INTERVAL` and whether stderr is a terminal.
    pub fn from_env() -> anyhow::Result<Self> {
        if std::env::var_os("COMPRESSOR_NO_PROGRESS").is_some_and(|v| v == "1") {
            return Ok(Mode::Off);
        }
        if std::io::stderr().is_terminal() {
            return Ok(Mode::Bars);
        }
        match std::env::var("COMPRESSOR_PROGRESS_INTERVAL") {
            Err(_) => Ok(Mode::Lines(LINE_EVERY)),
            Ok(v) => match v.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => Ok(Mode::Lines(Duration::from_secs_f64(s))),
                _ => anyhow::bail!(
                    "invalid COMPRESSOR_PROGRESS_INTERVAL `{v}`: expected seconds between progress lines (a number >= 0)\nhint: unset it for the default of {}s, or set COMPRESSOR_NO_PROGRESS=1 for no progress lines",
                    LINE_EVERY.as_secs()
                ),
            },
        }
    }
}

/// The step being shown.
struct Current {
    /// The outermost step's label, and this step's full label (`pass[0] hessian-mp: sensitivity`).
    root: String,
    label: String,
    /// Units of the step; `None` until an evaluation has queued inputs.
    total: Option<u64>,
    done: u64,
    /// The name of the last unit.
    unit: String,
    started: Instant,
    /// Bars mode: the bar, hidden until [`SHOW_AFTER`].
    bar: Option<ProgressBar>,
    shown: bool,
    /// Lines mode: when the last line for this step was printed.
    printed: Option<Instant>,
}

impl Current {
    fn new(root: String, label: String, total: Option<u64>, mode: Mode) -> Self {
        let bar = (mode == Mode::Bars).then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
            let template = if total.is_some() {
                "{prefix} [{bar:30}] {pos}/{len} {elapsed} elapsed, {eta} left {wide_msg}"
            } else {
                "{prefix} {spinner} {pos} {elapsed} {wide_msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.clone());
            bar
        });
        Self {
            root,
            label,
            total,
            done: 0,
            unit: String::new(),
            started: Instant::now(),
            bar,
            shown: false,
            printed: None,
        }
    }

    /// `pass[0] blockwise-quant: calibrate 12/16 (75%), 9.1s elapsed, about 3.0s left`.
    fn line(&self) -> String {
        let elapsed = self.started.elapsed();
        let mut s = format!("progress: {}", self.label);
        match self.total {
            Some(total) if total > 0 => {
                s.push_str(&format!(
                    " {}/{} ({}%), {} elapsed",
                    self.done,
                    total,
                    self.done * 100 / total,
                    duration(elapsed)
                ));
                if self.done > 0 && self.done < total {
                    let left = elapsed.mul_f64((total - self.done) as f64 / self.done as f64);
                    s.push_str(&format!(", about {} left", duration(left)));
                }
            }
            _ => s.push_str(&format!(
                " {} done, {} elapsed",
                self.done,
                duration(elapsed)
            )),
        }
        if !self.unit.is_empty() {
            s.push_str(&format!(" ({})", self.unit));
        }
        s
    }
}

struct State {
    mode: Mode,
    current: Option<Current>,
}

impl State {
    /// Lines mode: print the current step's line when it is due.
    fn tick(&mut self) {
        let Mode::Lines(every) = self.mode else {
            return;
        };
        let Some(c) = self.current.as_mut() else {
            return;
        };
        let since = c.printed.unwrap_or(c.started);
        if since.elapsed() >= every {
            eprintln!("{}", c.line());
            c.printed = Some(Instant::now());
        }
    }

    fn start(&mut self, label: &str, total: Option<u64>, nested: bool) {
        let root = match (&self.current, nested) {
            (Some(c), true) => Some(c.root.clone()),
            _ => None,
        };
        self.end();
        let (root, full) = match root {
            Some(r) => (r.clone(), format!("{r}: {label}")),
            None => (label.to_string(), label.to_string()),
        };
        self.current = Some(Current::new(root, full, total, self.mode));
    }

    fn end(&mut self) {
        if let Some(c) = self.current.take() {
            if let Some(bar) = &c.bar {
                bar.finish_and_clear();
            }
            if c.printed.is_some() {
                eprintln!(
                    "progress: {} done: {} in {}",
                    c.label,
                    c.done,
                    duration(c.started.elapsed())
                );
            }
        }
    }

    fn advance(&mut self, n: u64, unit: Option<&str>) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        c.done += n;
        if let Some(u) = unit {
            c.unit = u.to_string();
        }
        if let Some(bar) = &c.bar {
            if !c.shown && c.started.elapsed() >= SHOW_AFTER {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                c.shown = true;
            }
            if let Some(u) = unit {
                bar.set_message(u.to_string());
            }
            bar.inc(n);
        }
        self.tick();
    }
}

/// The binary's [`Progress`] (and evaluation progress): one bar or one series of lines per step.
pub struct Bars {
    state: Arc<Mutex<State>>,
}

impl Bars {
    /// The mode from the environment ([`Mode::from_env`]).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self::new(Mode::from_env()?))
    }

    pub fn new(mode: Mode) -> Self {
        let state = Arc::new(Mutex::new(State {
            mode,
            current: None,
        }));
        if let Mode::Lines(every) = mode {
            // A step whose units are slow (one Hessian block, one evaluation batch) still prints on time.
            let weak = Arc::downgrade(&state);
            let nap = every.clamp(Duration::from_millis(50), Duration::from_millis(500));
            std::thread::spawn(move || loop {
                std::thread::sleep(nap);
                let Some(state) = weak.upgrade() else { return };
                let lock = state.lock();
                if let Ok(mut s) = lock {
                    s.tick();
                }
            });
        }
        Self { state }
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            if s.mode != Mode::Off {
                f(&mut s);
            }
        }
    }
}

impl Progress for Bars {
    fn on_pass_start(&self, label: &str, units: usize) {
        self.with(|s| s.start(label, Some(units as u64), true));
    }

    fn on_unit(&self, name: &str) {
        self.with(|s| s.advance(1, Some(name)));
    }

    fn on_pass_end(&self) {
        self.with(State::end);
    }
}

impl compressor_eval::suite::SuiteProgress for Bars {
    fn task(&self, model: &str, task: &str) {
        self.with(|s| s.start(&format!("eval {task} on {model}"), None, false));
    }

    fn queued(&self, n: usize) {
        self.with(|s| {
            let Some(c) = s.current.as_mut() else {
                return;
            };
            let total = c.total.unwrap_or(0) + n as u64;
            c.total = Some(total);
            if let Some(bar) = &c.bar {
                if c.done == 0 {
                    // From a spinner to a bar with a length, now that the length is known.
                    if let Ok(style) = ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos}/{len} inputs, {elapsed} elapsed, {eta} left",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                }
                bar.set_length(total);
            }
        });
    }

    fn inputs(&self, n: usize) {
        self.with(|s| s.advance(n as u64, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_of_total_with_an_estimate() {
        let mut c = Current::new(
            "pass[0] cast".into(),
            "pass[0] cast".into(),
            Some(4),
            Mode::Lines(LINE_EVERY),
        );
        c.started = Instant::now() - Duration::from_secs(6);
        c.done = 3;
        c.unit = "encoder.layer.0.attention.self.query.weight".into();
        let line = c.line();
        assert!(
            line.starts_with("progress: pass[0] cast 3/4 (75%), 6.0s elapsed, about 2.0s left"),
            "{line}"
        );
        assert!(line.ends_with("(encoder.layer.0.attention.self.query.weight)"));
        c.total = None;
        c.unit.clear();
        assert!(c
            .line()
            .starts_with("progress: pass[0] cast 3 done, 6.0s elapsed"));
    }

    #[test]
    fn a_step_inside_another_is_its_sub_step() {
        let mut s = State {
            mode: Mode::Lines(Duration::from_secs(3600)),
            current: None,
        };
        s.start("pass[1] hessian-mp", Some(2), true);
        s.start("sensitivity", Some(12), true);
        assert_eq!(
            s.current.as_ref().map(|c| c.label.as_str()),
            Some("pass[1] hessian-mp: sensitivity")
        );
        s.start("qat", Some(100), true);
        assert_eq!(
            s.current.as_ref().map(|c| c.label.as_str()),
            Some("pass[1] hessian-mp: qat")
        );
        s.end();
        s.start("write", Some(3), true);
        assert_eq!(s.current.as_ref().map(|c| c.label.as_str()), Some("write"));
    }
}

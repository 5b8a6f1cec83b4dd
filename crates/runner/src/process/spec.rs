//! What to run: the program, its arguments and how it starts (the spawning is `process`'s).

use std::path::PathBuf;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The program, looked up in `PATH` if it has no slash.
    pub program: String,
    /// Its arguments, passed as-is (no shell).
    pub args: Vec<String>,
    /// Working directory; the current one if `None`.
    pub cwd: Option<PathBuf>,
    /// Variables added to (or overriding) the inherited environment.
    pub env: Vec<(String, String)>,
    /// Piped stdin if true, `/dev/null` otherwise.
    pub stdin: bool,
    /// Start from an empty environment (only `env`) instead of the worker's.
    pub clear_env: bool,
    /// A network namespace (an open descriptor the caller keeps alive until the child has
    /// started) that the child joins before it execs.
    pub netns: Option<std::os::fd::RawFd>,
    /// SIGKILL the child when the thread that started it (a long-lived runtime thread) or this
    /// process dies, from before it execs: no window in which a killed worker leaves it behind.
    pub die_with_parent: bool,
}

impl Spec {
    /// Runs `cmd` through `sh -c`; only for trusted command lines (repository config, tests).
    pub fn shell(cmd: &str) -> Spec {
        Spec::new("sh", ["-c", cmd])
    }

    /// Runs `cmd` as `sh -c` would, but a simple command (words of plain characters only: no
    /// quotes, variables, globs, redirections, operators or leading assignment) directly,
    /// without a shell process in between: ~1 ms less per start, which counts when an emulator
    /// boots for every case.
    pub fn command_line(cmd: &str) -> Spec {
        let plain = |c: char| c.is_ascii_alphanumeric() || "_-./,:+@%=".contains(c);
        let mut words = cmd.split_ascii_whitespace();
        match words.next() {
            Some(program)
                if cmd.chars().all(|c| plain(c) || c.is_ascii_whitespace())
                    && !program.contains('=') =>
            {
                Spec::new(program, words)
            }
            _ => Spec::shell(cmd),
        }
    }

    /// Runs `program` with `args`, without a shell.
    pub fn new<I, S>(program: impl Into<String>, args: I) -> Spec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Spec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            cwd: None,
            env: Vec::new(),
            stdin: false,
            clear_env: false,
            netns: None,
            die_with_parent: false,
        }
    }

    /// Sets the working directory.
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Spec {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds one environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Spec {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Chooses a piped stdin (true) or `/dev/null` (false).
    pub fn with_stdin(mut self, piped: bool) -> Spec {
        self.stdin = piped;
        self
    }
}

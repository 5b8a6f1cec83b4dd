//! Decoded panics: the code addresses a crash printed (ESP-IDF backtraces and register dumps,
//! ESP8266 exception lines, Cortex-M fault dumps), resolved against the booted ELF's DWARF.
//!
//! Finding the addresses in a line is [`code_addresses`], a pure function; resolving them is
//! [`elf`]; [`Decoder`] ties the two together for one queue and puts the result into words.

pub mod elf;

use regex::Regex;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

/// `Backtrace:` and what follows it on the line (ESP-IDF, ESP32 ROM).
static BACKTRACE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bbacktrace\s*:(.*)$").unwrap_or_else(|e| unreachable!("{e}"))
});

/// One backtrace frame: `PC:SP` (the stack pointer is not code and is skipped), or a lone `PC`.
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b0x([0-9a-f]{1,16})(?:\s*:\s*0x[0-9a-f]{1,16})?\b")
        .unwrap_or_else(|e| unreachable!("{e}"))
});

/// A register that holds a code address, and its value: `PC      : 0x…` (ESP-IDF dump),
/// `abort() was called at PC 0x…`, `EXCVADDR: 0x…`, `epc1=0x…` / `excvaddr=0x…` / `depc=0x…`
/// (ESP8266), `pc=0x…` / `lr = 0x…` / `PC: 08001234` (Cortex-M dumps; without `0x` the value
/// needs a `:`/`=` and eight digits, so prose such as "pc 12" is not taken for an address).
static REGISTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:pc|lr|excvaddr|epc[1-3]|depc)\b(?:\s*[:=]?\s*0x([0-9a-f]{1,16})\b|\s*[:=]\s*([0-9a-f]{8})\b)",
    )
    .unwrap_or_else(|e| unreachable!("{e}"))
});

/// The code addresses `line` holds, in the order printed, each once. Zero is left out: it is
/// an unset register (`EXCVADDR: 0x00000000`), never code.
pub fn code_addresses(line: &str) -> Vec<u64> {
    let mut found: Vec<u64> = Vec::new();
    let mut add = |hex: &str| {
        if let Ok(a) = u64::from_str_radix(hex, 16) {
            if a != 0 && !found.contains(&a) {
                found.push(a);
            }
        }
    };
    for c in REGISTER.captures_iter(line) {
        if let Some(hex) = c.get(1).or_else(|| c.get(2)) {
            add(hex.as_str());
        }
    }
    if let Some(rest) = BACKTRACE.captures(line).and_then(|c| c.get(1)) {
        for c in FRAME.captures_iter(rest.as_str()) {
            if let Some(hex) = c.get(1) {
                add(hex.as_str());
            }
        }
    }
    found
}

/// The code addresses of several lines (a crash block), each once, in order.
pub fn block_addresses<S: AsRef<str>>(lines: &[S]) -> Vec<u64> {
    let mut all: Vec<u64> = Vec::new();
    for line in lines {
        for a in code_addresses(line.as_ref()) {
            if !all.contains(&a) {
                all.push(a);
            }
        }
    }
    all
}

/// One decoded address as shown under the crash: `0x400d1234 → function at file.c:42`.
pub fn format_frame(addr: u64, resolved: &elf::Resolved) -> String {
    let what = match resolved {
        elf::Resolved::Frames(frames) => frames
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", inlined into "),
        elf::Resolved::Symbol(name) => format!("{name} (no line information)"),
        elf::Resolved::Nothing => "nothing in the ELF (not code, or not this firmware)".into(),
    };
    format!("{addr:#010x} → {what}")
}

/// Decodes crashes for one queue: the ELF named by its profile, loaded once, on the first
/// crash that has addresses (most queues never need it).
pub struct Decoder {
    /// The ELF as the repository names it (for messages), and where it is on disk.
    elf: Option<(String, PathBuf)>,
    /// The checkout, stripped from source paths so they read as the repository's own.
    root: PathBuf,
    loaded: Mutex<Option<elf::Elf>>,
}

impl Decoder {
    /// `elf`: the profile's `[emulator] elf`, relative to the checkout `root`.
    pub fn new(elf: Option<&str>, root: &Path) -> Decoder {
        Decoder {
            elf: elf.map(|e| (e.to_string(), root.join(e))),
            root: root.to_path_buf(),
            loaded: Mutex::new(None),
        }
    }

    /// The lines shown under a crash block: a heading and one line per address; empty when
    /// the block holds no address. Never fails: a missing or stripped ELF is a note.
    pub fn decode<S: AsRef<str>>(&self, block: &[S]) -> Vec<String> {
        let addrs = block_addresses(block);
        if addrs.is_empty() {
            return Vec::new();
        }
        let Some((name, path)) = &self.elf else {
            return vec![
                "crash addresses not decoded: set [emulator] elf in testarena.toml to the ELF that was booted"
                    .to_string(),
            ];
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let elf = loaded.get_or_insert_with(|| elf::Elf::load(path, &self.root));
        if let Some(note) = elf.unusable() {
            return vec![format!("crash addresses not decoded: {name} {note}")];
        }
        let mut out = vec![format!("decoded addresses ({name}):")];
        out.extend(
            addrs
                .iter()
                .map(|&a| format!("  {}", format_frame(a, &elf.resolve(a)))),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_idf_backtrace_takes_the_pcs_not_the_stack_pointers() {
        assert_eq!(
            code_addresses("Backtrace: 0x400d1234:0x3ffb1f00 0x400d5678:0x3ffb1f20 |<-CORRUPTED"),
            vec![0x400d1234, 0x400d5678]
        );
        assert_eq!(
            code_addresses("Backtrace:0x400D1234:0x3FFB1F00   0x400d5678 : 0x3ffb1f20"),
            vec![0x400d1234, 0x400d5678],
            "no space after the colon, upper-case hex, spaces around the pair's colon"
        );
        assert_eq!(
            code_addresses("backtrace: 0x40081234 0x40085678"),
            vec![0x40081234, 0x40085678],
            "lone PCs"
        );
    }

    #[test]
    fn register_dumps_of_each_family() {
        assert_eq!(
            code_addresses(
                "PC      : 0x400d1234  PS      : 0x00060030  A0      : 0x800d5678  A1      : 0x3ffb1f00"
            ),
            vec![0x400d1234],
            "only the PC of an ESP-IDF dump line"
        );
        assert_eq!(
            code_addresses("EXCVADDR: 0x00000000  EXCCAUSE: 0x0000001c"),
            Vec::<u64>::new(),
            "a zero EXCVADDR is no address"
        );
        assert_eq!(
            code_addresses("EXCVADDR: 0x3FF4_0000 excvaddr=0x40000010"),
            vec![0x40000010],
            "a malformed value is skipped, the next one is taken"
        );
        assert_eq!(
            code_addresses("abort() was called at PC 0x400d9abc on core 0"),
            vec![0x400d9abc]
        );
        assert_eq!(
            code_addresses("epc1=0x40201234 epc2=0x00000000 epc3=0x40105678 excvaddr=0x00000008 depc=0x00000000"),
            vec![0x40201234, 0x40105678, 0x8],
            "ESP8266 exception line"
        );
        assert_eq!(
            code_addresses("r12=0x00000001 lr=0x08000f1b pc=0x08001234 psr=0x21000000"),
            vec![0x08000f1b, 0x08001234],
            "Cortex-M fault dump"
        );
        assert_eq!(
            code_addresses("  PC = 0X0800ABCD   LR: 08000F1B"),
            vec![0x0800abcd, 0x08000f1b],
            "odd spacing, upper-case 0X, a value without 0x"
        );
    }

    #[test]
    fn ordinary_lines_hold_no_address() {
        for line in [
            "pong",
            "the pc is at 12 o'clock",
            "upc=0x40201234 pcx=0x40201234",
            "stack pointer 0x3ffb1f00",
            "Guru Meditation Error: Core  0 panic'ed (LoadProhibited). Exception was unhandled.",
        ] {
            assert_eq!(code_addresses(line), Vec::<u64>::new(), "{line}");
        }
    }

    #[test]
    fn a_block_lists_each_address_once_in_order() {
        let block = [
            "Guru Meditation Error: Core  0 panic'ed (LoadProhibited).",
            "PC      : 0x400d1234  PS      : 0x00060030",
            "Backtrace: 0x400d1234:0x3ffb1f00 0x400d5678:0x3ffb1f20",
        ];
        assert_eq!(block_addresses(&block), vec![0x400d1234, 0x400d5678]);
    }

    #[test]
    fn frames_are_put_into_words() {
        let frames = elf::Resolved::Frames(vec![
            elf::Frame {
                function: Some("helper".into()),
                file: Some("src/main.c".into()),
                line: Some(42),
            },
            elf::Frame {
                function: Some("fw_main".into()),
                file: Some("src/main.c".into()),
                line: Some(99),
            },
        ]);
        assert_eq!(
            format_frame(0x400d1234, &frames),
            "0x400d1234 → helper at src/main.c:42, inlined into fw_main at src/main.c:99"
        );
        assert_eq!(
            format_frame(0x8, &elf::Resolved::Nothing),
            "0x00000008 → nothing in the ELF (not code, or not this firmware)"
        );
        assert_eq!(
            format_frame(0x4010_0000, &elf::Resolved::Symbol("isr".into())),
            "0x40100000 → isr (no line information)"
        );
    }

    #[test]
    fn without_an_elf_or_with_a_missing_one_a_note_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let block = ["Backtrace: 0x400d1234:0x3ffb1f00"];
        let none = Decoder::new(None, dir.path()).decode(&block);
        assert_eq!(none.len(), 1);
        assert!(none[0].contains("set [emulator] elf"), "{none:?}");
        let missing = Decoder::new(Some("build/fw.elf"), dir.path()).decode(&block);
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].starts_with("crash addresses not decoded: build/fw.elf cannot be read"),
            "{missing:?}"
        );
        assert!(
            Decoder::new(None, dir.path()).decode(&["pong"]).is_empty(),
            "no addresses, nothing to say"
        );
    }
}

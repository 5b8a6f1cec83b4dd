//! Embeds every file of `web/` into the binary: generates a table of (name, bytes).
use std::io::Write;
use std::path::PathBuf;

fn main() {
    let web =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../../web");
    println!("cargo:rerun-if-changed={}", web.display());
    let mut entries = Vec::new();
    if let Ok(dir) = std::fs::read_dir(&web) {
        for e in dir.flatten() {
            let path = e.path();
            println!("cargo:rerun-if-changed={}", path.display());
            if path.is_file() {
                if let (Some(name), Ok(abs)) = (
                    path.file_name().and_then(|n| n.to_str()).map(String::from),
                    path.canonicalize(),
                ) {
                    entries.push((name, abs));
                }
            }
        }
    }
    entries.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("assets.rs");
    let mut f = std::fs::File::create(&out).expect("create assets.rs");
    writeln!(f, "/// Files of web/, embedded at build time.").expect("write");
    writeln!(f, "pub static ASSETS: &[(&str, &[u8])] = &[").expect("write");
    for (name, abs) in entries {
        writeln!(
            f,
            "    ({name:?}, include_bytes!({:?})),",
            abs.display().to_string()
        )
        .expect("write");
    }
    writeln!(f, "];").expect("write");
}

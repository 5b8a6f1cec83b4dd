//! Rebuilds the store when a migration is added: `sqlx::migrate!` reads the migration
//! directories at compile time, and cargo does not watch a new file there by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

//! `sqlx::migrate!` embeds `migrations/` at compile time but cannot tell cargo to watch the
//! folder: without this, a new migration file would not reach the binaries until some other
//! change rebuilt this crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

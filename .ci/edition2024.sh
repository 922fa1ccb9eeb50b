#!/usr/bin/env bash
# What the README tells a user to do, done: vendor stdsse into a new
# edition-2024 crate (its two set-up commands), copy in the examples'
# Ctrl+C helper (examples/common/mod.rs), and build offline with warnings as
# errors, bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$root/target/edition2024-check
rm -rf "$dir"
mkdir -p "$dir/src"
cat >"$dir/Cargo.toml" <<EOF
[package]
name = "copied-helper"
version = "0.0.0"
edition = "2024"
publish = false

# Its own workspace, not a member of stdsse's.
[workspace]
EOF
cp examples/common/mod.rs "$dir/src/common.rs"
cat >"$dir/src/main.rs" <<'EOF'
mod common;

fn main() -> std::io::Result<()> {
    let server = stdsse::Server::bind("127.0.0.1:0")?;
    let handle = server.handle();
    common::on_ctrl_c(move || handle.shutdown());
    common::print_listening(&server);
    server.run()
}
EOF
# The README's two commands, run in the new crate (STDSSE: this checkout).
(
    cd "$dir"
    STDSSE=$root
    mkdir -p vendor/stdsse && cp -r "$STDSSE"/src "$STDSSE"/LICENSE-MIT "$STDSSE"/LICENSE-APACHE vendor/stdsse/
    printf '[package]\nname = "stdsse"\nversion = "0.1.0"\nedition = "2021"\n' >vendor/stdsse/Cargo.toml && cargo add --offline --quiet stdsse --path vendor/stdsse
)
out=$(RUSTFLAGS="-D warnings" timeout 300 cargo build --offline --manifest-path "$dir/Cargo.toml" 2>&1) || {
    echo "$out"
    exit 1
}
if grep -q '^warning' <<<"$out"; then
    echo "$out"
    echo "cargo warned"
    exit 1
fi
echo "edition 2024: vendored stdsse and examples/common/mod.rs build in a new crate"

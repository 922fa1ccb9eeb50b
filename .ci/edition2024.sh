#!/usr/bin/env bash
# The Ctrl+C helper that the examples share (examples/common/mod.rs) is
# what users copy: check that it builds, without warnings, when copied into
# a new edition-2024 crate that depends on stdsse by path. Offline, bounded.
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

[dependencies]
stdsse = { path = "$root" }

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
RUSTFLAGS="-D warnings" timeout 300 cargo build --offline --quiet --manifest-path "$dir/Cargo.toml"
echo "edition 2024: examples/common/mod.rs builds in a new crate"

# Tasks for the mp host. `just --list` shows them.

# Build the host; host/build.rs builds the guest programs into target/guests/.
build-guests:
    cargo build -p host

# Install the `host` binary (both backends) into ~/.cargo/bin.
install:
    cargo install --path host --features native

# A new guest program with the mp SDK, in ./NAME (see docs/your-own-task.md).
new-task NAME:
    cargo run -q -- new {{NAME}} --dir {{invocation_directory()}}

# Run the README's example: a seed program, guests built automatically.
run:
    cargo run -- run target/guests/seed-hello.wasm

# Every test on both backends (the README's test command; .ci/run runs it).
test:
    cargo test && cargo test --features native

# SPEC's workloads on both backends, beside Python's multiprocessing
# (`just bench --json`: one JSON object per figure). The `host` binary is
# built first: W11 and W12 time it from outside.
bench *ARGS:
    cargo build --features native
    cargo run --features native --example bench -- {{ARGS}}

# Format the host, the tests and the guests.
fmt:
    cargo fmt --all
    cargo fmt --all --manifest-path guest-tasks/Cargo.toml

# Lint both backends' code, the tests and the example.
clippy:
    cargo clippy --all-targets
    cargo clippy --all-targets --features native
